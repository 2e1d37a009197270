#include "lathe/model/gguf.h"

#include <bit>
#include <cstring>
#include <fstream>

#include "lathe/common/files.h"
#include "lathe/common/format.h"

namespace lathe {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF is little-endian; this writer copies host bytes");

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;  // GGUF's default: the file does not need general.alignment
constexpr int64_t kQ8Block = 32;

// gguf_type value ids
enum class ValueType : uint32_t { U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10 };

struct TypeName {
  GgufType type;
  std::string_view name;
};
constexpr TypeName kTypeNames[] = {
    {GgufType::F32, "f32"}, {GgufType::F16, "f16"}, {GgufType::BF16, "bf16"}, {GgufType::Q8_0, "q8_0"}};

class BinaryOut {
 public:
  explicit BinaryOut(std::ofstream& out) : out_(out) {}
  template <class T>
  void scalar(T value) {
    out_.write(reinterpret_cast<const char*>(&value), sizeof value);
    written_ += sizeof value;
  }
  void bytes(const void* data, std::size_t size) {
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    written_ += size;
  }
  void string(std::string_view text) {
    scalar<uint64_t>(text.size());
    bytes(text.data(), text.size());
  }
  void pad_to(uint64_t alignment) {
    static constexpr char kZeros[kAlignment] = {};
    bytes(kZeros, (alignment - written_ % alignment) % alignment);
  }
  uint64_t written() const { return written_; }

 private:
  std::ofstream& out_;
  uint64_t written_ = 0;
};

void write_value(BinaryOut& out, const GgufValue& value) {
  auto array_header = [&](ValueType element, std::size_t count) {
    out.scalar(ValueType::Array);
    out.scalar(element);
    out.scalar<uint64_t>(count);
  };
  std::visit(
      [&]<class T>(const T& v) {
        if constexpr (std::is_same_v<T, uint32_t>) out.scalar(ValueType::U32), out.scalar(v);
        if constexpr (std::is_same_v<T, int32_t>) out.scalar(ValueType::I32), out.scalar(v);
        if constexpr (std::is_same_v<T, uint64_t>) out.scalar(ValueType::U64), out.scalar(v);
        if constexpr (std::is_same_v<T, float>) out.scalar(ValueType::F32), out.scalar(v);
        if constexpr (std::is_same_v<T, bool>) out.scalar(ValueType::Bool), out.scalar<uint8_t>(v ? 1 : 0);
        if constexpr (std::is_same_v<T, std::string>) out.scalar(ValueType::String), out.string(v);
        if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          array_header(ValueType::String, v.size());
          for (const auto& text : v) out.string(text);
        }
        if constexpr (std::is_same_v<T, std::vector<int32_t>>) {
          array_header(ValueType::I32, v.size());
          out.bytes(v.data(), v.size() * sizeof(int32_t));
        }
        if constexpr (std::is_same_v<T, std::vector<float>>) {
          array_header(ValueType::F32, v.size());
          out.bytes(v.data(), v.size() * sizeof(float));
        }
      },
      value);
}

std::vector<uint8_t> tensor_bytes(const torch::Tensor& contiguous) {
  const auto* data = static_cast<const uint8_t*>(contiguous.data_ptr());
  return {data, data + contiguous.numel() * contiguous.element_size()};
}

// Q8_0 as gguf-py quantizes: per block of 32, d = max|x| / 127 and q = round(x * (1 / d)) with
// halves away from zero, d stored as float16 before the 32 int8s.
std::vector<uint8_t> encode_q8_0(const torch::Tensor& values) {
  const auto blocks = values.reshape({-1, kQ8Block});
  const auto scale = blocks.abs().amax(-1, /*keepdim=*/true) / 127;
  const auto inverse = torch::where(scale == 0, torch::zeros_like(scale), 1 / scale);
  const auto scaled = blocks * inverse;
  const auto quantized = (scaled.sign() * (scaled.abs() + 0.5).floor()).to(torch::kInt8);
  const auto packed = torch::cat({scale.to(torch::kHalf).view(torch::kUInt8), quantized.view(torch::kUInt8)}, 1);
  return tensor_bytes(packed.contiguous());
}

}  // namespace

GgufType parse_gguf_type(std::string_view name, std::string_view what) {
  for (const auto& [type, type_name] : kTypeNames) {
    if (type_name == name) return type;
  }
  fail("--{}: unknown GGUF type \"{}\"; expected one of f32, f16, bf16, q8_0", what, name);
}

std::string_view gguf_type_name(GgufType type) {
  for (const auto& [known, name] : kTypeNames) {
    if (known == type) return name;
  }
  fail("GGUF type {} has no name here", static_cast<uint32_t>(type));
}

std::size_t gguf_byte_size(const std::vector<int64_t>& shape, GgufType type) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  switch (type) {
    case GgufType::F32: return static_cast<std::size_t>(count) * 4;
    case GgufType::F16:
    case GgufType::BF16: return static_cast<std::size_t>(count) * 2;
    case GgufType::Q8_0: return static_cast<std::size_t>(count / kQ8Block) * (2 + kQ8Block);
  }
  fail("GGUF type {} is not written here", static_cast<uint32_t>(type));
}

std::vector<uint8_t> gguf_encode(const torch::Tensor& values, GgufType type) {
  const auto exact = values.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  switch (type) {
    case GgufType::F32: return tensor_bytes(exact);
    case GgufType::F16: return tensor_bytes(exact.to(torch::kHalf).contiguous());
    case GgufType::BF16: return tensor_bytes(exact.to(torch::kBFloat16).contiguous());
    case GgufType::Q8_0:
      if (exact.dim() == 0 || exact.size(-1) % kQ8Block != 0) {
        fail("Q8_0 needs rows of a multiple of {} values; this tensor's rows have {}", kQ8Block,
             exact.dim() == 0 ? 1 : exact.size(-1));
      }
      return encode_q8_0(exact);
  }
  fail("GGUF type {} is not written here", static_cast<uint32_t>(type));
}

bool GgufWriter::has_key(std::string_view key) const {
  for (const auto& entry : metadata_) {
    if (entry.first == key) return true;
  }
  return false;
}

void GgufWriter::set(std::string key, GgufValue value) {
  if (has_key(key)) fail("GGUF metadata key {} set twice", key);
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_tensor(std::string name, torch::Tensor values, GgufType type) {
  if (name.size() > 63) fail("GGUF tensor name {} is longer than 63 bytes", name);
  if (type == GgufType::Q8_0 && (values.dim() == 0 || values.size(-1) % kQ8Block != 0)) {
    fail("GGUF tensor {}: Q8_0 needs rows of a multiple of {} values", name, kQ8Block);
  }
  for (const auto& tensor : tensors_) {
    if (tensor.name == name) fail("GGUF tensor {} added twice", name);
  }
  tensors_.push_back({std::move(name), std::move(values), type});
}

void GgufWriter::write(const std::filesystem::path& file) const {
  write_atomic_with(file, [&](const std::filesystem::path& temporary) {
    std::ofstream stream(temporary, std::ios::binary | std::ios::trunc);
    if (!stream) fail("{}: cannot open for writing ({})", temporary.string(), std::strerror(errno));
    BinaryOut out(stream);
    out.bytes("GGUF", 4);
    out.scalar(kVersion);
    out.scalar<uint64_t>(tensors_.size());
    out.scalar<uint64_t>(metadata_.size());
    for (const auto& [key, value] : metadata_) {
      out.string(key);
      write_value(out, value);
    }
    uint64_t offset = 0;
    for (const auto& tensor : tensors_) {
      const auto shape = tensor.values.sizes().vec();
      out.string(tensor.name);
      out.scalar<uint32_t>(static_cast<uint32_t>(shape.size()));
      for (auto dim = shape.rbegin(); dim != shape.rend(); ++dim) out.scalar<uint64_t>(static_cast<uint64_t>(*dim));
      out.scalar(static_cast<uint32_t>(tensor.type));
      out.scalar(offset);
      offset += gguf_byte_size(shape, tensor.type);
      offset += (kAlignment - offset % kAlignment) % kAlignment;
    }
    out.pad_to(kAlignment);
    for (const auto& tensor : tensors_) {
      const auto encoded = gguf_encode(tensor.values, tensor.type);
      out.bytes(encoded.data(), encoded.size());
      out.pad_to(kAlignment);
    }
    stream.close();  // a full disk may only show when the last bytes go out
    if (!stream) fail("{}: write failed ({})", file.string(), std::strerror(errno));
  });
}

}  // namespace lathe
