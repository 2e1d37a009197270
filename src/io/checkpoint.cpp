// A checkpoint as transformers finds one: a single safetensors file, or the shards an index file
// names, or a model folder holding either.
#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/io/safetensors.h"

namespace lathe::safetensors {
namespace fs = std::filesystem;

namespace {

bool is_index_file(const fs::path& path) {
  return path.filename().string().ends_with(".index.json");
}

// transformers looks for the single file first, then the index.
fs::path checkpoint_in_folder(const fs::path& dir) {
  for (const char* name : {"model.safetensors", "model.safetensors.index.json"}) {
    std::error_code ec;
    if (fs::is_regular_file(dir / name, ec)) return dir / name;
  }
  fail("{}: no model.safetensors or model.safetensors.index.json in this folder", dir.string());
}

// weight_map: tensor name -> shard file name, relative to the index's folder.
std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(read_file(index_path));
  } catch (const nlohmann::json::parse_error& error) {
    fail("{}: not valid JSON ({})", index_path.string(), error.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail("{}: expected an object with a 'weight_map' object (tensor name -> shard file)",
         index_path.string());
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string())
      fail("{}: weight_map entry '{}' must be a shard file name, got {}", index_path.string(), name,
           shard.type_name());
    weight_map.emplace(name, shard.get<std::string>());
  }
  return weight_map;
}

}  // namespace

Checkpoint Checkpoint::open(const fs::path& file_or_dir) {
  std::error_code ec;
  if (!fs::exists(file_or_dir, ec)) fail("{}: no such file or folder", file_or_dir.string());
  const fs::path path = fs::is_directory(file_or_dir, ec) ? checkpoint_in_folder(file_or_dir)
                                                          : file_or_dir;
  Checkpoint checkpoint;
  checkpoint.description_ = path.string();
  if (!is_index_file(path)) {
    auto file = File::open(path);
    for (const TensorView& tensor : file->tensors()) checkpoint.index_.emplace(tensor.name, &tensor);
    checkpoint.files_.push_back(std::move(file));
    return checkpoint;
  }

  std::map<std::string, const File*> shards;
  for (const auto& [name, shard] : read_weight_map(path)) {
    auto [it, is_new] = shards.emplace(shard, nullptr);
    if (is_new) {
      const fs::path shard_path = path.parent_path() / shard;
      if (!fs::is_regular_file(shard_path, ec))
        fail("{}: shard '{}' (holding tensor '{}') does not exist at {}", path.string(), shard,
             name, shard_path.string());
      checkpoint.files_.push_back(File::open(shard_path));
      it->second = checkpoint.files_.back().get();
    }
    const TensorView* tensor = it->second->find(name);
    if (!tensor)
      fail("{}: tensor '{}' is mapped to shard '{}', which does not contain it", path.string(),
           name, shard);
    checkpoint.index_.emplace(name, tensor);
  }
  return checkpoint;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, tensor] : index_) names.push_back(name);
  return names;
}

const TensorView* Checkpoint::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(std::string_view name) const {
  const TensorView* tensor = find(name);
  if (!tensor) fail("{}: no tensor named '{}'", description_, name);
  return *tensor;
}

}  // namespace lathe::safetensors
