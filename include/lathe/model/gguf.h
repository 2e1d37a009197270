#pragma once
// Writing GGUF (version 3), the file format of llama.cpp and ollama: typed metadata, then tensor
// descriptions, then the tensors' bytes, each aligned to 32 bytes. Tensors are kept as libtorch
// tensors until the file is written, so that converting a model costs one tensor's copy at a time.
//
// Written by hand: GGUF has no C++ library on Debian (ggml, which carries llama.cpp's own writer,
// is not packaged for bookworm), and the format is a few length-prefixed records.
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// ggml's tensor types that Lathe writes, with ggml's numbers.
enum class GgufType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };

// "f32", "f16", "bf16", "q8_0" (llama.cpp's --outtype names); anything else is an error naming the
// choices. `what` names the argument in that error.
GgufType parse_gguf_type(std::string_view name, std::string_view what = "gguf_type");
std::string_view gguf_type_name(GgufType type);
// The bytes `values` take in `type`: Q8_0 stores blocks of 32 values of a row as a float16 scale
// and 32 int8s, so its rows must hold a multiple of 32 values.
std::size_t gguf_byte_size(const std::vector<int64_t>& shape, GgufType type);
// The encoding of a float tensor (any float dtype, any shape, row-major) in `type`, as llama.cpp's
// gguf-py writes it: float16 and bfloat16 rounded to nearest-even, Q8_0 with d = max|x| / 127 and
// q = x / d rounded half away from zero.
std::vector<uint8_t> gguf_encode(const torch::Tensor& values, GgufType type);

using GgufValue = std::variant<uint32_t, int32_t, uint64_t, float, bool, std::string, std::vector<std::string>,
                               std::vector<int32_t>, std::vector<float>>;

class GgufWriter {
 public:
  // Keys are written in the order they are set; setting a key twice is an error.
  void set(std::string key, GgufValue value);
  // `values` in PyTorch's shape ([out, in] for a weight); GGUF lists the dimensions innermost
  // first. A tensor whose rows do not suit `type` (Q8_0) is an error naming it.
  void add_tensor(std::string name, torch::Tensor values, GgufType type);
  // Writes the file through a temporary name in the same folder: an error leaves nothing behind.
  void write(const std::filesystem::path& file) const;

 private:
  bool has_key(std::string_view key) const;
  struct Tensor {
    std::string name;
    torch::Tensor values;
    GgufType type;
  };
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace lathe

LATHE_API_END
