// The training-side examples in examples/plugins/ (callback, metric, optimizer, loss scale), each
// compiled and loaded with --external_plugins on a tiny model, and plugins that throw in the
// middle of training.
#include <gtest/gtest.h>

#include <fstream>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;

fs::path example(const std::string& relative) { return fs::path(LATHE_SOURCE_DIR) / "examples/plugins" / relative; }

// Compiled plugins are cached by content hash: one cache for every test here, so that a rerun
// compiles nothing.
std::vector<std::string> cache_env() {
  return {"LATHE_PLUGIN_CACHE=" + (fs::path(LATHE_BINARY_DIR) / "example-plugin-cache").string()};
}

class ExamplePlugins : public ::testing::Test {
 protected:
  ExamplePlugins() : dir_("example-train-plugins") {
    write_tiny_model(dir_ / "model");
    write_jsonl(dir_ / "train.jsonl", {{{"query", "2 + 2?"}, {"response", "4, of course"}},
                                       {{"query", "3 + 3?"}, {"response", "6 it is"}},
                                       {{"query", "Name a colour."}, {"response", "Blue, like the sky"}}});
  }

  // Runs sft on train.jsonl with `extra` arguments; returns the result and the run folder.
  std::pair<CommandResult, fs::path> train(const std::string& output, const std::vector<std::string>& extra,
                                           const std::string& dataset = "train.jsonl") {
    std::vector<std::string> args{"sft", "--model", (dir_ / "model").string(), "--dataset", (dir_ / dataset).string(),
                                  "--output_dir", (dir_ / output).string(), "--add_version", "false",
                                  "--train_type", "full", "--logging_steps", "1", "--per_device_train_batch_size", "1",
                                  "--split_dataset_ratio", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    return {run_lathe(args, "", cache_env()), dir_ / output};
  }

  static std::vector<nlohmann::json> rows_with(const fs::path& run, const std::string& key) {
    std::vector<nlohmann::json> rows;
    for (const auto& row : read_jsonl(run / "logging.jsonl")) {
      if (row.contains(key)) rows.push_back(row);
    }
    return rows;
  }

  TempDir dir_;
};

TEST_F(ExamplePlugins, EarlyStopOnLossStopsWhenTheLossStalls) {
  // One row and a learning rate of 0: every step logs the same loss, so the first log sets the
  // best and the next `patience` logs do not improve on it.
  write_jsonl(dir_ / "one.jsonl", {{{"query", "2 + 2?"}, {"response", "4"}}});
  auto [result, run] = train("stop", {"--external_plugins", example("callback/early_stop_on_loss.cpp").string(),
                                      "--callbacks", "early_stop_on_loss", "--plugin_args",
                                      R"({"early_stop_on_loss": {"patience": 2, "min_delta": 0.001}})", "--learning_rate", "0",
                                      "--max_steps", "10"},
                              "one.jsonl");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logged = rows_with(run, "loss");
  ASSERT_EQ(logged.size(), 3U) << "stopped after 1 + patience logs, not at max_steps 10";
  EXPECT_EQ(logged.back()["global_step"], 3);
  EXPECT_NE(result.err.find("early_stop_on_loss: no improvement"), std::string::npos) << result.err;
  EXPECT_TRUE(fs::is_directory(run / "checkpoint-3"));
}

TEST_F(ExamplePlugins, EarlyStopOnLossLetsAnImprovingRunFinish) {
  // One row and a constant learning rate: the loss falls at every step, so no stop before max_steps.
  write_jsonl(dir_ / "one.jsonl", {{{"query", "2 + 2?"}, {"response", "4"}}});
  auto [result, run] = train("improving", {"--external_plugins", example("callback/early_stop_on_loss.cpp").string(),
                                           "--callbacks", "early_stop_on_loss", "--plugin_args",
                                           R"({"early_stop_on_loss": {"patience": 2, "min_delta": 0.001}})", "--learning_rate", "1e-3",
                                           "--lr_scheduler_type", "constant", "--max_steps", "6"},
                             "one.jsonl");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logged = rows_with(run, "loss");
  ASSERT_EQ(logged.size(), 6U) << result.err;
  for (std::size_t i = 1; i < logged.size(); ++i)
    EXPECT_LT(logged[i]["loss"].get<double>(), logged[i - 1]["loss"].get<double>() - 0.001) << "step " << i + 1;
  EXPECT_EQ(result.err.find("early_stop_on_loss: no improvement"), std::string::npos) << result.err;
}

TEST_F(ExamplePlugins, CustomMetricIsLoggedAsEvalKey) {
  const auto plugin = example("metric/custom_metric.cpp").string();
  auto evaluate = [&](const std::string& output, const std::string& top_k) {
    auto [result, run] = train(output, {"--external_plugins", plugin, "--metric", "acc", "--metric", "custom",
                                        "--plugin_args", "{\"custom\": {\"top_k\": " + top_k + "}}", "--val_dataset",
                                        (dir_ / "train.jsonl").string(), "--max_steps", "1",
                                        "--metric_for_best_model", "top_k_acc"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    // The metric's key names the best checkpoint.
    const auto state = nlohmann::json::parse(std::ifstream(run / "checkpoint-1" / "trainer_state.json"));
    const auto rows = rows_with(run, "eval_top_k_acc");
    if (!rows.empty()) EXPECT_EQ(state["best_metric"], rows.back()["eval_top_k_acc"]);
    return rows.empty() ? nlohmann::json() : rows.back();
  };
  // top-1 accuracy is acc's token accuracy, computed by another route (argmax, not topk).
  const auto top1 = evaluate("top1", "1");
  ASSERT_TRUE(top1.contains("eval_token_acc")) << top1.dump();
  EXPECT_TRUE(top1.contains("eval_loss"));
  EXPECT_DOUBLE_EQ(top1["eval_top_k_acc"].get<double>(), top1["eval_token_acc"].get<double>());
  // With every token of the vocabulary among the top k, every label is found.
  const auto config = nlohmann::json::parse(std::ifstream(dir_ / "model" / "config.json"));
  const auto all = evaluate("all", std::to_string(config["vocab_size"].get<int64_t>()));
  ASSERT_TRUE(all.contains("eval_top_k_acc")) << all.dump();
  EXPECT_DOUBLE_EQ(all["eval_top_k_acc"].get<double>(), 1.0);
  EXPECT_LT(all["eval_token_acc"].get<double>(), 1.0) << "an untrained model gets some tokens wrong";
}

TEST_F(ExamplePlugins, PredictWithGenerateLogsNlgScores) {
  auto [result, run] = train("nlg", {"--predict_with_generate", "true", "--max_new_tokens", "4", "--val_dataset",
                                     (dir_ / "train.jsonl").string(), "--max_steps", "1"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto rows = rows_with(run, "eval_rouge-l");
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_TRUE(rows[0].contains("eval_loss"));
  for (const char* key : {"eval_rouge-1", "eval_rouge-2", "eval_rouge-l", "eval_bleu-4"}) {
    ASSERT_TRUE(rows[0].contains(key)) << key;
    EXPECT_GE(rows[0][key].get<double>(), 0.0);
    EXPECT_LE(rows[0][key].get<double>(), 100.0);
  }
  EXPECT_FALSE(rows[0].contains("eval_token_acc")) << "nlg replaces acc";
  // As in SWIFT, rouge-l then names the best checkpoint.
  const auto state = nlohmann::json::parse(std::ifstream(run / "checkpoint-1" / "trainer_state.json"));
  EXPECT_EQ(state["best_metric"], rows[0]["eval_rouge-l"]);
}

TEST_F(ExamplePlugins, CustomOptimizerFollowsItsStepDecay) {
  auto [result, run] = train("sgd", {"--external_plugins", example("optimizer/custom_optimizer.cpp").string(),
                                     "--optimizer", "custom", "--learning_rate", "0.01", "--plugin_args",
                                     R"({"custom": {"momentum": 0.9, "step_size": 2, "gamma": 0.5}})", "--max_steps", "6",
                                     "--warmup_ratio", "0.5"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logged = rows_with(run, "learning_rate");
  ASSERT_EQ(logged.size(), 6U);
  // Step s trains with 0.01 * 0.5^floor((s - 1) / 2); the warm-up of --warmup_ratio is not used.
  const double expected[] = {0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025};
  for (std::size_t i = 0; i < logged.size(); ++i) {
    EXPECT_NEAR(logged[i]["learning_rate"].get<double>(), expected[i], 1e-12) << "step " << i + 1;
  }
}

TEST_F(ExamplePlugins, LastRoundLossScaleTrainsOnlyTheLastRound) {
  write_jsonl(dir_ / "rounds.jsonl",
              {{{"messages", {{{"role", "user"}, {"content", "Hi"}},
                              {{"role", "assistant"}, {"content", "Hello there, how can I help you today?"}},
                              {{"role", "user"}, {"content", "2 + 2?"}},
                              {{"role", "assistant"}, {"content", "4"}}}}}});
  auto first_loss = [&](const std::string& output, const std::vector<std::string>& extra) {
    std::vector<std::string> args{"--max_steps", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto [result, run] = train(output, args, "rounds.jsonl");
    EXPECT_EQ(result.exit_code, 0) << result.err;
    auto rows = rows_with(run, "loss");
    return rows.empty() ? -1.0 : rows.front()["loss"].get<double>();
  };
  const double example_loss = first_loss("example", {"--external_plugins", example("loss_scale/last_round_loss_scale.cpp").string(),
                                                     "--loss_scale", "last_round_example"});
  const double built_in_last_round = first_loss("last_round", {"--loss_scale", "last_round"});
  const double every_round = first_loss("default", {});
  ASSERT_GT(example_loss, 0);
  // The same tokens trained as the built-in base last_round: the same mean loss before any update.
  EXPECT_NEAR(example_loss, built_in_last_round, 1e-6 * built_in_last_round);
  EXPECT_GT(std::abs(example_loss - every_round), 1e-4) << "the first round's tokens are not trained";
}

// One plugin file, two ways of failing: a callback that throws at the end of step 3 and a loss that
// throws on its third call (step 3).
constexpr const char* kThrowingPlugin = R"(#include <lathe/plugin.h>
#include <lathe/plugin/callback.h>
#include <lathe/plugin/loss.h>
#include "lathe/plugin/token_losses.h"
#include <stdexcept>
namespace {
struct Thrower : lathe::Callback {
  void on_step_end(const lathe::Arguments&, S& state, C&, const X&) override {
    if (state.global_step == 3) throw std::runtime_error("deliberate callback failure");
  }
};
lathe::LossFunction throwing_loss(const lathe::PluginContext&) {
  auto calls = std::make_shared<int>(0);
  return [calls](lathe::ModelOutputs& outputs, const torch::Tensor& labels, const torch::Tensor&,
                 std::optional<int64_t> count) {
    if (++*calls == 3) throw std::runtime_error("deliberate loss failure");
    auto shifted = lathe::shift_tokens(outputs.hidden(), labels, torch::Tensor());
    return lathe::chunked_token_cross_entropy(shifted.hidden, outputs.head_weight(), shifted.targets).sum() /
           static_cast<double>(count.value_or(1));
  };
}
}  // namespace
LATHE_PLUGIN() {
  lathe::callback_registry().add("throw_at_step_3", "throws", [](const lathe::PluginContext&) {
    return std::make_shared<Thrower>();
  });
  lathe::loss_registry().add("throw_on_third_call", "throws", throwing_loss);
}
)";

TEST_F(ExamplePlugins, ThrowDuringTrainingStopsCleanlyAndKeepsTheLastCheckpoint) {
  const auto plugin = dir_ / "throwing.cpp";
  write_file_atomic(plugin, kThrowingPlugin);
  const std::vector<std::string> common{"--external_plugins", plugin.string(), "--max_steps", "6", "--save_steps", "2"};
  struct Case {
    std::string output, expected;
    std::vector<std::string> selection;
  };
  for (const auto& [output, expected, selection] :
       {Case{"callback", "callback 'throw_at_step_3' (" + plugin.string() + ") failed in on_step_end at step 3: "
                         "deliberate callback failure", {"--callbacks", "throw_at_step_3"}},
        Case{"loss", "loss 'throw_on_third_call' (" + plugin.string() + ") failed in step 3: deliberate loss failure",
             {"--loss_type", "throw_on_third_call"}}}) {
    auto args = common;
    args.insert(args.end(), selection.begin(), selection.end());
    auto [result, run] = train(output, args);
    EXPECT_EQ(result.exit_code, 1) << output;
    EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
    EXPECT_NE(result.err.find("the last checkpoint is " + (run / "checkpoint-2").string()), std::string::npos)
        << result.err;
    // checkpoint-2 and nothing half-written beside it.
    std::vector<std::string> folders;
    for (const auto& entry : fs::directory_iterator(run)) {
      if (entry.is_directory()) folders.push_back(entry.path().filename().string());
    }
    EXPECT_EQ(folders, std::vector<std::string>{"checkpoint-2"}) << output;
    // The checkpoint resumes: two more steps without the plugin.
    auto resumed = run_lathe({"sft", "--model", (dir_ / "model").string(), "--dataset", (dir_ / "train.jsonl").string(),
                              "--output_dir", (dir_ / (output + "-resumed")).string(), "--add_version", "false",
                              "--train_type", "full", "--per_device_train_batch_size", "1", "--split_dataset_ratio", "0",
                              "--max_steps", "4", "--save_steps", "2", "--resume_from_checkpoint",
                              (run / "checkpoint-2").string()});
    EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.err.find("resumed from"), std::string::npos) << resumed.err;
    EXPECT_TRUE(fs::is_directory(dir_ / (output + "-resumed") / "checkpoint-4"));
  }
}

}  // namespace
}  // namespace lathe::testing
