// Interoperability with an independent Python implementation of the format
// (tests/io/safetensors_reference.py, PyTorch for the tensor bytes): Lathe reads what it writes,
// and it reads what Lathe writes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/io_test_support.h"
#include "lathe/io/safetensors.h"

namespace lathe::safetensors {
namespace {

using lathe::testing::from_hex;
using lathe::testing::read_bytes;
using lathe::testing::run_python_reference;
using lathe::testing::ScratchDir;
namespace fs = std::filesystem;

// IEEE half precision to double, written out so that this test needs no library.
double half_to_double(uint16_t bits) {
  const int sign = bits >> 15, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  double magnitude;
  if (exponent == 0)
    magnitude = std::ldexp(mantissa, -24);
  else if (exponent == 31)
    magnitude = mantissa ? NAN : INFINITY;
  else
    magnitude = std::ldexp(1024 + mantissa, exponent - 25);
  return sign ? -magnitude : magnitude;
}

template <class T>
T load(const std::byte* data, std::size_t index) {
  T value;
  std::memcpy(&value, data + index * sizeof(T), sizeof(T));
  return value;
}

double element(const TensorView& view, std::size_t i) {
  switch (view.dtype) {
    case Dtype::F64: return load<double>(view.data, i);
    case Dtype::F32: return load<float>(view.data, i);
    case Dtype::F16: return half_to_double(load<uint16_t>(view.data, i));
    case Dtype::BF16: return std::bit_cast<float>(uint32_t{load<uint16_t>(view.data, i)} << 16);
    case Dtype::I64: return static_cast<double>(load<int64_t>(view.data, i));
    case Dtype::I32: return load<int32_t>(view.data, i);
    case Dtype::I16: return load<int16_t>(view.data, i);
    case Dtype::I8: return load<int8_t>(view.data, i);
    case Dtype::U8: return load<uint8_t>(view.data, i);
    case Dtype::BOOL: return load<uint8_t>(view.data, i);
  }
  return NAN;
}

double expected_value(const nlohmann::json& value) {
  return value.is_string() ? std::strtod(value.get<std::string>().c_str(), nullptr)
                           : value.get<double>();
}

// The reference files are written once for the suite: starting Python with torch takes seconds.
class PythonInterop : public ScratchDir {
 protected:
  static void SetUpTestSuite() {
    reference_dir_ = new fs::path(fs::temp_directory_path() /
                                  ("lathe-io-python-reference-" + std::to_string(::getpid())));
    fs::create_directories(*reference_dir_);
    writer_ = new lathe::testing::CommandResult(
        run_python_reference("write '" + reference_dir_->string() + "'"));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*reference_dir_);
    delete reference_dir_;
    delete writer_;
  }
  void SetUp() override {
    ScratchDir::SetUp();
    ASSERT_EQ(writer_->status, 0) << writer_->output;
    expected_ = nlohmann::json::parse(read_bytes(*reference_dir_ / "expected.json"));
    ASSERT_GE(expected_.size(), 10u);
  }
  static fs::path reference() { return *reference_dir_ / "reference.safetensors"; }

  static inline fs::path* reference_dir_ = nullptr;
  static inline lathe::testing::CommandResult* writer_ = nullptr;
  nlohmann::json expected_;
};

TEST_F(PythonInterop, ReadsFileWrittenByIndependentWriter) {
  auto file = File::open(reference());
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file->tensors().size(), expected_.size());
  for (const auto& [name, want] : expected_.items()) {
    const TensorView* view = file->find(name);
    ASSERT_NE(view, nullptr) << name;
    EXPECT_EQ(dtype_name(view->dtype), want["dtype"].get<std::string>()) << name;
    EXPECT_EQ(view->shape, want["shape"].get<std::vector<int64_t>>()) << name;
    const auto bytes = from_hex(want["hex"]);
    ASSERT_EQ(view->nbytes, bytes.size()) << name;
    EXPECT_EQ(std::memcmp(view->data, bytes.data(), bytes.size()), 0) << name;
    const auto& values = want["values"];
    ASSERT_EQ(values.size() * dtype_size(view->dtype), view->nbytes) << name;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double got = element(*view, i), wanted = expected_value(values[i]);
      EXPECT_EQ(got, wanted) << name << "[" << i << "]";
      EXPECT_EQ(std::signbit(got), std::signbit(wanted)) << name << "[" << i << "]";
    }
  }
}

TEST_F(PythonInterop, IndependentReaderAcceptsLatheFileByteForByte) {
  std::vector<std::vector<std::byte>> storage;
  std::vector<TensorData> tensors;
  storage.reserve(expected_.size());
  for (const auto& [name, want] : expected_.items()) {
    storage.push_back(from_hex(want["hex"]));
    tensors.push_back({name, *parse_dtype(want["dtype"].get<std::string>()),
                       want["shape"].get<std::vector<int64_t>>(), storage.back()});
  }
  write(dir() / "lathe.safetensors", tensors);
  const auto result = run_python_reference("check '" + (dir() / "lathe.safetensors").string() +
                                           "' '" + reference_dir_->string() + "'");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_THAT(result.output, ::testing::HasSubstr("ok"));
}

}  // namespace
}  // namespace lathe::safetensors
