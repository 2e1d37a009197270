// `lathe rlhf --rlhf_type grpo` end to end on a tiny model, with reward plugins written here: the
// logged reward is the weighted sum of the functions' rewards, rewards a function leaves out are
// tolerated and not counted, every extra column and ms-swift's keyword data reach the functions,
// completions.jsonl holds each rollout, and settings ms-swift refuses are refused up front.
#include <gtest/gtest.h>

#include <cmath>

#include "cli/cli_util.h"
#include "lathe/common/files.h"
#include "lathe/model/classifier.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// constant_one / constant_zero, odd_length (1 for a completion of an odd number of bytes: rewards
// that differ within most groups), and task_check: no reward (NaN) outside task "math", else 1 when
// the row carries what ms-swift hands a reward function (the conversation ending with this very
// completion, is_truncated, trainer_state, the solution column), -1 otherwise.
constexpr const char* kRewardPlugins = R"(#include <lathe/plugin.h>
#include <lathe/plugin/orm.h>
#include <cmath>
namespace {
class Constant : public lathe::OutcomeRewardModel {
 public:
  explicit Constant(double value) : value_(value) {}
  std::vector<double> score(const std::vector<lathe::RewardInput>& inputs) override {
    return std::vector<double>(inputs.size(), value_);
  }
 private:
  double value_;
};
class OddLength : public lathe::OutcomeRewardModel {
 public:
  std::vector<double> score(const std::vector<lathe::RewardInput>& inputs) override {
    std::vector<double> rewards;
    for (const auto& input : inputs) rewards.push_back(static_cast<double>(input.completion.size() % 2));
    return rewards;
  }
};
class TaskCheck : public lathe::OutcomeRewardModel {
 public:
  std::vector<double> score(const std::vector<lathe::RewardInput>& inputs) override {
    std::vector<double> rewards;
    for (const auto& input : inputs) {
      if (input.row.value("task", "") != "math") {
        rewards.push_back(std::nan(""));
        continue;
      }
      const auto& last = input.row.at("messages").back();
      const bool complete = last.at("role") == "assistant" && last.at("content") == input.completion &&
                            input.row.at("is_truncated").is_boolean() && input.row.at("trainer_state").contains("global_step") &&
                            input.row.at("solution") == "4";
      rewards.push_back(complete ? 1.0 : -1.0);
    }
    return rewards;
  }
};
}  // namespace
LATHE_PLUGIN() {
  lathe::orm_registry().add("constant_one", "1", [](const lathe::PluginContext&) { return std::make_shared<Constant>(1.0); });
  lathe::orm_registry().add("constant_zero", "0", [](const lathe::PluginContext&) { return std::make_shared<Constant>(0.0); });
  lathe::orm_registry().add("task_check", "keyword data", [](const lathe::PluginContext&) { return std::make_shared<TaskCheck>(); });
  lathe::orm_registry().add("odd_length", "1 for an odd number of bytes", [](const lathe::PluginContext&) { return std::make_shared<OddLength>(); });
}
)";

std::vector<json> prompts(int count) {
  std::vector<json> rows;
  for (int i = 0; i < count; ++i) {
    rows.push_back({{"messages", json::array({{{"role", "user"}, {"content", "What is 2 + 2? Question " + std::to_string(i)}}})},
                    {"solution", "4"},
                    {"task", i % 2 ? "math" : "chat"}});
  }
  return rows;
}

class Grpo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("grpo");
    write_tiny_model(*dir_ / "model");
    write_jsonl(*dir_ / "prompts.jsonl", prompts(8));
    write_file_atomic(*dir_ / "rewards.cpp", kRewardPlugins);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> arguments(const std::string& output) {
    return {"rlhf", "--rlhf_type", "grpo", "--model", (*dir_ / "model").string(), "--dataset",
            (*dir_ / "prompts.jsonl").string(), "--output_dir", (*dir_ / output).string(), "--train_type", "lora",
            "--lora_rank", "4", "--num_generations", "4", "--per_device_train_batch_size", "4",
            "--max_completion_length", "6", "--logging_steps", "1", "--seed", "3", "--save_strategy", "no",
            "--add_version", "false", "--external_plugins", (*dir_ / "rewards.cpp").string()};
  }
  static CommandResult run(const std::vector<std::string>& args) {
    return run_lathe(args, "", {"LATHE_PLUGIN_CACHE=" + (*dir_ / "plugin-cache").string()});
  }
  static TempDir* dir_;
};
TempDir* Grpo::dir_ = nullptr;

TEST_F(Grpo, TheRewardIsTheWeightedSumAndEveryRolloutIsLogged) {
  auto args = arguments("weighted");
  args.insert(args.end(), {"--reward_funcs", "constant_one", "constant_zero", "--reward_weights", "0.7", "0.3",
                           "--max_steps", "2", "--log_completions", "true", "--use_vllm", "true", "--vllm_mode",
                           "colocate", "--sleep_level", "1"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(*dir_ / "weighted");
  ASSERT_EQ(logs.size(), 2u);
  for (const auto& row : logs) {
    EXPECT_NEAR(row["reward"].get<double>(), 0.7, 1e-9);
    EXPECT_NEAR(row["reward_std"].get<double>(), 0.0, 1e-12);
    EXPECT_NEAR(row["frac_reward_zero_std"].get<double>(), 1.0, 1e-12);
    EXPECT_NEAR(row["rewards/constant_one/mean"].get<double>(), 1.0, 1e-12);
    EXPECT_NEAR(row["rewards/constant_zero/mean"].get<double>(), 0.0, 1e-12);
    for (const char* key : {"kl", "clip_ratio/low_mean", "clip_ratio/high_max", "clip_ratio/region_mean",
                            "completions/mean_length", "completions/min_length", "completions/max_length",
                            "completions/clipped_ratio", "rollout/seconds", "rollout/tokens_per_second",
                            "rollout/scoring_seconds"})
      EXPECT_TRUE(row.contains(key)) << key;
    EXPECT_LE(row["completions/max_length"].get<double>(), 6.0);
    // Equal rewards leave no advantage: the loss is beta times the KL (0 while LoRA's B is 0).
    EXPECT_NEAR(row["loss"].get<double>(), 0.04 * row["kl"].get<double>(), 1e-6);
  }
  EXPECT_NEAR(logs.front()["kl"].get<double>(), 0.0, 1e-7) << "the first step's policy is its reference";
  const auto completions = read_jsonl(*dir_ / "weighted" / "completions.jsonl");
  ASSERT_EQ(completions.size(), 8u);  // 2 steps x 4 completions of one prompt
  for (const auto& line : completions) {
    EXPECT_EQ(line["constant_one"], 1.0);
    EXPECT_EQ(line["advantages"], 0.0);
    EXPECT_EQ(line["solution"], "4");
    EXPECT_TRUE(line["completion"].is_string());
    EXPECT_EQ(line["prompt"].back()["role"], "user");
  }
  // ms-swift's vLLM settings are accepted, each with a line saying why it has no effect here.
  EXPECT_NE(result.err.find("--use_vllm"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("--sleep_level"), std::string::npos) << result.err;
  const auto saved = json::parse(read_file(*dir_ / "weighted" / "args.json"));
  EXPECT_EQ(saved["temperature"], 0.9) << "ms-swift's grpo default";
  EXPECT_EQ(saved["metric_for_best_model"], "reward");
}

// Held-out prompts are rolled out in groups too (--per_device_eval_batch_size defaults to one
// group) and scored as in training; the best checkpoint is the one with the highest reward.
TEST_F(Grpo, EvaluationRollsOutTheHeldOutPrompts) {
  auto args = arguments("evaluated");
  args[args.size() - 5] = "steps";  // --save_strategy
  args.insert(args.end(), {"--reward_funcs", "constant_one", "constant_zero", "--reward_weights", "0.7", "0.3",
                           "--max_steps", "2", "--split_dataset_ratio", "0.25", "--eval_steps", "1", "--save_steps", "1"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::vector<json> evaluations;
  for (const auto& row : read_jsonl(*dir_ / "evaluated" / "logging.jsonl"))
    if (row.contains("eval_loss")) evaluations.push_back(row);
  ASSERT_EQ(evaluations.size(), 2u);
  for (const auto& row : evaluations) {
    EXPECT_NEAR(row["eval_reward"].get<double>(), 0.7, 1e-9);
    EXPECT_TRUE(row.contains("eval_completions/mean_length"));
    EXPECT_TRUE(row.contains("eval_kl"));
  }
  const auto state = json::parse(read_file(*dir_ / "evaluated" / "checkpoint-2" / "trainer_state.json"));
  EXPECT_NEAR(state["best_metric"].get<double>(), 0.7, 1e-9) << state.dump();
}

// Rollouts are seeded by the step, so a run resumed from a checkpoint draws and logs what the
// unbroken run did.
TEST_F(Grpo, AResumedRunContinuesExactly) {
  const auto train = [&](const std::string& output, const std::string& steps, const std::vector<std::string>& extra) {
    auto args = arguments(output);
    args[args.size() - 5] = "steps";  // --save_strategy
    args.insert(args.end(), {"--reward_funcs", "odd_length", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
                             "--save_steps", "2", "--max_steps", steps});
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
  };
  train("grpo-unbroken", "4", {});
  train("grpo-resumed", "2", {});
  train("grpo-resumed", "4", {"--resume_from_checkpoint", (*dir_ / "grpo-resumed" / "checkpoint-2").string()});
  expect_same_steps_after(*dir_ / "grpo-unbroken", *dir_ / "grpo-resumed", 2, 2,
                          {"loss", "grad_norm", "reward", "kl", "completions/mean_length"});
}

TEST_F(Grpo, ColumnsAndKeywordsReachTheFunctionsAndMissingRewardsAreTolerated) {
  auto args = arguments("columns");
  args.insert(args.end(), {"--reward_funcs", "task_check", "--max_steps", "4", "--dataset_shuffle", "false"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(*dir_ / "columns");
  ASSERT_EQ(logs.size(), 4u);
  // Prompts alternate between the tasks; a step's four completions share one prompt.
  int math_steps = 0;
  for (const auto& row : logs) {
    EXPECT_TRUE(std::isfinite(row["loss"].get<double>()));
    if (!row.contains("rewards/task_check/mean")) {
      EXPECT_NEAR(row["reward"].get<double>(), 0.0, 1e-12) << "no function scored: reward 0";
      continue;
    }
    ++math_steps;
    EXPECT_NEAR(row["rewards/task_check/mean"].get<double>(), 1.0, 1e-12) << "every keyword arrived";
  }
  EXPECT_EQ(math_steps, 2);
  EXPECT_NE(result.err.find("got no reward from any function"), std::string::npos) << result.err;
}

// A reward model trained by --rlhf_type rm scores each completion through the `default` plugin:
// its score head on the conversation that ends with the completion, in its own template.
TEST_F(Grpo, ARewardModelScoresTheCompletions) {
  std::vector<json> pairs;
  for (int i = 0; i < 4; ++i) {
    pairs.push_back({{"messages", json::array({{{"role", "user"}, {"content", "What is 2 + 2?"}},
                                               {{"role", "assistant"}, {"content", "4"}}})},
                     {"rejected_response", std::string(i + 1, '5')}});
  }
  write_jsonl(*dir_ / "pairs.jsonl", pairs);
  const auto rm = run_lathe({"rlhf", "--rlhf_type", "rm", "--model", (*dir_ / "model").string(), "--dataset",
                             (*dir_ / "pairs.jsonl").string(), "--output_dir", (*dir_ / "rm").string(), "--train_type",
                             "full", "--max_steps", "1", "--save_steps", "1", "--add_version", "false"});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  const auto reward_model = *dir_ / "rm" / "checkpoint-1";
  auto args = arguments("with-rm");
  args.insert(args.end(), {"--reward_funcs", "constant_one", "--reward_model", reward_model.string(), "--reward_weights",
                           "1", "0.5", "--max_steps", "1", "--log_completions", "true"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(*dir_ / "with-rm");
  ASSERT_EQ(logs.size(), 1u);

  auto model = load_pretrained(reward_model);
  const auto tokenizer = Tokenizer::from_file(reward_model);
  const auto chat_template = Template::for_model(reward_model.string());
  // The classifier's score of a logged rollout's conversation, computed here.
  const auto score_of = [&](const json& line) {
    Conversation conversation;
    conversation.messages.push_back({"user", line["prompt"].back()["content"].get<std::string>(), {}, {}});
    conversation.messages.push_back({"assistant", line["completion"].get<std::string>(), {}, {}});
    const auto ids = chat_template.encode(tokenizer, conversation, false).input_ids;
    torch::NoGradGuard no_grad;
    return classifier_logits(model, {ids})[0][0].item<double>();
  };
  const auto completions = read_jsonl(*dir_ / "with-rm" / "completions.jsonl");
  ASSERT_EQ(completions.size(), 4u);
  double reward_sum = 0;
  for (const auto& line : completions) {
    const double expected = score_of(line);
    EXPECT_NEAR(line["checkpoint-1"].get<double>(), expected, 1e-5) << line["completion"];
    reward_sum += 1 + 0.5 * expected;
  }
  EXPECT_NEAR(logs.front()["reward"].get<double>(), reward_sum / 4, 1e-5);
  EXPECT_TRUE(logs.front().contains("rewards/checkpoint-1/mean"));

  // The example plugin: the same scores through the logistic function.
  const auto example = fs::path(LATHE_SOURCE_DIR) / "examples/plugins/reward_model/sigmoid_rm.cpp";
  args = arguments("with-sigmoid-rm");
  args.insert(args.end(), {"--reward_model", reward_model.string(), "--reward_model_plugin", "sigmoid_rm",
                           "--external_plugins", example.string(), "--max_steps", "1", "--log_completions", "true"});
  const auto squashed = run(args);
  ASSERT_EQ(squashed.exit_code, 0) << squashed.err;
  for (const auto& line : read_jsonl(*dir_ / "with-sigmoid-rm" / "completions.jsonl"))
    EXPECT_NEAR(line["checkpoint-1"].get<double>(), 1 / (1 + std::exp(-score_of(line))), 1e-6);
  const auto listed = run_lathe({"plugins"});
  EXPECT_NE(listed.out.find("--reward_model_plugin"), std::string::npos) << listed.out;
}

// Full tuning compares with a frozen copy; --sync_ref_model with alpha 1 makes it the policy itself
// every step, so from the second step on the KL is 0 (without syncing it grows).
TEST_F(Grpo, SyncingTheReferenceMovesItToThePolicy) {
  const auto kl_of_second_step = [&](const std::string& output, std::vector<std::string> extra) {
    auto args = arguments(output);
    args[10] = "full";  // --train_type
    args.insert(args.end(), {"--reward_funcs", "task_check", "--max_steps", "2", "--learning_rate", "1e-2",
                             "--dataset_shuffle", "false"});
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    const auto logs = training_logs(*dir_ / output);
    return logs.size() == 2 ? logs[1]["kl"].get<double>() : -1.0;
  };
  EXPECT_GT(kl_of_second_step("unsynced", {}), 1e-6);
  EXPECT_NEAR(kl_of_second_step("synced", {"--sync_ref_model", "true", "--ref_model_sync_steps", "1",
                                           "--ref_model_mixup_alpha", "1"}), 0.0, 1e-7);
}

// --dynamic_sample replaces groups whose rewards are all equal with groups of new prompts, so every
// step trains on groups that differ; when no draw helps, the step keeps its batch and says so.
TEST_F(Grpo, DynamicSamplingKeepsOnlyGroupsThatDiffer) {
  auto args = arguments("dynamic");
  args.insert(args.end(), {"--reward_funcs", "odd_length", "--max_steps", "6", "--dynamic_sample", "true"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(*dir_ / "dynamic");
  ASSERT_EQ(logs.size(), 6u);
  for (const auto& row : logs) EXPECT_EQ(row["frac_reward_zero_std"].get<double>(), 0.0) << row.dump();
  args = arguments("dynamic-constant");
  args.insert(args.end(), {"--reward_funcs", "constant_one", "--max_steps", "1", "--dynamic_sample", "true"});
  const auto constant = run(args);
  ASSERT_EQ(constant.exit_code, 0) << constant.err;
  EXPECT_NE(constant.err.find("groups with equal rewards remain after 3 draws"), std::string::npos) << constant.err;
}

// The example scheduler asks again after a wrong answer (the tiny model's always are): each
// trajectory is prompt, answer, hint, answer; ms-swift's loss_scale for multi-turn trains both.
TEST_F(Grpo, AMultiTurnSchedulerGivesEachTrajectoryItsTurns) {
  const auto examples = fs::path(LATHE_SOURCE_DIR) / "examples/plugins";
  auto args = arguments("multi-turn");
  args.insert(args.end(), {(examples / "multi_turn/retry_scheduler.cpp").string(), "--reward_funcs", "task_check",
                           "--multi_turn_scheduler", "retry_on_wrong", "--max_turns", "2", "--max_steps", "2",
                           "--log_completions", "true", "--dataset_shuffle", "false"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(*dir_ / "multi-turn");
  ASSERT_EQ(logs.size(), 2u);
  for (const auto& row : logs) EXPECT_EQ(row["num_turns"].get<double>(), 2.0);
  // The second prompt is task "math": task_check finds the last answer as the completion.
  EXPECT_EQ(logs[1]["rewards/task_check/mean"].get<double>(), 1.0);
  const auto completions = read_jsonl(*dir_ / "multi-turn" / "completions.jsonl");
  ASSERT_EQ(completions.size(), 8u);
  for (const auto& line : completions) {
    ASSERT_EQ(line["messages"].size(), 4u) << line.dump();
    EXPECT_EQ(line["messages"][2]["content"], "That is not right. Check your answer and try again.");
    EXPECT_EQ(line["messages"][3]["content"], line["completion"]);
    EXPECT_EQ(line["num_turns"], 2);
  }
  EXPECT_EQ(json::parse(read_file(*dir_ / "multi-turn" / "args.json"))["loss_scale"], "default");

  // The built-in tool_call scheduler with the example tool: the model calls none, so one turn each.
  const auto tool = (examples / "tool/word_count.cpp").string();
  const auto listed = run({"plugins", "--external_plugins", tool});
  EXPECT_NE(listed.out.find("word_count"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("calculator"), std::string::npos) << listed.out;
  args = arguments("tool-calls");
  args.insert(args.end(), {tool, "--reward_funcs", "constant_one", "--multi_turn_scheduler", "tool_call", "--agent_template",
                           "hermes", "--max_steps", "1"});
  const auto tools = run(args);
  ASSERT_EQ(tools.exit_code, 0) << tools.err;
  EXPECT_EQ(training_logs(*dir_ / "tool-calls").front()["num_turns"].get<double>(), 1.0);
}

// The README's demo data: the shipped prompts (with their solutions) train, and the reward curve
// is plotted.
TEST_F(Grpo, TheShippedArithmeticPromptsTrain) {
  auto args = arguments("shipped");
  args[6] = (fs::path(LATHE_SOURCE_DIR) / "assets/arithmetic_grpo.jsonl").string();
  args.insert(args.end(), {"--reward_funcs", "accuracy", "format", "--max_steps", "2"});
  const auto result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("grpo: 100 prompts"), std::string::npos) << result.err;
  for (const char* plot : {"reward.png", "kl.png", "rewards_MathAccuracy_mean.png", "rewards_Format_mean.png"})
    EXPECT_TRUE(fs::exists(*dir_ / "shipped" / "images" / plot)) << plot;
}

TEST_F(Grpo, SettingsMsSwiftRefusesAreRefusedBeforeAnythingIsWritten) {
  const auto refused = [&](std::vector<std::string> extra, const std::string& fragment, std::size_t index = 0,
                           const std::string& value = "") {
    auto args = arguments("refused");
    if (index) args[index] = value;
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run(args);
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.err.find(fragment), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(*dir_ / "refused"));
  };
  refused({}, "--reward_funcs");
  refused({"--reward_funcs", "constant_one"}, "multiple of --num_generations 4", 16, "6");  // the batch
  refused({"--reward_funcs", "no_such_reward"}, "no_such_reward");
  refused({"--reward_funcs", "constant_one", "--reward_weights", "1", "2"}, "--reward_weights");
  refused({"--reward_funcs", "constant_one", "--loss_type", "sigmoid"}, "grpo takes grpo, bnpo");
  refused({"--reward_funcs", "constant_one"}, "num_generations", 14, "1");
  refused({"--reward_model", (*dir_ / "no-such-model").string()}, "no-such-model");
  refused({"--reward_funcs", "constant_one", "--sync_ref_model", "true"}, "adapters bypassed");
  refused({"--reward_funcs", "constant_one", "--multi_turn_scheduler", "no_such_scheduler"}, "no_such_scheduler");
  refused({"--reward_funcs", "constant_one", "--reward_model", (*dir_ / "model").string(), "--reward_model_plugin", "nope"},
          "nope");
}

}  // namespace
}  // namespace lathe
