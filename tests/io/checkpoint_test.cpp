// Sharded checkpoints written by write_sharded and read back through Checkpoint, and the errors of
// broken checkpoint folders and index files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/io_test_support.h"
#include "lathe/common/error.h"
#include "lathe/io/safetensors.h"
#include "support/errors.h"

namespace lathe::safetensors {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using lathe::testing::error_of;
using lathe::testing::read_bytes;
using lathe::testing::ScratchDir;
using lathe::testing::write_bytes;
namespace fs = std::filesystem;

struct Owned {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

Owned make(std::string name, Dtype dtype, int64_t count) {
  std::vector<std::byte> bytes(static_cast<std::size_t>(count) * dtype_size(dtype));
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::byte>((i * 7 + name.size()) % 256);
  return {std::move(name), dtype, {count}, std::move(bytes)};
}

std::vector<TensorData> views(const std::vector<Owned>& tensors) {
  std::vector<TensorData> result;
  for (const auto& t : tensors) result.push_back({t.name, t.dtype, t.shape, t.bytes});
  return result;
}

void expect_same(const Checkpoint& checkpoint, const std::vector<Owned>& tensors) {
  ASSERT_EQ(checkpoint.names().size(), tensors.size());
  for (const auto& expected : tensors) {
    const TensorView& view = checkpoint.get(expected.name);
    EXPECT_EQ(view.dtype, expected.dtype);
    EXPECT_EQ(view.shape, expected.shape);
    ASSERT_EQ(view.nbytes, expected.bytes.size());
    EXPECT_EQ(std::memcmp(view.data, expected.bytes.data(), view.nbytes), 0) << expected.name;
  }
}


class CheckpointTest : public ScratchDir {
 protected:
  // Data sizes 40, 40, 40, 100 and 8 bytes.
  std::vector<Owned> tensors_{make("t0", Dtype::F32, 10), make("t1", Dtype::I64, 5),
                              make("t2", Dtype::BF16, 20), make("t3", Dtype::U8, 100),
                              make("t4", Dtype::F64, 1)};
};

// huggingface_hub's rule with a 64-byte limit: t0 | t1 (40+40 > 64) | t3 (larger than the limit,
// alone, emitted as soon as it is met) | t2 + t4.
TEST_F(CheckpointTest, ShardedWriteSplitsLikeSavePretrained) {
  write_sharded(dir(), views(tensors_), 64);
  EXPECT_FALSE(fs::exists(dir() / "model.safetensors"));
  const auto index = nlohmann::json::parse(read_bytes(dir() / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 228);
  const nlohmann::json expected_map = {{"t0", "model-00001-of-00004.safetensors"},
                                       {"t1", "model-00002-of-00004.safetensors"},
                                       {"t3", "model-00003-of-00004.safetensors"},
                                       {"t2", "model-00004-of-00004.safetensors"},
                                       {"t4", "model-00004-of-00004.safetensors"}};
  EXPECT_EQ(index["weight_map"], expected_map);
  for (int i = 1; i <= 4; ++i)
    EXPECT_TRUE(fs::exists(dir() / fmt::format("model-{:05d}-of-00004.safetensors", i)));

  expect_same(Checkpoint::open(dir()), tensors_);
  const auto through_index = Checkpoint::open(dir() / "model.safetensors.index.json");
  expect_same(through_index, tensors_);
  EXPECT_EQ(through_index.files().size(), 4u);
  EXPECT_THAT(through_index.names(), ElementsAre("t0", "t1", "t2", "t3", "t4"));
}

TEST_F(CheckpointTest, SingleFileWhenEverythingFitsAndStaleFilesAreRemoved) {
  write_sharded(dir(), views(tensors_), 64, "adapter");
  ASSERT_TRUE(fs::exists(dir() / "adapter.safetensors.index.json"));
  fs::create_directories(dir() / "unrelated");
  write_bytes(dir() / "adapter-notes.txt", "kept");

  write_sharded(dir(), views(tensors_), 1000, "adapter");
  EXPECT_TRUE(fs::exists(dir() / "adapter.safetensors"));
  EXPECT_FALSE(fs::exists(dir() / "adapter.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir() / "adapter-00001-of-00004.safetensors"));
  EXPECT_TRUE(fs::exists(dir() / "adapter-notes.txt"));
  expect_same(Checkpoint::open(dir() / "adapter.safetensors"), tensors_);

  // And back: a sharded save removes the single file, which a folder lookup would prefer.
  write_sharded(dir(), views(tensors_), 100, "model");
  write_bytes(dir() / "model.safetensors", "stale");
  write_sharded(dir(), views(tensors_), 100, "model");
  EXPECT_FALSE(fs::exists(dir() / "model.safetensors"));
  expect_same(Checkpoint::open(dir()), tensors_);
}

TEST_F(CheckpointTest, SingleFileAndFolder) {
  write(dir() / "model.safetensors", views(tensors_));
  const auto checkpoint = Checkpoint::open(dir());
  expect_same(checkpoint, tensors_);
  EXPECT_EQ(checkpoint.find("absent"), nullptr);
  const std::string message = error_of([&] { checkpoint.get("absent"); });
  EXPECT_THAT(message, HasSubstr((dir() / "model.safetensors").string()));
  EXPECT_THAT(message, HasSubstr("'absent'"));
}

TEST_F(CheckpointTest, MissingShardIsNamed) {
  write_sharded(dir(), views(tensors_), 64);
  fs::remove(dir() / "model-00003-of-00004.safetensors");
  const std::string message = error_of([&] { Checkpoint::open(dir()); });
  EXPECT_THAT(message, HasSubstr((dir() / "model.safetensors.index.json").string()));
  EXPECT_THAT(message, HasSubstr("model-00003-of-00004.safetensors"));
  EXPECT_THAT(message, HasSubstr("'t3'"));
}

TEST_F(CheckpointTest, IndexNamingATensorTheShardLacks) {
  write_sharded(dir(), views(tensors_), 64);
  auto index = nlohmann::json::parse(read_bytes(dir() / "model.safetensors.index.json"));
  index["weight_map"]["t0"] = "model-00002-of-00004.safetensors";
  write_bytes(dir() / "model.safetensors.index.json", index.dump());
  const std::string message = error_of([&] { Checkpoint::open(dir()); });
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(message, HasSubstr("'t0'"));
  EXPECT_THAT(message, HasSubstr("model-00002-of-00004.safetensors"));
}

TEST_F(CheckpointTest, BrokenIndexFiles) {
  const auto index = dir() / "model.safetensors.index.json";
  write_bytes(index, "{not json");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }), HasSubstr("not valid JSON"));
  write_bytes(index, R"({"metadata": {}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(index); }), HasSubstr("'weight_map'"));
  write_bytes(index, R"({"weight_map": {"w": 3}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(index); }), HasSubstr("'w'"));
}

TEST_F(CheckpointTest, FolderWithoutWeightsAndMissingPath) {
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir()); }),
              HasSubstr("no model.safetensors or model.safetensors.index.json"));
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir() / "nope"); }),
              HasSubstr((dir() / "nope").string()));
}

TEST_F(CheckpointTest, RejectsZeroShardLimit) {
  EXPECT_THROW(write_sharded(dir(), views(tensors_), 0), Error);
}

}  // namespace
}  // namespace lathe::safetensors
