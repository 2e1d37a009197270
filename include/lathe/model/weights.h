#pragma once
// Bridge between safetensors files and torch tensors.
#include <torch/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "lathe/io/safetensors.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// F32 <-> kFloat32, BF16 <-> kBFloat16, F16 <-> kHalf, BOOL <-> kBool, ...; nullopt for torch
// dtypes that safetensors files of Lathe do not store (complex, quantized, ...).
torch::ScalarType torch_dtype(safetensors::Dtype dtype);
std::optional<safetensors::Dtype> safetensors_dtype(torch::ScalarType dtype);

// A tensor viewing the mapped bytes (no copy); it keeps the file mapped while alive (`owner` may be
// null when the caller keeps the file alive). The mapping is private copy-on-write, so in-place
// updates of the tensor are allowed and never reach the file. Data that a foreign writer left off
// its element alignment is copied instead.
torch::Tensor to_tensor(const safetensors::TensorView& view,
                        std::shared_ptr<const safetensors::File> owner);
// For a view made by to_tensor: hands its pages back to the system, so that a checkpoint copied
// into parameters tensor by tensor never holds the whole file in memory besides them. The view
// stays valid and reads the file's bytes again if touched (an in-place change to it is lost).
// Other tensors are left alone.
void release_file_pages(const torch::Tensor& tensor);
// Every tensor of a checkpoint (file, folder, or sharded index), as zero-copy views.
std::map<std::string, torch::Tensor> load_tensors(const std::filesystem::path& file_or_dir);
// Writes tensors (made contiguous on the CPU) to one file atomically.
void save_tensors(const std::filesystem::path& file, const std::map<std::string, torch::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
void save_tensors_sharded(const std::filesystem::path& dir,
                          const std::map<std::string, torch::Tensor>& tensors,
                          std::size_t max_shard_bytes, std::string_view stem = "model");

}  // namespace lathe

LATHE_API_END
