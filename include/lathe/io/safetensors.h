#pragma once
// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and [begin, end) byte range, then the data. Reading memory-maps
// the file and validates every range; nothing here depends on libtorch (see lathe/model/weights.h for
// the bridge to torch tensors).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe::safetensors {

enum class Dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

std::size_t dtype_size(Dtype dtype);
std::string_view dtype_name(Dtype dtype);                    // "F32", "BF16", ...
std::optional<Dtype> parse_dtype(std::string_view name);

struct TensorView {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mapping of the File that owns it
  std::size_t nbytes = 0;
};

// One memory-mapped .safetensors file. Views stay valid while the File is alive.
class File {
 public:
  static std::shared_ptr<const File> open(const std::filesystem::path& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  File() = default;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: a single .safetensors file, or the shards named by a
// *.safetensors.index.json ("weight_map"), or a folder holding either
// (model.safetensors / model.safetensors.index.json).
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& file_or_dir);
  std::vector<std::string> names() const;                 // sorted
  const TensorView* find(std::string_view name) const;    // nullptr when absent
  const TensorView& get(std::string_view name) const;     // throws lathe::Error naming the checkpoint
  const std::vector<std::shared_ptr<const File>>& files() const { return files_; }

 private:
  std::vector<std::shared_ptr<const File>> files_;
  std::map<std::string, const TensorView*, std::less<>> index_;
  std::string description_;
};

struct TensorData {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // row-major, little-endian, exactly prod(shape)*dtype_size bytes
};

// Writes one file atomically (temporary name, then rename), byte for byte as Hugging Face's
// safetensors writer lays it out: tensors sorted by descending dtype alignment (I64, F64, F32, I32,
// BF16, F16, I16, I8, U8, BOOL), then by name, so that every tensor's data starts at a multiple of
// its element size; the compact JSON header lists `__metadata__` first (omitted when empty), then
// the tensors in that order, padded with spaces to a multiple of 8 bytes. metadata defaults to
// {"format": "pt"} as transformers' save_pretrained writes it. Throws lathe::Error naming the
// tensor when its bytes do not match its shape and dtype, or when a name repeats.
void write(const std::filesystem::path& path, std::span<const TensorData> tensors,
           const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes `<stem>.safetensors` when everything fits in max_shard_bytes, otherwise
// `<stem>-00001-of-0000N.safetensors` shards plus `<stem>.safetensors.index.json`
// ({"metadata": {"total_size": ...}, "weight_map": {...}}), as Hugging Face's save_pretrained does:
// tensors are taken in the given order and a shard is closed when the next tensor would push its
// data past max_shard_bytes; a tensor larger than the limit gets a shard of its own. The index is
// written after the shards, and files of an earlier save with the same stem (a single file, stale
// shards, an index) are removed, so that Checkpoint::open never mixes two saves.
void write_sharded(const std::filesystem::path& dir, std::span<const TensorData> tensors,
                   std::size_t max_shard_bytes, std::string_view stem = "model");

}  // namespace lathe::safetensors

LATHE_API_END
