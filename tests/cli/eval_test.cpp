// `lathe eval`: the report holds every metric's keys; generation-based scores come from the same
// greedy responses `lathe infer` gives (references equal to them score 100); unknown metrics are
// errors that list the registered ones.
#include <gtest/gtest.h>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {

TEST(Eval, WritesAReportWithEveryMetric) {
  TempDir dir("eval-report");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "q.jsonl", {{{"query", "who are you?"}}, {{"query", "1 + 1 = ?"}}});
  const auto model = (dir / "model").string();
  auto infer = run_lathe({"infer", "--model", model, "--val_dataset", (dir / "q.jsonl").string(), "--result_path",
                          (dir / "answers.jsonl").string(), "--max_new_tokens", "10"});
  ASSERT_EQ(infer.exit_code, 0) << infer.err;
  std::vector<nlohmann::json> rows;
  for (const auto& answer : read_jsonl(dir / "answers.jsonl")) {
    ASSERT_FALSE(answer["response"].get<std::string>().empty());
    rows.push_back({{"query", answer["messages"][0]["content"]}, {"response", answer["response"]}});
  }
  write_jsonl(dir / "val.jsonl", rows);

  auto eval = run_lathe({"eval", "--model", model, "--val_dataset", (dir / "val.jsonl").string(), "--metric", "nlg",
                         "--metric", "acc", "--max_new_tokens", "10", "--output_dir", (dir / "out").string()});
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const auto report = nlohmann::json::parse(read_file(dir / "out" / "eval_report.json"));
  EXPECT_EQ(report["rows"], 2);
  const auto& nlg = report["metrics"]["nlg"];
  for (const auto* key : {"rouge-1", "rouge-2", "rouge-l", "bleu-4"}) ASSERT_TRUE(nlg.contains(key)) << nlg.dump();
  EXPECT_NEAR(nlg["rouge-1"].get<double>(), 100.0, 1e-6) << "the references are the greedy answers themselves";
  EXPECT_NEAR(nlg["rouge-l"].get<double>(), 100.0, 1e-6);
  const auto token_acc = report["metrics"]["acc"]["token_acc"].get<double>();
  EXPECT_GE(token_acc, 0.0);
  EXPECT_LE(token_acc, 1.0);
  EXPECT_NE(eval.out.find("nlg/rouge-l"), std::string::npos) << eval.out;
  EXPECT_NE(eval.out.find("acc/token_acc"), std::string::npos) << eval.out;
}

TEST(Eval, DefaultMetricIsNlgAndResultPathIsHonoured) {
  TempDir dir("eval-default");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "val.jsonl", {{{"query", "hello"}, {"response", "hi there"}}});
  auto eval = run_lathe({"eval", "--model", (dir / "model").string(), "--val_dataset", (dir / "val.jsonl").string(),
                         "--max_new_tokens", "4", "--result_path", (dir / "report.json").string()});
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const auto report = nlohmann::json::parse(read_file(dir / "report.json"));
  EXPECT_TRUE(report["metrics"].contains("nlg")) << report.dump();
  EXPECT_EQ(report["metrics"].size(), 1u);
}

TEST(Eval, UnknownMetricListsTheRegisteredOnes) {
  TempDir dir("eval-unknown");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "val.jsonl", {{{"query", "hello"}, {"response", "hi"}}});
  auto eval = run_lathe({"eval", "--model", (dir / "model").string(), "--val_dataset", (dir / "val.jsonl").string(),
                         "--metric", "no_such_metric"});
  EXPECT_NE(eval.exit_code, 0);
  EXPECT_NE(eval.err.find("no_such_metric"), std::string::npos) << eval.err;
  EXPECT_NE(eval.err.find("acc"), std::string::npos) << eval.err;
  EXPECT_NE(eval.err.find("nlg"), std::string::npos) << eval.err;
}

}  // namespace
}  // namespace lathe::testing
