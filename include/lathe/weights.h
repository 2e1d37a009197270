#pragma once
// Bridge between safetensors files and torch tensors.
#include <torch/types.h>

#include <filesystem>
#include <map>
#include <string>

#include "lathe/safetensors.h"

namespace lathe {

// A tensor viewing the mapped bytes (no copy); it keeps the file mapped while alive.
torch::Tensor to_tensor(const safetensors::TensorView& view,
                        std::shared_ptr<const safetensors::File> owner);
// Every tensor of a checkpoint (file, folder, or sharded index), as zero-copy views.
std::map<std::string, torch::Tensor> load_tensors(const std::filesystem::path& file_or_dir);
// Writes tensors (made contiguous on the CPU) to one file atomically.
void save_tensors(const std::filesystem::path& file, const std::map<std::string, torch::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
void save_tensors_sharded(const std::filesystem::path& dir,
                          const std::map<std::string, torch::Tensor>& tensors,
                          std::size_t max_shard_bytes, std::string_view stem = "model");

}  // namespace lathe
