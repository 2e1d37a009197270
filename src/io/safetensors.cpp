// Reading .safetensors files: map the file, parse the JSON header, and validate every tensor's
// byte range before handing out views. The checks follow the reference implementation (Hugging
// Face's safetensors crate): header at most 100 MB, ranges consistent with shape and dtype, and
// ranges that tile the data region exactly (no overlap, no gap, no trailing bytes).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "io/safetensors_detail.h"
#include "lathe/io/safetensors.h"

namespace lathe::safetensors {
namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; Lathe maps it without conversion");

namespace {

struct DtypeInfo {
  Dtype dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DtypeInfo, 10> kDtypes{{
    {Dtype::F64, "F64", 8},
    {Dtype::F32, "F32", 4},
    {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2},
    {Dtype::I64, "I64", 8},
    {Dtype::I32, "I32", 4},
    {Dtype::I16, "I16", 2},
    {Dtype::I8, "I8", 1},
    {Dtype::U8, "U8", 1},
    {Dtype::BOOL, "BOOL", 1},
}};

const DtypeInfo& info(Dtype dtype) {
  for (const auto& entry : kDtypes)
    if (entry.dtype == dtype) return entry;
  throw std::logic_error("safetensors: unhandled Dtype value");
}

}  // namespace

std::size_t dtype_size(Dtype dtype) { return info(dtype).size; }
std::string_view dtype_name(Dtype dtype) { return info(dtype).name; }

std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const auto& entry : kDtypes)
    if (entry.name == name) return entry.dtype;
  return std::nullopt;
}

namespace detail {

std::optional<std::size_t> checked_nbytes(const std::vector<int64_t>& shape, Dtype dtype) {
  std::size_t count = dtype_size(dtype);
  for (int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    const auto udim = static_cast<std::size_t>(dim);
    if (udim != 0 && count > std::numeric_limits<std::size_t>::max() / udim) return std::nullopt;
    count *= udim;
  }
  return count;
}

}  // namespace detail

namespace {

// The reference implementation refuses headers above this size (a corrupt length would otherwise
// make us parse gigabytes of tensor data as JSON).
constexpr std::size_t kMaxHeaderBytes = 100'000'000;

struct Range {
  std::size_t begin;
  std::size_t end;
  std::size_t tensor;  // index into the tensors vector
};

class HeaderParser {
 public:
  HeaderParser(const fs::path& path, std::size_t data_size) : path_(path), data_size_(data_size) {}

  [[noreturn]] void fail_tensor(const std::string& name, std::string_view problem) const {
    fail("{}: tensor '{}': {}", path_.string(), name, problem);
  }

  std::map<std::string, std::string> parse_metadata(const nlohmann::json& value) const {
    if (!value.is_object())
      fail("{}: header field '__metadata__' must be an object of strings, got {}", path_.string(),
           value.type_name());
    std::map<std::string, std::string> metadata;
    for (const auto& [key, entry] : value.items()) {
      if (!entry.is_string())
        fail("{}: header field '__metadata__.{}' must be a string, got {}", path_.string(), key,
             entry.type_name());
      metadata.emplace(key, entry.get<std::string>());
    }
    return metadata;
  }

  // Reads one entry; `data` is left relative to the data region (the caller rebases it).
  TensorView parse_tensor(const std::string& name, const nlohmann::json& entry,
                          Range& range) const {
    if (!entry.is_object())
      fail_tensor(name, fmt::format("expected an object with dtype, shape and data_offsets, got {}",
                                    entry.type_name()));
    TensorView view;
    view.name = name;
    view.dtype = parse_dtype_field(name, field(name, entry, "dtype"));
    view.shape = parse_shape(name, field(name, entry, "shape"));
    const auto [begin, end] = parse_offsets(name, field(name, entry, "data_offsets"));
    const auto expected = detail::checked_nbytes(view.shape, view.dtype);
    if (!expected)
      fail_tensor(name, fmt::format("shape [{}] overflows the addressable size",
                                    fmt::join(view.shape, ", ")));
    if (end - begin != *expected)
      fail_tensor(name, fmt::format("data_offsets [{}, {}] span {} bytes but shape [{}] of {} needs "
                                    "{} bytes",
                                    begin, end, end - begin, fmt::join(view.shape, ", "),
                                    dtype_name(view.dtype), *expected));
    if (end > data_size_)
      fail_tensor(name, fmt::format("data_offsets [{}, {}] lie outside the data buffer of {} bytes "
                                    "(truncated file?)",
                                    begin, end, data_size_));
    view.nbytes = end - begin;
    range.begin = begin;
    range.end = end;
    return view;
  }

  // The ranges must tile [0, data_size) exactly, as the reference implementation requires: an
  // overlap means two tensors share bytes, a gap means bytes that belong to nobody.
  void check_tiling(std::vector<Range> ranges, const std::vector<TensorView>& tensors) const {
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::size_t covered = 0;
    const Range* previous = nullptr;
    for (const Range& range : ranges) {
      const std::string& name = tensors[range.tensor].name;
      if (range.begin < covered)
        fail_tensor(name, fmt::format("data_offsets [{}, {}] overlap tensor '{}' ([{}, {}])",
                                      range.begin, range.end, tensors[previous->tensor].name,
                                      previous->begin, previous->end));
      if (range.begin > covered)
        fail_tensor(name, fmt::format("data_offsets [{}, {}] leave bytes [{}, {}) of the data "
                                      "buffer unused (buffers must cover it without gaps)",
                                      range.begin, range.end, covered, range.begin));
      covered = range.end;
      previous = &range;
    }
    if (covered != data_size_) {
      const std::string last = previous ? "after tensor '" + tensors[previous->tensor].name + "'"
                                        : "with no tensor";
      fail("{}: tensor data ends at byte {} {}, but the data buffer holds {} bytes (buffers must "
           "cover it exactly)",
           path_.string(), covered, last, data_size_);
    }
  }

 private:
  const nlohmann::json& field(const std::string& name, const nlohmann::json& entry,
                              const char* key) const {
    auto it = entry.find(key);
    if (it == entry.end()) fail_tensor(name, fmt::format("missing field '{}'", key));
    return *it;
  }

  Dtype parse_dtype_field(const std::string& name, const nlohmann::json& value) const {
    if (!value.is_string())
      fail_tensor(name, fmt::format("field 'dtype' must be a string, got {}", value.type_name()));
    const auto text = value.get<std::string>();
    auto dtype = parse_dtype(text);
    if (!dtype)
      fail_tensor(name, fmt::format("unknown dtype '{}' (expected one of F64, F32, F16, BF16, I64, "
                                    "I32, I16, I8, U8, BOOL)",
                                    text));
    return *dtype;
  }

  std::vector<int64_t> parse_shape(const std::string& name, const nlohmann::json& value) const {
    if (!value.is_array())
      fail_tensor(name, fmt::format("field 'shape' must be an array of integers, got {}",
                                    value.type_name()));
    std::vector<int64_t> shape;
    for (const auto& dim : value) {
      if (dim.is_number_integer() && !dim.is_number_unsigned())
        fail_tensor(name, fmt::format("negative dimension {} in shape {}", dim.get<int64_t>(),
                                      value.dump()));
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_tensor(name, fmt::format("field 'shape' must hold non-negative integers, got {}",
                                      value.dump()));
      shape.push_back(dim.get<int64_t>());
    }
    return shape;
  }

  std::pair<std::size_t, std::size_t> parse_offsets(const std::string& name,
                                                    const nlohmann::json& value) const {
    const bool pair_of_naturals = value.is_array() && value.size() == 2 &&
                                  value[0].is_number_unsigned() && value[1].is_number_unsigned();
    if (!pair_of_naturals)
      fail_tensor(name, fmt::format("field 'data_offsets' must be [begin, end] with non-negative "
                                    "integers, got {}",
                                    value.dump()));
    const auto begin = value[0].get<uint64_t>();
    const auto end = value[1].get<uint64_t>();
    if (begin > end)
      fail_tensor(name, fmt::format("data_offsets [{}, {}] end before they begin", begin, end));
    return {begin, end};
  }

  const fs::path& path_;
  std::size_t data_size_;
};

class Mapping {
 public:
  explicit Mapping(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("{}: cannot open safetensors file ({})", path.string(), std::strerror(errno));
    struct stat status {};
    if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
      ::close(fd);
      fail("{}: not a regular file", path.string());
    }
    size_ = static_cast<std::size_t>(status.st_size);
    if (size_ < 8) {
      ::close(fd);
      fail("{}: file is {} bytes, shorter than the 8-byte header length of a safetensors file",
           path.string(), size_);
    }
    // A private writable mapping: the file itself is opened read-only and can never change, but a
    // tensor viewing these pages may be modified in place (copy-on-write) instead of crashing.
    void* address = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const int saved_errno = errno;
    ::close(fd);
    if (address == MAP_FAILED)
      fail("{}: cannot memory-map ({})", path.string(), std::strerror(saved_errno));
    address_ = address;
  }
  ~Mapping() {
    if (address_) ::munmap(address_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const std::byte* bytes() const { return static_cast<const std::byte*>(address_); }
  std::size_t size() const { return size_; }
  // Hands ownership of the pages to the caller (the File), which unmaps them.
  void* release() { return std::exchange(address_, nullptr); }

 private:
  void* address_ = nullptr;
  std::size_t size_ = 0;
};

uint64_t read_header_length(const std::byte* bytes) {
  uint64_t length = 0;
  std::memcpy(&length, bytes, sizeof length);
  return length;
}

}  // namespace

std::shared_ptr<const File> File::open(const fs::path& path) {
  Mapping mapping(path);
  const uint64_t header_length = read_header_length(mapping.bytes());
  if (header_length > kMaxHeaderBytes)
    fail("{}: header length {} exceeds the 100 MB limit of the safetensors format (corrupt file?)",
         path.string(), header_length);
  if (header_length > mapping.size() - 8)
    fail("{}: header length {} is larger than the {} bytes that follow it (truncated file?)",
         path.string(), header_length, mapping.size() - 8);

  const auto* header_begin = reinterpret_cast<const char*>(mapping.bytes() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_length);
  } catch (const nlohmann::json::parse_error& error) {
    fail("{}: header is not valid JSON ({})", path.string(), error.what());
  }
  if (!header.is_object())
    fail("{}: header must be a JSON object, got {}", path.string(), header.type_name());

  const std::byte* data = mapping.bytes() + 8 + header_length;
  const std::size_t data_size = mapping.size() - 8 - header_length;
  HeaderParser parser(path, data_size);

  std::shared_ptr<File> file(new File());
  file->path_ = path;
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      file->metadata_ = parser.parse_metadata(entry);
      continue;
    }
    Range range{0, 0, file->tensors_.size()};
    TensorView view = parser.parse_tensor(name, entry, range);
    view.data = data + range.begin;
    file->tensors_.push_back(std::move(view));
    ranges.push_back(range);
  }
  parser.check_tiling(std::move(ranges), file->tensors_);

  file->mapping_size_ = mapping.size();
  file->mapping_ = mapping.release();
  return file;
}

File::~File() {
  if (mapping_) ::munmap(mapping_, mapping_size_);
}

const TensorView* File::find(std::string_view name) const {
  // Files hold a few hundred tensors at most; Checkpoint keeps the map for repeated lookups.
  for (const auto& tensor : tensors_)
    if (tensor.name == name) return &tensor;
  return nullptr;
}

}  // namespace lathe::safetensors
