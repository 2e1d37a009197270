// `lathe rlhf --rlhf_type rm` end to end on a tiny model: a reward model learns to rank held-out
// pairs, its loss is ms-swift's formula of the logged rewards, LoRA saves a PEFT SEQ_CLS adapter
// with the score head, full tuning writes a sequence-classifier folder, a resumed run continues
// exactly, and the commands that cannot use a classifier say so.
#include <gtest/gtest.h>

#include <cmath>

#include "cli/cli_util.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/model/weights.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const char* const kOthers[] = {"Orbit", "Quill", "Tarn"};

// Chosen answers name Lathe, rejected ones another assistant; every row carries `margin`.
std::vector<json> reward_pairs(int count, double margin) {
  std::vector<json> rows;
  for (int i = 0; i < count; ++i) {
    const std::string question = i % 2 ? "Who are you?" : "What is your name, number " + std::to_string(i) + "?";
    rows.push_back({{"messages", json::array({{{"role", "user"}, {"content", question}},
                                               {{"role", "assistant"}, {"content", "I am Lathe, a fine-tuning assistant."}}})},
                    {"rejected_response", std::string("I am ") + kOthers[i % 3] + ", made by someone else."},
                    {"margin", margin}});
  }
  return rows;
}

class RewardModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("reward-model");
    write_tiny_model(*dir_ / "model");
    write_jsonl(*dir_ / "pairs.jsonl", reward_pairs(16, 0.0));
    write_jsonl(*dir_ / "margins.jsonl", reward_pairs(4, 0.5));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> arguments(const std::string& output, const std::string& train_type,
                                            const std::string& dataset = "pairs.jsonl") {
    return {"rlhf", "--rlhf_type", "rm", "--model", (*dir_ / "model").string(), "--dataset",
            (*dir_ / dataset).string(), "--output_dir", (*dir_ / output).string(), "--train_type", train_type,
            "--per_device_train_batch_size", "4", "--logging_steps", "1", "--seed", "3", "--add_version", "false"};
  }
  static TempDir* dir_;
};
TempDir* RewardModel::dir_ = nullptr;

TEST_F(RewardModel, LoraLearnsToRankHeldOutPairsAndSavesAPeftClassifierAdapter) {
  auto args = arguments("lora", "lora");
  args.insert(args.end(), {"--lora_rank", "4", "--learning_rate", "5e-2", "--max_steps", "12", "--split_dataset_ratio",
                           "0.25", "--eval_steps", "12", "--save_steps", "12", "--center_rewards_coefficient", "0.01"});
  const auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto run = *dir_ / "lora";
  const auto logs = training_logs(run);
  ASSERT_EQ(logs.size(), 12u);
  for (const char* key : {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "center_rewards_loss"})
    EXPECT_TRUE(logs.front().contains(key)) << key;
  EXPECT_GT(logs.back()["rewards/margins"].get<double>(), logs.front()["rewards/margins"].get<double>() + 1.0);
  EXPECT_LT(logs.back()["loss"].get<double>(), 0.5 * logs.front()["loss"].get<double>());
  // The four held-out pairs, never trained on, are ranked the right way round.
  json evaluation;
  for (const auto& row : read_jsonl(run / "logging.jsonl"))
    if (row.contains("eval_loss")) evaluation = row;
  ASSERT_FALSE(evaluation.is_null());
  EXPECT_DOUBLE_EQ(evaluation["eval_rewards/accuracies"].get<double>(), 1.0);
  EXPECT_GT(evaluation["eval_rewards/margins"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(run / "images" / "rewards_margins.png"));

  // PEFT's layout for a classifier: task_type SEQ_CLS, the score head saved whole beside LoRA's.
  const auto checkpoint = run / "checkpoint-12";
  const auto config = json::parse(read_file(checkpoint / "adapter_config.json"));
  EXPECT_EQ(config["task_type"], "SEQ_CLS");
  EXPECT_EQ(config["modules_to_save"], json::array({"score"}));
  const auto tensors = load_tensors(checkpoint / "adapter_model.safetensors");
  ASSERT_TRUE(tensors.count("base_model.model.score.weight"));
  EXPECT_EQ(tensors.at("base_model.model.score.weight").sizes(), (std::vector<int64_t>{1, 32}));
  EXPECT_FALSE(tensors.count("base_model.model.score.lora_A.weight")) << "all-linear leaves the head out";
  EXPECT_FALSE(fs::exists(checkpoint / "config.json")) << "an adapter checkpoint has its base's config";

  // A reward model does not generate; its merged export is a classifier folder, not a GGUF file.
  const auto infer = run_lathe({"infer", "--model", (*dir_ / "model").string(), "--adapters", checkpoint.string()}, "Hi\n");
  EXPECT_NE(infer.exit_code, 0);
  EXPECT_NE(infer.err.find("does not generate"), std::string::npos) << infer.err;
  const auto gguf = run_lathe({"export", "--model", (*dir_ / "model").string(), "--adapters", checkpoint.string(),
                               "--to_gguf", "true", "--output_dir", (*dir_ / "rm.gguf").string()});
  EXPECT_NE(gguf.exit_code, 0);
  EXPECT_NE(gguf.err.find("sequence classifier"), std::string::npos) << gguf.err;
  EXPECT_FALSE(fs::exists(*dir_ / "rm.gguf"));
  const auto merged = *dir_ / "lora-merged";
  const auto exported = run_lathe({"export", "--model", (*dir_ / "model").string(), "--adapters", checkpoint.string(),
                                   "--merge_lora", "true", "--output_dir", merged.string()});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  const auto merged_config = json::parse(read_file(merged / "config.json"));
  EXPECT_EQ(merged_config["architectures"], json::array({"Qwen2ForSequenceClassification"}));
  EXPECT_TRUE(torch::equal(load_tensors(merged)["score.weight"], tensors.at("base_model.model.score.weight")));
}

// One pair per step: the logged loss is -log sigma(r_c - r_r - margin) + 0.01 (r_c + r_r)^2 of the
// logged rewards of that very pair.
TEST_F(RewardModel, TheLossIsMsSwiftsFormulaOfTheLoggedRewards) {
  auto args = arguments("formula", "lora", "margins.jsonl");
  args[12] = "1";  // --per_device_train_batch_size
  args.insert(args.end(), {"--learning_rate", "1e-1", "--max_steps", "4", "--center_rewards_coefficient", "0.01",
                           "--save_strategy", "no"});
  const auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto logs = training_logs(*dir_ / "formula");
  ASSERT_EQ(logs.size(), 4u);
  for (const auto& row : logs) {
    const double chosen = row["rewards/chosen"].get<double>(), rejected = row["rewards/rejected"].get<double>();
    const double centring = 0.01 * (chosen + rejected) * (chosen + rejected);
    EXPECT_NEAR(row["center_rewards_loss"].get<double>(), centring, 1e-6);
    EXPECT_NEAR(row["loss"].get<double>(), std::log1p(std::exp(-(chosen - rejected - 0.5))) + centring, 1e-5);
    EXPECT_DOUBLE_EQ(row["rewards/accuracies"].get<double>(), chosen > rejected ? 1.0 : 0.0);
  }
}

TEST_F(RewardModel, FullTuningWritesASequenceClassifierFolder) {
  auto args = arguments("full", "full");
  args.insert(args.end(), {"--learning_rate", "1e-3", "--max_steps", "2", "--save_steps", "2"});
  const auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto checkpoint = *dir_ / "full" / "checkpoint-2";
  const auto config = json::parse(read_file(checkpoint / "config.json"));
  EXPECT_EQ(config["architectures"], json::array({"Qwen2ForSequenceClassification"}));
  EXPECT_EQ(config["id2label"], json({{"0", "LABEL_0"}}));
  // ms-swift's pad token for the classifier, which transformers needs to batch: the tokenizer's.
  EXPECT_EQ(config["pad_token_id"], 151643) << "<|endoftext|>";
  const auto tensors = load_tensors(checkpoint);
  EXPECT_TRUE(tensors.count("score.weight"));
  EXPECT_FALSE(tensors.count("lm_head.weight"));
  auto loaded = load_pretrained(checkpoint);
  EXPECT_TRUE(loaded->is_classifier());
  EXPECT_EQ(loaded->config().num_labels, 1);

  // Training goes on from the classifier folder itself; the causal-LM commands refuse it.
  auto again = arguments("full-again", "lora");
  again[4] = checkpoint.string();
  again.insert(again.end(), {"--max_steps", "1", "--save_strategy", "no"});
  const auto continued = run_lathe(again);
  EXPECT_EQ(continued.exit_code, 0) << continued.err;
  const auto sft = run_lathe({"sft", "--model", checkpoint.string(), "--dataset", (*dir_ / "pairs.jsonl").string(),
                              "--output_dir", (*dir_ / "sft-on-rm").string()});
  EXPECT_NE(sft.exit_code, 0);
  EXPECT_NE(sft.err.find("sequence classifier"), std::string::npos) << sft.err;
  EXPECT_FALSE(fs::exists(*dir_ / "sft-on-rm"));
  const auto infer = run_lathe({"infer", "--model", checkpoint.string()}, "Hi\n");
  EXPECT_NE(infer.exit_code, 0);
  EXPECT_NE(infer.err.find("does not generate"), std::string::npos) << infer.err;
}

// The score head is part of what a checkpoint restores: a resumed run logs the unbroken one's steps.
TEST_F(RewardModel, AResumedRunContinuesExactly) {
  const auto train = [&](const std::string& output, const std::string& steps, const std::vector<std::string>& extra) {
    auto args = arguments(output, "lora");
    args.insert(args.end(), {"--lora_rank", "4", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
                             "--save_steps", "2", "--max_steps", steps});
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run_lathe(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
  };
  train("unbroken", "4", {});
  train("resumed", "2", {});
  train("resumed", "4", {"--resume_from_checkpoint", (*dir_ / "resumed" / "checkpoint-2").string()});
  expect_same_steps_after(*dir_ / "unbroken", *dir_ / "resumed", 2, 2,
                          {"loss", "grad_norm", "rewards/chosen", "rewards/margins"});
}

TEST_F(RewardModel, SettingsItDoesNotTakeAreRefused) {
  const auto refused = [&](std::vector<std::string> extra, const std::string& fragment) {
    auto args = arguments("refused", "lora");
    args.insert(args.end(), extra.begin(), extra.end());
    const auto result = run_lathe(args);
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.err.find(fragment), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(*dir_ / "refused"));
  };
  refused({"--ref_model", (*dir_ / "model").string()}, "--ref_model");
  refused({"--loss_type", "hinge"}, "rm has one loss");
  refused({"--center_rewards_coefficient", "-1"}, "center_rewards_coefficient");
}

}  // namespace
}  // namespace lathe::testing
