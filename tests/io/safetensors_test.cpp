// Round trips, the exact byte layout, and every kind of malformed file the reader must refuse.
#include "lathe/io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstring>
#include <numeric>

#include "io/io_test_support.h"
#include "lathe/common/error.h"
#include "lathe/common/files.h"
#include "support/errors.h"

namespace lathe::safetensors {
namespace {

using ::testing::HasSubstr;
using lathe::testing::raw_safetensors;
using lathe::testing::error_of;
using lathe::testing::read_bytes;
using lathe::testing::ScratchDir;
using lathe::testing::write_bytes;

constexpr Dtype kAllDtypes[] = {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64,
                                Dtype::I32, Dtype::I16, Dtype::I8,  Dtype::U8,   Dtype::BOOL};

// Owns the bytes that TensorData spans point to.
struct OwnedTensor {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;

  TensorData data() const { return {name, dtype, shape, bytes}; }
};

OwnedTensor patterned(std::string name, Dtype dtype, std::vector<int64_t> shape, int seed) {
  const int64_t count = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  std::vector<std::byte> bytes(static_cast<std::size_t>(count) * dtype_size(dtype));
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::byte>(dtype == Dtype::BOOL ? (i + seed) % 2 : (i * 31 + seed) % 251);
  return {std::move(name), dtype, std::move(shape), std::move(bytes)};
}

std::vector<TensorData> views_of(const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorData> views;
  for (const auto& tensor : tensors) views.push_back(tensor.data());
  return views;
}


TEST(SafetensorsDtype, NamesSizesAndParsing) {
  for (Dtype dtype : kAllDtypes) EXPECT_EQ(parse_dtype(dtype_name(dtype)), dtype);
  EXPECT_EQ(dtype_size(Dtype::F64), 8u);
  EXPECT_EQ(dtype_size(Dtype::BF16), 2u);
  EXPECT_EQ(dtype_size(Dtype::BOOL), 1u);
  EXPECT_EQ(dtype_name(Dtype::BF16), "BF16");
  EXPECT_EQ(parse_dtype("F8_E4M3"), std::nullopt);
  EXPECT_EQ(parse_dtype("f32"), std::nullopt);
}

class SafetensorsRoundTrip : public ScratchDir {};

TEST_F(SafetensorsRoundTrip, EveryDtypeKeepsShapeBytesAndAlignment) {
  std::vector<OwnedTensor> tensors;
  int seed = 0;
  for (Dtype dtype : kAllDtypes) {
    tensors.push_back(patterned("t." + std::string(dtype_name(dtype)), dtype, {3, 1, 5}, ++seed));
    // Odd element counts put the following tensors off any natural alignment unless the writer
    // orders them by alignment.
    tensors.push_back(patterned("odd." + std::string(dtype_name(dtype)), dtype, {7}, ++seed));
  }
  tensors.push_back(patterned("scalar", Dtype::F32, {}, 1));
  tensors.push_back(patterned("empty", Dtype::BF16, {0, 4}, 1));
  const auto path = dir() / "all.safetensors";
  write(path, views_of(tensors));

  auto file = File::open(path);
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file->tensors().size(), tensors.size());
  for (const auto& expected : tensors) {
    const TensorView* view = file->find(expected.name);
    ASSERT_NE(view, nullptr) << expected.name;
    EXPECT_EQ(view->dtype, expected.dtype) << expected.name;
    EXPECT_EQ(view->shape, expected.shape) << expected.name;
    ASSERT_EQ(view->nbytes, expected.bytes.size()) << expected.name;
    EXPECT_EQ(std::memcmp(view->data, expected.bytes.data(), view->nbytes), 0) << expected.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view->data) % dtype_size(view->dtype), 0u)
        << expected.name << " is not aligned to its element size";
  }
  EXPECT_EQ(file->find("absent"), nullptr);
}

TEST_F(SafetensorsRoundTrip, CustomAndEmptyMetadata) {
  const std::vector<OwnedTensor> tensors{patterned("w", Dtype::F32, {2}, 0)};
  const std::map<std::string, std::string> metadata{{"format", "pt"}, {"step", "12"}, {"é", "ü"}};
  write(dir() / "meta.safetensors", views_of(tensors), metadata);
  EXPECT_EQ(File::open(dir() / "meta.safetensors")->metadata(), metadata);

  write(dir() / "none.safetensors", views_of(tensors), {});
  EXPECT_TRUE(File::open(dir() / "none.safetensors")->metadata().empty());
  EXPECT_EQ(read_bytes(dir() / "none.safetensors").find("__metadata__"), std::string::npos);
}

// The expected bytes are written out by hand from the format description: compact JSON, larger
// alignments first then names, padded with spaces to a multiple of 8.
TEST_F(SafetensorsRoundTrip, LayoutMatchesHuggingFaceWriter) {
  const std::vector<OwnedTensor> tensors{patterned("b", Dtype::F32, {2}, 1),
                                         patterned("a", Dtype::BF16, {3}, 2),
                                         patterned("m", Dtype::BOOL, {2}, 3),
                                         patterned("c", Dtype::I64, {1}, 4),
                                         patterned("d", Dtype::F64, {1}, 5)};
  write(dir() / "layout.safetensors", views_of(tensors), {});
  std::string header =
      R"({"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
      R"("a":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]},)"
      R"("m":{"dtype":"BOOL","shape":[2],"data_offsets":[30,32]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string expected = raw_safetensors(header, 0);
  for (const auto* tensor : {&tensors[3], &tensors[4], &tensors[0], &tensors[1], &tensors[2]})
    expected.append(reinterpret_cast<const char*>(tensor->bytes.data()), tensor->bytes.size());
  EXPECT_EQ(read_bytes(dir() / "layout.safetensors"), expected);
}

TEST_F(SafetensorsRoundTrip, NoTensorsIsAnEightByteHeader) {
  write(dir() / "empty.safetensors", {}, {});
  EXPECT_EQ(read_bytes(dir() / "empty.safetensors"), raw_safetensors("{}      ", 0));
  EXPECT_TRUE(File::open(dir() / "empty.safetensors")->tensors().empty());
}

TEST_F(SafetensorsRoundTrip, WriterRefusesInconsistentTensors) {
  const auto path = dir() / "bad.safetensors";
  OwnedTensor short_data = patterned("w", Dtype::F32, {2}, 0);
  short_data.bytes.pop_back();
  auto message = error_of([&] { write(path, views_of({short_data})); });
  EXPECT_THAT(message, HasSubstr("'w'"));
  EXPECT_THAT(message, HasSubstr("needs 8 bytes, got 7"));

  message = error_of([&] {
    write(path, views_of({patterned("w", Dtype::F32, {2}, 0), patterned("w", Dtype::I8, {1}, 0)}));
  });
  EXPECT_THAT(message, HasSubstr("'w' is given twice"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

// A write that fails half-way (here: the file size limit is hit, as on a full disk) must leave
// neither a partial file nor a temporary behind, and must not touch the previous file.
TEST_F(SafetensorsRoundTrip, InterruptedWriteLeavesNoFile) {
  const auto path = dir() / "model.safetensors";
  const std::vector<OwnedTensor> small{patterned("w", Dtype::F32, {4}, 0)};
  write(path, views_of(small));
  const std::string before = read_bytes(path);

  const std::vector<OwnedTensor> large{patterned("w", Dtype::F32, {64, 1024}, 0)};
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* previous_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = saved;
  limited.rlim_cur = 16 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  std::string message;
  try {
    write(path, views_of(large));
  } catch (const Error& error) {
    message = error.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, previous_handler);

  EXPECT_THAT(message, HasSubstr(path.string()));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir()), {}), 1)
      << "a temporary file was left behind";

  // A writer callback that throws after writing part of the file: nothing appears.
  const auto other = dir() / "other.safetensors";
  EXPECT_THROW(write_atomic_with(other,
                                 [&](const std::filesystem::path& temporary) {
                                   write(temporary, views_of(small));
                                   throw Error("interrupted");
                                 }),
               Error);
  EXPECT_FALSE(std::filesystem::exists(other));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir()), {}), 1);
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each case gets its own test, and the message must name the file and, where a
// tensor is at fault, the tensor.

struct Malformed {
  std::string label;
  std::string header;
  std::size_t data_size = 0;
  std::string tensor;                     // quoted in the message; empty for file-level faults
  std::string detail;                     // another substring the message must hold
  uint64_t declared_length = UINT64_MAX;  // header length field when it should lie
  std::string raw;                        // whole file, overriding the above
};

std::string entry(const std::string& name, const std::string& body) {
  return "\"" + name + "\":{" + body + "}";
}

const Malformed kMalformed[] = {
    {"ShorterThanEightBytes", "", 0, "", "shorter than the 8-byte header length", UINT64_MAX,
     "abc"},
    {"HeaderLengthBeyondFile", "{}", 0, "", "header length 1000 is larger", 1000},
    {"HeaderLargerThan100MB", "{}", 0, "", "100 MB", 200'000'000},
    {"InvalidJson", R"({"w":{"dtype":)", 0, "", "not valid JSON"},
    {"InvalidUtf8", "{\"w\xff\":{}}", 0, "", "not valid JSON"},
    {"HeaderNotAnObject", "[1,2]", 0, "", "must be a JSON object"},
    {"EntryNotAnObject", R"({"w":3})", 0, "w", "expected an object"},
    {"MissingDtype", "{" + entry("w", R"("shape":[2],"data_offsets":[0,8])") + "}", 8, "w",
     "missing field 'dtype'"},
    {"MissingShape", "{" + entry("w", R"("dtype":"F32","data_offsets":[0,8])") + "}", 8, "w",
     "missing field 'shape'"},
    {"MissingDataOffsets", "{" + entry("w", R"("dtype":"F32","shape":[2])") + "}", 8, "w",
     "missing field 'data_offsets'"},
    {"DtypeNotAString", "{" + entry("w", R"("dtype":32,"shape":[2],"data_offsets":[0,8])") + "}", 8,
     "w", "'dtype' must be a string"},
    {"ShapeNotAnArray", "{" + entry("w", R"("dtype":"F32","shape":"2","data_offsets":[0,8])") + "}",
     8, "w", "'shape' must be an array"},
    {"ShapeOfFloats", "{" + entry("w", R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])") + "}",
     8, "w", "non-negative integers"},
    {"UnknownDtype", "{" + entry("w", R"("dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2])") + "}",
     2, "w", "unknown dtype 'F8_E4M3'"},
    {"NegativeDimension",
     "{" + entry("w", R"("dtype":"F32","shape":[-2,3],"data_offsets":[0,8])") + "}", 8, "w",
     "negative dimension -2"},
    {"OverflowingShape",
     "{" + entry("w", R"("dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8])") +
         "}",
     8, "w", "overflows"},
    {"OffsetsNotAPair", "{" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,4,8])") + "}",
     8, "w", "[begin, end]"},
    {"OffsetsNotIntegers",
     "{" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":["0","8"])") + "}", 8, "w",
     "[begin, end]"},
    {"NegativeOffset", "{" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[-8,0])") + "}",
     8, "w", "[begin, end]"},
    {"OffsetsEndBeforeBegin",
     "{" + entry("w", R"("dtype":"F32","shape":[0],"data_offsets":[8,0])") + "}", 8, "w",
     "end before they begin"},
    {"SizeDisagreesWithShape",
     "{" + entry("w", R"("dtype":"F32","shape":[3],"data_offsets":[0,8])") + "}", 8, "w",
     "needs 12 bytes"},
    {"OffsetsOutsideBuffer",
     "{" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "}", 4, "w",
     "outside the data buffer of 4 bytes"},
    {"OverlappingTensors",
     "{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "," +
         entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])") + "}",
     12, "b", "overlap tensor 'a'"},
    {"EmptyTensorInsideAnother",
     "{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "," +
         entry("e", R"("dtype":"F32","shape":[0],"data_offsets":[4,4])") + "}",
     8, "e", "overlap tensor 'a'"},
    {"GapBetweenTensors",
     "{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "," +
         entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[12,20])") + "}",
     20, "b", "bytes [8, 12) of the data buffer unused"},
    {"GapBeforeFirstTensor",
     "{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])") + "}", 12, "a",
     "bytes [0, 4)"},
    {"TrailingBytesNotCovered",
     "{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "}", 12, "a",
     "ends at byte 8 after tensor 'a', but the data buffer holds 12 bytes"},
    {"MetadataNotStrings",
     R"({"__metadata__":{"format":1},)" +
         entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "}",
     8, "__metadata__.format", "must be a string"},
    {"MetadataNotAnObject",
     R"({"__metadata__":"pt",)" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") +
         "}",
     8, "__metadata__", "must be an object"},
};

class SafetensorsMalformed : public ScratchDir, public ::testing::WithParamInterface<Malformed> {};

TEST_P(SafetensorsMalformed, IsRefusedNamingFileAndTensor) {
  const Malformed& fault = GetParam();
  const auto path = dir() / "broken.safetensors";
  write_bytes(path, fault.raw.empty()
                        ? raw_safetensors(fault.header, fault.data_size, fault.declared_length)
                        : fault.raw);
  const std::string message = error_of([&] { File::open(path); });
  EXPECT_THAT(message, HasSubstr(path.string()));
  if (!fault.tensor.empty()) EXPECT_THAT(message, HasSubstr("'" + fault.tensor + "'"));
  EXPECT_THAT(message, HasSubstr(fault.detail));
  // A checkpoint folder holding the same file reports it the same way.
  std::filesystem::rename(path, dir() / "model.safetensors");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }), HasSubstr(fault.detail));
}

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsMalformed, ::testing::ValuesIn(kMalformed),
                         [](const auto& info) { return info.param.label; });

TEST(SafetensorsOpen, MissingFileIsNamed) {
  const std::string message = error_of([] { File::open("/nonexistent/lathe/x.safetensors"); });
  EXPECT_THAT(message, HasSubstr("/nonexistent/lathe/x.safetensors"));
}

}  // namespace
}  // namespace lathe::safetensors
