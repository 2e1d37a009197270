// Writing .safetensors files and sharded checkpoints in the layout Hugging Face's tools produce,
// so that files written by Lathe are byte-identical to safetensors.torch.save_file's for the same
// tensors and metadata (tests/io check this against an independent Python writer).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "lathe/common/format.h"
#include "io/safetensors_detail.h"
#include "lathe/common/files.h"
#include "lathe/io/safetensors.h"

namespace lathe::safetensors {
namespace fs = std::filesystem;

namespace {

// The reference orders dtypes by increasing alignment (BOOL < U8 < I8 < I16 < F16 < BF16 < I32 <
// F32 < F64 < I64) and writes the largest first, which keeps every tensor aligned to its element
// size once the header is padded to 8 bytes.
int alignment_rank(Dtype dtype) {
  switch (dtype) {
    case Dtype::BOOL: return 0;
    case Dtype::U8: return 1;
    case Dtype::I8: return 2;
    case Dtype::I16: return 3;
    case Dtype::F16: return 4;
    case Dtype::BF16: return 5;
    case Dtype::I32: return 6;
    case Dtype::F32: return 7;
    case Dtype::F64: return 8;
    case Dtype::I64: return 9;
  }
  throw std::logic_error("safetensors: unhandled Dtype value");
}

void validate(const fs::path& path, std::span<const TensorData> tensors) {
  std::set<std::string_view> names;
  for (const TensorData& tensor : tensors) {
    if (tensor.name == "__metadata__")
      fail("{}: '__metadata__' is reserved and cannot name a tensor", path.string());
    if (!names.insert(tensor.name).second)
      fail("{}: tensor '{}' is given twice", path.string(), tensor.name);
    const auto expected = detail::checked_nbytes(tensor.shape, tensor.dtype);
    if (!expected)
      fail("{}: tensor '{}': shape [{}] has a negative or overflowing dimension", path.string(),
           tensor.name, fmt::join(tensor.shape, ", "));
    if (*expected != tensor.data.size())
      fail("{}: tensor '{}': shape [{}] of {} needs {} bytes, got {}", path.string(), tensor.name,
           fmt::join(tensor.shape, ", "), dtype_name(tensor.dtype), *expected, tensor.data.size());
  }
}

std::vector<const TensorData*> layout_order(std::span<const TensorData> tensors) {
  std::vector<const TensorData*> order;
  for (const TensorData& tensor : tensors) order.push_back(&tensor);
  std::sort(order.begin(), order.end(), [](const TensorData* a, const TensorData* b) {
    const int rank_a = alignment_rank(a->dtype), rank_b = alignment_rank(b->dtype);
    return rank_a != rank_b ? rank_a > rank_b : a->name < b->name;
  });
  return order;
}

std::string header_text(const std::vector<const TensorData*>& order,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (const TensorData* tensor : order) {
    nlohmann::ordered_json entry;
    entry["dtype"] = dtype_name(tensor->dtype);
    entry["shape"] = tensor->shape;
    entry["data_offsets"] = {offset, offset + tensor->data.size()};
    offset += tensor->data.size();
    header[tensor->name] = std::move(entry);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void write_bytes(std::ofstream& out, const void* bytes, std::size_t size) {
  out.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(size));
}

std::string shard_name(std::string_view stem, std::size_t index, std::size_t count) {
  return fmt::format("{}-{:05d}-of-{:05d}.safetensors", stem, index + 1, count);
}

// Groups tensors into shards the way huggingface_hub's split_state_dict_into_shards does.
std::vector<std::vector<TensorData>> plan_shards(std::span<const TensorData> tensors,
                                                 std::size_t max_shard_bytes) {
  std::vector<std::vector<TensorData>> shards;
  std::vector<TensorData> current;
  std::size_t current_bytes = 0;
  for (const TensorData& tensor : tensors) {
    if (tensor.data.size() > max_shard_bytes) {
      shards.push_back({tensor});
      continue;
    }
    if (current_bytes + tensor.data.size() > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(tensor);
    current_bytes += tensor.data.size();
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
  return shards;
}

// `<stem>-NNNNN-of-NNNNN.safetensors`, the names shard_name gives.
bool is_shard_name(std::string_view name, std::string_view stem) {
  constexpr std::string_view kSuffix = ".safetensors";
  if (!name.starts_with(stem) || !name.ends_with(kSuffix)) return false;
  std::string_view middle = name.substr(stem.size(), name.size() - stem.size() - kSuffix.size());
  static const std::regex pattern("-[0-9]{5}-of-[0-9]{5}");
  return std::regex_match(middle.begin(), middle.end(), pattern);
}

// Files an earlier save with this stem may have left: a single file, shards, an index.
void remove_stale_files(const fs::path& dir, std::string_view stem,
                        const std::set<std::string>& keep) {
  const std::string single = fmt::format("{}.safetensors", stem);
  const std::string index = fmt::format("{}.safetensors.index.json", stem);
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == single || name == index || is_shard_name(name, stem);
    if (ours && !keep.contains(name)) fs::remove(entry.path());
  }
}

}  // namespace

void write(const fs::path& path, std::span<const TensorData> tensors,
           const std::map<std::string, std::string>& metadata) {
  validate(path, tensors);
  const auto order = layout_order(tensors);
  const std::string header = header_text(order, metadata);
  const uint64_t header_length = header.size();
  write_atomic_with(path, [&](const fs::path& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot create file ({})", temporary.string(), std::strerror(errno));
    write_bytes(out, &header_length, sizeof header_length);
    write_bytes(out, header.data(), header.size());
    for (const TensorData* tensor : order) write_bytes(out, tensor->data.data(), tensor->data.size());
    out.close();
    if (!out) fail("{}: write failed ({})", path.string(), std::strerror(errno));
  });
}

void write_sharded(const fs::path& dir, std::span<const TensorData> tensors,
                   std::size_t max_shard_bytes, std::string_view stem) {
  if (max_shard_bytes == 0) fail("{}: max_shard_bytes must be positive", dir.string());
  validate(dir / fmt::format("{}.safetensors", stem), tensors);
  fs::create_directories(dir);
  const auto shards = plan_shards(tensors, max_shard_bytes);
  if (shards.size() == 1) {
    const std::string single = fmt::format("{}.safetensors", stem);
    write(dir / single, shards.front());
    remove_stale_files(dir, stem, {single});
    return;
  }
  std::set<std::string> written;
  nlohmann::json weight_map = nlohmann::json::object();
  std::size_t total_size = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shard_name(stem, i, shards.size());
    write(dir / name, shards[i]);
    written.insert(name);
    for (const TensorData& tensor : shards[i]) {
      weight_map[tensor.name] = name;
      total_size += tensor.data.size();
    }
  }
  // Written last, so that a reader never finds an index naming shards not yet in place.
  const std::string index_name = fmt::format("{}.safetensors.index.json", stem);
  const nlohmann::json index = {{"metadata", {{"total_size", total_size}}},
                                {"weight_map", weight_map}};
  write_file_atomic(dir / index_name, index.dump(2) + "\n");
  written.insert(index_name);
  remove_stale_files(dir, stem, written);
}

}  // namespace lathe::safetensors
