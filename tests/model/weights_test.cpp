// The torch bridge: zero-copy loading, every dtype both ways, sharded saves, and files checked
// against PyTorch from Python (tests/io/safetensors_reference.py).
#include "lathe/model/weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <fstream>

#include "io/io_test_support.h"
#include "lathe/common/error.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using lathe::testing::read_bytes;
using lathe::testing::run_python_reference;
using lathe::testing::ScratchDir;

const torch::ScalarType kAllDtypes[] = {torch::kFloat64, torch::kFloat32, torch::kFloat16,
                                        torch::kBFloat16, torch::kInt64,  torch::kInt32,
                                        torch::kInt16,   torch::kInt8,    torch::kUInt8,
                                        torch::kBool};

torch::Tensor sample(torch::ScalarType dtype, torch::IntArrayRef shape) {
  if (dtype == torch::kBool) return torch::rand(shape) > 0.5;
  if (torch::isFloatingType(dtype)) return (torch::randn(shape) * 50).to(dtype);
  return torch::randint(-100, 100, shape).to(dtype);
}

// Bitwise equality, so that -0.0, NaN and infinities count too.
void expect_identical(const torch::Tensor& got, const torch::Tensor& want, const std::string& name) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << name;
  ASSERT_EQ(got.sizes(), want.sizes()) << name;
  const auto got_bytes = got.contiguous().reshape({-1}).view(torch::kUInt8);
  const auto want_bytes = want.contiguous().reshape({-1}).view(torch::kUInt8);
  EXPECT_TRUE(torch::equal(got_bytes, want_bytes)) << name;
}

std::map<std::string, torch::Tensor> every_dtype() {
  torch::manual_seed(7);
  std::map<std::string, torch::Tensor> tensors;
  for (auto dtype : kAllDtypes) {
    const std::string name = c10::toString(dtype);
    tensors["w." + name] = sample(dtype, {4, 6});
    tensors["odd." + name] = sample(dtype, {5});
  }
  tensors["transposed"] = torch::arange(12, torch::kFloat32).reshape({3, 4}).t();
  tensors["scalar"] = torch::tensor(3.5);
  tensors["empty"] = torch::zeros({0, 3}, torch::kBFloat16);
  return tensors;
}

class Weights : public ScratchDir {};

TEST_F(Weights, EveryDtypeRoundTrips) {
  const auto tensors = every_dtype();
  save_tensors(dir() / "all.safetensors", tensors);
  const auto loaded = load_tensors(dir() / "all.safetensors");
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, tensor] : tensors) expect_identical(loaded.at(name), tensor, name);
  EXPECT_EQ(loaded.at("w.BFloat16").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(loaded.at("w.Half").scalar_type(), torch::kHalf);
  EXPECT_EQ(loaded.at("w.Bool").scalar_type(), torch::kBool);
}

TEST_F(Weights, ViewsAreZeroCopyAndKeepTheFileMapped) {
  save_tensors(dir() / "w.safetensors", {{"w", torch::arange(6, torch::kFloat32).reshape({2, 3})}});
  auto file = safetensors::File::open(dir() / "w.safetensors");
  const auto& view = *file->find("w");
  std::weak_ptr<const safetensors::File> watch = file;

  torch::Tensor tensor = to_tensor(view, file);
  EXPECT_EQ(tensor.data_ptr(), static_cast<const void*>(view.data));
  EXPECT_EQ(tensor.sizes(), (std::vector<int64_t>{2, 3}));
  file.reset();
  EXPECT_FALSE(watch.expired()) << "the tensor must keep its file mapped";
  EXPECT_TRUE(torch::equal(tensor, torch::arange(6, torch::kFloat32).reshape({2, 3})));

  // Writing through the view changes this process's pages only, never the file.
  const std::string before = read_bytes(dir() / "w.safetensors");
  tensor.add_(1);
  EXPECT_EQ(tensor[1][2].item<float>(), 6.0f);
  EXPECT_EQ(read_bytes(dir() / "w.safetensors"), before);

  tensor = torch::Tensor();
  EXPECT_TRUE(watch.expired()) << "the file must be released with its last tensor";
}

// Resident memory of this process in bytes (/proc/self/statm's second field, in pages).
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

// Loading copies each tensor and hands its pages back at once, so a checkpoint is never held in
// memory beside the parameters it fills; the view still reads the file's values afterwards, and
// a tensor that is no view of a file is never touched.
TEST_F(Weights, ReleasedViewsLeaveMemoryAndStillReadTheFile) {
  const auto values = torch::randn({16, 1 << 20});  // 64 MiB
  save_tensors(dir() / "big.safetensors", {{"w", values}});
  const auto loaded = load_tensors(dir() / "big.safetensors");
  const auto& view = loaded.at("w");
  const int64_t before = resident_bytes();
  EXPECT_TRUE(torch::equal(view, values));  // reads every page
  const int64_t touched = resident_bytes();
  release_file_pages(view);
  const int64_t released = resident_bytes();
  EXPECT_GT(touched - before, int64_t{48} << 20) << "reading the view should have mapped its pages";
  EXPECT_GT(touched - released, int64_t{48} << 20) << "release_file_pages should have handed them back";
  EXPECT_TRUE(torch::equal(view, values));

  const auto heap = values.clone();
  release_file_pages(heap);
  EXPECT_TRUE(torch::equal(heap, values));
}

// Other writers need not pad the header: here the data starts 2 bytes past a multiple of 4.
TEST_F(Weights, UnalignedDataIsCopied) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ((8 + header.size()) % 4, 2u);
  const float values[2] = {1.5f, -2.25f};
  lathe::testing::write_bytes(dir() / "odd.safetensors",
                              lathe::testing::raw_safetensors(header, 0) +
                                  std::string(reinterpret_cast<const char*>(values), sizeof values));
  auto file = safetensors::File::open(dir() / "odd.safetensors");
  const torch::Tensor tensor = to_tensor(*file->find("w"), file);
  EXPECT_NE(tensor.data_ptr(), static_cast<const void*>(file->find("w")->data));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data_ptr()) % 4, 0u);
  EXPECT_TRUE(torch::equal(tensor, torch::tensor({1.5f, -2.25f})));
}

TEST_F(Weights, ShardedSaveLoadsThroughFolderAndIndex) {
  const auto tensors = every_dtype();
  save_tensors_sharded(dir(), tensors, 100);
  ASSERT_TRUE(fs::exists(dir() / "model.safetensors.index.json"));
  const auto index = nlohmann::json::parse(read_bytes(dir() / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  for (const auto& source : {dir(), dir() / "model.safetensors.index.json"}) {
    const auto loaded = load_tensors(source);
    ASSERT_EQ(loaded.size(), tensors.size());
    for (const auto& [name, tensor] : tensors) expect_identical(loaded.at(name), tensor, name);
  }
}

TEST(WeightsDtype, MapsBothWays) {
  EXPECT_EQ(torch_dtype(safetensors::Dtype::BF16), torch::kBFloat16);
  EXPECT_EQ(torch_dtype(safetensors::Dtype::F16), torch::kHalf);
  EXPECT_EQ(torch_dtype(safetensors::Dtype::BOOL), torch::kBool);
  EXPECT_EQ(torch_dtype(safetensors::Dtype::U8), torch::kUInt8);
  for (auto dtype : kAllDtypes) EXPECT_EQ(torch_dtype(*safetensors_dtype(dtype)), dtype);
  EXPECT_EQ(safetensors_dtype(torch::kComplexFloat), std::nullopt);
}

TEST_F(Weights, UnsupportedDtypeIsNamedAndWritesNothing) {
  const auto path = dir() / "bad.safetensors";
  try {
    save_tensors(path, {{"ok", torch::ones({2})}, {"z", torch::ones({2}, torch::kComplexFloat)}});
    ADD_FAILURE() << "complex tensors cannot be stored";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr(path.string()));
    EXPECT_THAT(error.what(), HasSubstr("'z'"));
  }
  EXPECT_FALSE(fs::exists(path));
}

// Tensors rebuilt from the values the Python reference printed: exact for every dtype there
// (floats were rounded to their dtype in Python, integers stay below 2^53, so the double detour
// loses nothing).
std::map<std::string, torch::Tensor> tensors_from(const nlohmann::json& expected) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, want] : expected.items()) {
    std::vector<double> values;
    for (const auto& value : want["values"])
      values.push_back(value.is_string() ? std::strtod(value.get<std::string>().c_str(), nullptr)
                                         : value.get<double>());
    const auto dtype = *safetensors::parse_dtype(want["dtype"].get<std::string>());
    const auto shape = want["shape"].get<std::vector<int64_t>>();
    tensors[name] = torch::tensor(values, torch::kFloat64).to(torch_dtype(dtype)).reshape(shape);
  }
  return tensors;
}

class WeightsPython : public ScratchDir {
 protected:
  void SetUp() override {
    ScratchDir::SetUp();
    const auto result = run_python_reference("write '" + dir().string() + "'");
    ASSERT_EQ(result.status, 0) << result.output;
    expected_ = tensors_from(nlohmann::json::parse(read_bytes(dir() / "expected.json")));
    ASSERT_GE(expected_.size(), 10u);
  }
  std::map<std::string, torch::Tensor> expected_;
};

TEST_F(WeightsPython, LoadsWhatPyTorchWrote) {
  const auto loaded = load_tensors(dir() / "reference.safetensors");
  ASSERT_EQ(loaded.size(), expected_.size());
  for (const auto& [name, tensor] : expected_) expect_identical(loaded.at(name), tensor, name);
}

TEST_F(WeightsPython, PyTorchReadsWhatLatheWrote) {
  save_tensors(dir() / "lathe.safetensors", expected_);
  const auto result = run_python_reference("check '" + (dir() / "lathe.safetensors").string() +
                                           "' '" + dir().string() + "'");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_THAT(result.output, HasSubstr("ok"));
}

}  // namespace
}  // namespace lathe
