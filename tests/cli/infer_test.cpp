// `lathe infer`: batch mode writes response text and ids; greedy decoding is deterministic and
// the same whether rows are batched or not; the chat mode answers lines from standard input.
#include <gtest/gtest.h>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;

TEST(Infer, BatchModeWritesResponsesAndIds) {
  TempDir dir("infer-batch");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "q.jsonl", {{{"query", "who are you?"}, {"response", "a label"}},
                                {{"messages", {{{"role", "user"}, {"content", "你好，世界"}}}}},
                                {{"query", "1 + 1 = ?"}}});
  auto run = [&](const std::string& batch, const std::string& out) {
    return run_lathe({"infer", "--model", (dir / "model").string(), "--val_dataset", (dir / "q.jsonl").string(),
                      "--result_path", (dir / out).string(), "--max_new_tokens", "12", "--max_batch_size", batch});
  };
  auto batched = run("3", "batched.jsonl");
  ASSERT_EQ(batched.exit_code, 0) << batched.err;
  auto single = run("1", "single.jsonl");
  ASSERT_EQ(single.exit_code, 0) << single.err;
  auto rows = read_jsonl(dir / "batched.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["labels"], "a label");
  for (const auto& row : rows) {
    EXPECT_TRUE(row["response"].is_string());
    EXPECT_TRUE(row["response_ids"].is_array());
    EXPECT_GT(row["response_ids"].size(), 0u);
  }
  auto alone = read_jsonl(dir / "single.jsonl");
  for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i]["response_ids"], alone[i]["response_ids"]) << i;
}

TEST(Infer, ChatModeReadsStandardInput) {
  TempDir dir("infer-chat");
  write_tiny_model(dir / "model");
  auto result = run_lathe({"infer", "--model", (dir / "model").string(), "--max_new_tokens", "5", "--stream", "false"},
                          "hello\nclear\nwho are you?\nexit\nnever read\n");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("(conversation cleared)"), std::string::npos) << result.out;
}

TEST(Infer, RawTemplateFeedsTheQueryAsItIs) {
  TempDir dir("infer-raw");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "q.jsonl", {{{"query", "The quick brown fox"}}});
  auto result = run_lathe({"infer", "--model", (dir / "model").string(), "--template", "raw", "--val_dataset",
                           (dir / "q.jsonl").string(), "--result_path", (dir / "out.jsonl").string(), "--max_new_tokens", "4"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(read_jsonl(dir / "out.jsonl").size(), 1u);
}

}  // namespace
}  // namespace lathe::testing
