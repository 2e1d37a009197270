// `--report_to tensorboard` writes event files that TensorBoard itself reads (its own record reader,
// which checks every CRC, and its own Event protocol buffers), holding the logged scalars under
// Hugging Face's names (train/loss, eval/loss, ...) at their steps.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

TEST(TensorBoard, EventFilesHoldTheLoggedScalars) {
  TempDir dir("tensorboard");
  write_tiny_model(dir / "model");
  std::vector<json> rows;
  for (int i = 0; i < 12; ++i) rows.push_back({{"query", "Say " + std::to_string(i)}, {"response", std::to_string(i)}});
  write_jsonl(dir / "train.jsonl", rows);
  const auto result = run_lathe({"sft", "--model", (dir / "model").string(), "--dataset", (dir / "train.jsonl").string(),
                                 "--output_dir", (dir / "out").string(), "--add_version", "false", "--max_steps", "4",
                                 "--logging_steps", "1", "--eval_steps", "2", "--save_steps", "4",
                                 "--split_dataset_ratio", "0.25", "--per_device_train_batch_size", "3",
                                 "--report_to", "tensorboard"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err.find("report_to"), std::string::npos) << "tensorboard has an effect: no notice";
  ASSERT_TRUE(fs::is_directory(dir / "out" / "runs"));
  ASSERT_TRUE(run_oracle({{"tb_scalars", "--dir", (dir / "out" / "runs").string(), "--out", (dir / "tb.json").string()}},
                         dir.path()));
  const auto events = json::parse(read_file(dir / "tb.json"));
  EXPECT_EQ(events["files"], 1);
  EXPECT_EQ(events["file_version"], "brain.Event:2");
  const auto& scalars = events["scalars"];

  std::vector<json> train_rows, eval_rows;
  for (const auto& row : read_jsonl(dir / "out" / "logging.jsonl")) {
    if (row.contains("loss")) train_rows.push_back(row);
    if (row.contains("eval_loss")) eval_rows.push_back(row);
  }
  ASSERT_EQ(train_rows.size(), 4u);
  ASSERT_EQ(eval_rows.size(), 2u);
  for (const auto& [tag, key, logged] : {std::tuple{"train/loss", "loss", &train_rows},
                                          std::tuple{"train/grad_norm", "grad_norm", &train_rows},
                                          std::tuple{"train/learning_rate", "learning_rate", &train_rows},
                                          std::tuple{"eval/loss", "eval_loss", &eval_rows}}) {
    SCOPED_TRACE(tag);
    ASSERT_TRUE(scalars.contains(tag)) << scalars.dump();
    ASSERT_EQ(scalars[tag].size(), logged->size());
    for (std::size_t i = 0; i < logged->size(); ++i) {
      EXPECT_EQ(scalars[tag][i][0], (*logged)[i]["global_step"]);
      const double value = (*logged)[i][key].get<double>();
      EXPECT_NEAR(scalars[tag][i][1].get<double>(), value, 1e-6 * std::max(1.0, std::abs(value)));  // stored as float
    }
  }
  EXPECT_FALSE(scalars.contains("train/global_step/max_steps")) << "text values are not scalars";
}

}  // namespace
}  // namespace lathe::testing
