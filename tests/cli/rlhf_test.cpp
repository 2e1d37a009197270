// `lathe rlhf` end to end on a tiny model: DPO with LoRA starts at ln 2 and widens the reward
// margin, every type trains and logs ms-swift's keys, full tuning compares with a frozen copy, and
// bad rows or settings stop the run before anything is written.
#include <gtest/gtest.h>

#include <cmath>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const char* const kNames[] = {"Lathe", "Orbit", "Quill", "Tarn"};

// Who-are-you questions whose chosen answer names Lathe and whose rejected one another assistant.
std::vector<json> preference_rows(int count) {
  std::vector<json> rows;
  for (int i = 0; i < count; ++i) {
    const std::string question = i % 2 ? "Who are you?" : "What is your name, number " + std::to_string(i) + "?";
    rows.push_back({{"messages", json::array({{{"role", "user"}, {"content", question}},
                                               {{"role", "assistant"}, {"content", "I am Lathe, a fine-tuning assistant."}}})},
                    {"rejected_response", std::string("I am ") + kNames[1 + i % 3] + ", made by someone else."}});
  }
  return rows;
}

// The same answers as kto rows: each chosen one labelled true, each rejected one false.
std::vector<json> labelled_rows(int count) {
  std::vector<json> rows;
  for (const auto& row : preference_rows(count)) {
    rows.push_back({{"messages", row["messages"]}, {"label", true}});
    auto rejected = row["messages"];
    rejected[1]["content"] = row["rejected_response"];
    rows.push_back({{"messages", rejected}, {"label", false}});
  }
  return rows;
}

std::vector<std::string> rlhf_arguments(const TempDir& dir, const std::string& type, const std::string& output) {
  return {"rlhf", "--rlhf_type", type, "--model", (dir / "model").string(), "--dataset",
          (dir / (type == "kto" ? "kto.jsonl" : "pairs.jsonl")).string(), "--output_dir", (dir / output).string(),
          "--per_device_train_batch_size", "4", "--logging_steps", "1", "--seed", "3", "--save_strategy", "no"};
}

class Rlhf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("rlhf");
    write_tiny_model(*dir_ / "model");
    write_jsonl(*dir_ / "pairs.jsonl", preference_rows(16));
    write_jsonl(*dir_ / "kto.jsonl", labelled_rows(8));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static TempDir* dir_;
};
TempDir* Rlhf::dir_ = nullptr;

TEST_F(Rlhf, DpoWithLoraStartsAtLn2AndWidensTheMargin) {
  auto args = rlhf_arguments(*dir_, "dpo", "dpo-lora");
  args.back() = "steps";  // --save_strategy
  args.insert(args.end(), {"--train_type", "lora", "--lora_rank", "4", "--learning_rate", "5e-2", "--max_steps", "12",
                           "--split_dataset_ratio", "0.25", "--eval_steps", "12", "--save_steps", "12"});
  const auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto run = only_run_dir(*dir_ / "dpo-lora");
  const auto logs = training_logs(run);
  ASSERT_EQ(logs.size(), 12u);
  EXPECT_NEAR(logs.front()["loss"].get<double>(), std::log(2.0), 1e-4) << "the policy starts as its reference";
  for (const char* key : {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                          "logps/rejected", "logits/chosen", "logits/rejected", "grad_norm", "learning_rate"}) {
    EXPECT_TRUE(logs.back().contains(key)) << key;
  }
  EXPECT_GT(logs.back()["rewards/margins"].get<double>(), 0.5);
  EXPECT_EQ(logs.back()["rewards/accuracies"].get<double>(), 1.0);
  EXPECT_LT(logs.back()["loss"].get<double>(), 0.5 * std::log(2.0));
  bool evaluated = false;
  for (const auto& row : read_jsonl(run / "logging.jsonl")) {
    if (row.contains("eval_loss")) {
      evaluated = true;
      EXPECT_TRUE(row.contains("eval_rewards/accuracies")) << row.dump();
    }
  }
  EXPECT_TRUE(evaluated);
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors", "trainer_state.json", "args.json"}) {
    EXPECT_TRUE(fs::exists(run / "checkpoint-12" / file)) << file;
  }
  EXPECT_EQ(json::parse(read_file(run / "args.json"))["rlhf_type"], "dpo");
}

TEST_F(Rlhf, EveryTypeTrainsAndLogsItsOwnKeys) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {"cpo", {"nll_loss", "rewards/margins"}},
      {"simpo", {"nll_loss", "rewards/accuracies"}},
      {"orpo", {"nll_loss", "log_odds_ratio", "log_odds_chosen"}},
      {"kto", {"kl", "rewards/chosen", "rewards/rejected", "logps/chosen"}},
  };
  for (const auto& [type, keys] : cases) {
    auto args = rlhf_arguments(*dir_, type, "type-" + type);
    args.insert(args.end(), {"--train_type", "lora", "--lora_rank", "4", "--learning_rate", "1e-2", "--max_steps", "2"});
    if (type == "kto") args.insert(args.end(), {"--undesirable_weight", "2"});
    const auto result = run_lathe(args);
    ASSERT_EQ(result.exit_code, 0) << type << ": " << result.err;
    const auto run = only_run_dir(*dir_ / ("type-" + type));
    const auto logs = training_logs(run);
    ASSERT_EQ(logs.size(), 2u) << type;
    // ms-swift's loss_scale per type: every answer for orpo (its NLL is an SFT term), else the last.
    EXPECT_EQ(json::parse(read_file(run / "args.json"))["loss_scale"], type == "orpo" ? "default" : "last_round") << type;
    // 8 desirable rows against 8 undesirable ones weighing 2 each: 0.5, outside ms-swift's advice.
    if (type == "kto") EXPECT_NE(result.err.find("recommended [1, 4/3]"), std::string::npos) << result.err;
    for (const auto& key : keys) EXPECT_TRUE(logs.back().contains(key)) << type << ": " << key;
    EXPECT_TRUE(std::isfinite(logs.back()["loss"].get<double>())) << type;
  }
}

TEST_F(Rlhf, FullTuningComparesWithAFrozenCopy) {
  auto args = rlhf_arguments(*dir_, "dpo", "dpo-full");
  args.insert(args.end(), {"--train_type", "full", "--learning_rate", "1e-3", "--max_steps", "2", "--loss_type",
                           "sigmoid", "hinge", "--loss_weights", "0.5", "0.5", "--rpo_alpha", "0.1"});
  const auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(only_run_dir(*dir_ / "dpo-full"));
  ASSERT_EQ(logs.size(), 2u);
  // Policy = reference: 0.5 ln 2 + 0.5 hinge(0) = 0.5 ln 2 + 0.5, plus 0.1 times the NLL.
  const double nll = logs.front()["nll_loss"].get<double>();
  EXPECT_NEAR(logs.front()["loss"].get<double>(), 0.5 * std::log(2.0) + 0.5 + 0.1 * nll, 1e-4);
  EXPECT_NEAR(logs.front()["rewards/margins"].get<double>(), 0.0, 1e-6);
}

TEST_F(Rlhf, APreferenceLossPluginIsListedAndTrains) {
  const auto example = fs::path(LATHE_SOURCE_DIR) / "examples/plugins/preference_loss/offset_dpo.cpp";
  const std::vector<std::string> cache{"LATHE_PLUGIN_CACHE=" + (*dir_ / "plugin-cache").string()};
  const auto listed = run_lathe({"plugins", "--external_plugins", example.string()}, "", cache);
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("offset_dpo"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("bco_pair"), std::string::npos) << "the built-in preference losses are listed";
  auto args = rlhf_arguments(*dir_, "dpo", "plugin");
  args.insert(args.end(), {"--train_type", "lora", "--lora_rank", "4", "--max_steps", "1", "--external_plugins",
                           example.string(), "--loss_type", "offset_dpo", "--plugin_args", R"({"offset_dpo": {"offset": 0.5}})"});
  const auto result = run_lathe(args, "", cache);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(only_run_dir(*dir_ / "plugin"));
  ASSERT_EQ(logs.size(), 1u);
  // Policy = reference (z = 0): -log sigma(-0.5) = log(1 + e^0.5).
  EXPECT_NEAR(logs.front()["loss"].get<double>(), std::log1p(std::exp(0.5)), 1e-4);
}

TEST_F(Rlhf, TheShippedSelfCognitionPairsTrain) {
  auto args = rlhf_arguments(*dir_, "dpo", "shipped");
  args[6] = (fs::path(LATHE_SOURCE_DIR) / "assets/self_cognition_dpo.jsonl").string();
  args.insert(args.end(), {"--train_type", "lora", "--max_steps", "1", "--model_name", "小车", "Lathe Mini",
                           "--model_author", "车床团队", "the Lathe team"});
  const auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("78 rows"), std::string::npos) << result.err;
}

// ms-swift's SFT-then-DPO recipe: --adapters SFT --ref_adapters SFT starts with the policy equal to
// its reference (base + the SFT adapter, held as a frozen copy), so the first loss is ln 2 again.
TEST_F(Rlhf, TheReferenceCanCarryTheSftAdapter) {
  auto first = rlhf_arguments(*dir_, "dpo", "sft-like");
  first.back() = "steps";  // --save_strategy
  first.insert(first.end(), {"--train_type", "lora", "--lora_rank", "4", "--learning_rate", "5e-2", "--max_steps", "3",
                             "--save_steps", "3", "--add_version", "false", "--lora_dropout", "0.1"});
  ASSERT_EQ(run_lathe(first).exit_code, 0);
  const auto adapter = (*dir_ / "sft-like" / "checkpoint-3").string();
  const auto train = [&](const std::string& output, const std::vector<std::string>& extra) {
    auto args = rlhf_arguments(*dir_, "dpo", output);
    args.insert(args.end(), {"--train_type", "lora", "--max_steps", "1", "--adapters", adapter});
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run_lathe(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    const auto logs = training_logs(only_run_dir(*dir_ / output));
    return logs.empty() ? -1.0 : logs.front()["loss"].get<double>();
  };
  EXPECT_NEAR(train("with-ref-adapter", {"--ref_adapters", adapter}), std::log(2.0), 1e-5);
  // Without it the reference is the bare base, which the adapter has moved away from.
  EXPECT_GT(std::abs(train("bare-base", {}) - std::log(2.0)), 1e-3);
}

// A run stopped at a checkpoint and resumed logs the very steps of an unbroken run (the reference
// is rebuilt as it was: the adapters bypassed).
TEST_F(Rlhf, AResumedRunContinuesExactly) {
  const auto train = [&](const std::string& output, const std::string& steps, const std::vector<std::string>& extra) {
    auto args = rlhf_arguments(*dir_, "dpo", output);
    args.back() = "steps";  // --save_strategy
    args.insert(args.end(), {"--train_type", "lora", "--lora_rank", "4", "--learning_rate", "1e-2", "--lr_scheduler_type",
                             "constant", "--save_steps", "2", "--add_version", "false", "--max_steps", steps});
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run_lathe(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
  };
  train("unbroken", "4", {});
  train("resumed", "2", {});
  train("resumed", "4", {"--resume_from_checkpoint", (*dir_ / "resumed" / "checkpoint-2").string()});
  expect_same_steps_after(*dir_ / "unbroken", *dir_ / "resumed", 2, 2, {"loss", "grad_norm", "rewards/margins", "logps/chosen"});
}

// An error names the file and line (or the option), exits non-zero, and writes no run folder.
void expect_refused(const TempDir& dir, std::vector<std::string> args, const std::string& fragment, const std::string& output) {
  const auto result = run_lathe(args);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find(fragment), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(dir / output)) << "a refused run wrote " << output;
}

TEST_F(Rlhf, BadRowsAndSettingsAreRefusedBeforeAnythingIsWritten) {
  auto rows = preference_rows(4);
  rows[2].erase("rejected_response");
  write_jsonl(*dir_ / "missing.jsonl", rows);
  auto args = rlhf_arguments(*dir_, "dpo", "refused-missing");
  args[6] = (*dir_ / "missing.jsonl").string();
  expect_refused(*dir_, args, "missing.jsonl:3", "refused-missing");

  auto labelled = labelled_rows(2);
  labelled[1]["label"] = "true";
  write_jsonl(*dir_ / "string-label.jsonl", labelled);
  args = rlhf_arguments(*dir_, "kto", "refused-label");
  args[6] = (*dir_ / "string-label.jsonl").string();
  expect_refused(*dir_, args, "string-label.jsonl:2", "refused-label");

  args = rlhf_arguments(*dir_, "orpo", "refused-ref");
  args.insert(args.end(), {"--ref_model", (*dir_ / "model").string()});
  expect_refused(*dir_, args, "--ref_model", "refused-ref");

  args = rlhf_arguments(*dir_, "dpo", "refused-loss");
  args.insert(args.end(), {"--loss_type", "sigmoid", "ipo", "--loss_weights", "1"});
  expect_refused(*dir_, args, "--loss_weights", "refused-loss");

  args = rlhf_arguments(*dir_, "kto", "refused-batch");
  args[10] = "1";  // --per_device_train_batch_size 1 without accumulation: no other row to pair with
  expect_refused(*dir_, args, "at least 2 rows", "refused-batch");
}

}  // namespace
}  // namespace lathe::testing
