// Training against Hugging Face's Trainer + PEFT and against ms-swift itself: the same tiny model,
// the same starting adapter (made by PEFT), the same tokens and the same hyperparameters (AdamW,
// cosine schedule with warm-up, gradient accumulation, clipping, weight decay) give the same loss,
// gradient norm and learning rate at every step; `swift pt`, `swift sft` and `swift rlhf` (DPO, reward
// models) run the very command lines given to `lathe pt`, `lathe sft` and `lathe rlhf` and log their
// shared quantities under the same logging.jsonl keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/files.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// float32 on both sides; what remains is summation order (padded batches against Lathe's
// padding-free rows, and the two attention implementations), compounded over the steps.
constexpr double kLossTolerance = 1e-4;      // relative
constexpr double kGradNormTolerance = 1e-3;  // relative
constexpr std::size_t kSteps = 10;

std::vector<std::string> texts() {
  std::vector<std::string> rows;
  for (int i = 0; i < 8; ++i) {
    std::string text = "Row " + std::to_string(i) + ":";
    for (int word = 0; word <= 3 * i; ++word) text += " word" + std::to_string((word * 7 + i) % 11);
    rows.push_back(text + ".");
  }
  return rows;
}

// One conversation per text, every third of two rounds (the second answer another text's).
std::vector<json> conversations() {
  const auto answers = texts();
  std::vector<json> result;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    json messages = json::array({{{"role", "user"}, {"content", "Question " + std::to_string(i) + "?"}},
                                 {{"role", "assistant"}, {"content", answers[i]}}});
    if (i % 3 == 0) {
      messages.push_back({{"role", "user"}, {"content", "And again?"}});
      messages.push_back({{"role", "assistant"}, {"content", answers[(i + 1) % answers.size()]}});
    }
    result.push_back(messages);
  }
  return result;
}

// The tiny Qwen2 model that transformers makes (with the Qwen tokenizer) for both trainers.
std::vector<std::string> create_job(const fs::path& out, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> job{"create", "--arch", "qwen2", "--gqa", "--out", out.string(), "--tokenizer",
                               qwen_tokenizer_dir().string(), "--initializer_range", "0.1"};
  job.insert(job.end(), extra.begin(), extra.end());
  return job;
}

// The model and, unless empty, a LoRA adapter made by PEFT for it, which both trainers start from.
struct Start {
  fs::path base, adapter;
};
Start make_start(const TempDir& dir) {
  Start start{dir / "base", dir / "start"};
  EXPECT_TRUE(run_oracle({create_job(start.base),
                          {"peft_create", "--model", start.base.string(), "--kind", "lora", "--out", start.adapter.string()}},
                         dir.path()));
  return start;
}

// One step sees all eight rows (4 rows x 2 accumulated micro-batches), so the order within a step,
// which the trainers choose differently, changes neither the loss nor the gradient.
const std::vector<std::pair<std::string, std::string>> kHyperparameters{
    {"--max_steps", "10"}, {"--learning_rate", "5e-3"}, {"--per_device_train_batch_size", "4"},
    {"--gradient_accumulation_steps", "2"}, {"--warmup_steps", "3"}, {"--lr_scheduler_type", "cosine"},
    {"--max_grad_norm", "0.5"}, {"--weight_decay", "0.1"}, {"--adam_beta1", "0.9"}, {"--adam_beta2", "0.999"}};

// One command line for lathe and swift (ms-swift needs --model_type and --template for a folder it
// cannot name itself; Lathe ignores the first with a notice); `overrides` replaces hyperparameters.
std::vector<std::string> command_line(const Start& start, const fs::path& dataset, const fs::path& output,
                                      const std::map<std::string, std::string>& overrides = {}) {
  std::vector<std::string> args{"--model", start.base.string(), "--model_type", "qwen2", "--template", "qwen2_5",
                                "--dataset", dataset.string(),
                                "--output_dir", output.string(), "--add_version", "false", "--packing", "false",
                                "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false",
                                "--split_dataset_ratio", "0", "--torch_dtype", "float32", "--logging_steps", "1",
                                "--save_strategy", "no", "--report_to", "none", "--seed", "1"};
  if (!start.adapter.empty()) args.insert(args.end(), {"--adapters", start.adapter.string()});
  for (const auto& [key, value] : kHyperparameters) {
    const auto changed = overrides.find(key);
    args.insert(args.end(), {key, changed == overrides.end() ? value : changed->second});
  }
  return args;
}

// `lathe <command>` and `swift <command>` (ms-swift's pipeline, in the oracle venv) on one command line.
void run_lathe_and_swift(const std::string& command, const std::string& swift_pipeline, const std::vector<std::string>& lathe_args,
                         const std::vector<std::string>& swift_command) {
  std::vector<std::string> args{command};
  args.insert(args.end(), lathe_args.begin(), lathe_args.end());
  const auto lathe_run = run_lathe(args);
  ASSERT_EQ(lathe_run.exit_code, 0) << lathe_run.err;
  std::vector<std::string> swift_args{"-c", "from swift.pipelines import " + swift_pipeline + "; " + swift_pipeline + "()"};
  swift_args.insert(swift_args.end(), swift_command.begin(), swift_command.end());
  const auto swift_run = run_program(oracle_python(), swift_args, "",
                                     {"OMP_NUM_THREADS=1", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "MODELSCOPE_OFFLINE=1"});
  ASSERT_EQ(swift_run.exit_code, 0) << swift_run.err.substr(swift_run.err.size() > 4000 ? swift_run.err.size() - 4000 : 0);
}

std::vector<json> step_rows(const fs::path& file) {
  std::vector<json> rows;
  for (const auto& row : read_jsonl(file)) {
    if (row.contains("loss") && row.contains("grad_norm")) rows.push_back(row);
  }
  return rows;
}

void expect_same_loss_and_grad_norm(const json& ours, const json& theirs) {
  const double loss = theirs["loss"].get<double>(), grad_norm = theirs["grad_norm"].get<double>();
  EXPECT_NEAR(ours["loss"].get<double>(), loss, kLossTolerance * std::abs(loss));
  EXPECT_NEAR(ours["grad_norm"].get<double>(), grad_norm, kGradNormTolerance * std::abs(grad_norm));
}

// ms-swift's logged `keys` (its alignment metrics) against Lathe's, at one step.
void expect_same_metrics(const json& ours, const json& theirs, const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    ASSERT_TRUE(theirs.contains(key)) << key;
    ASSERT_TRUE(ours.contains(key)) << key;
    const double value = theirs[key].get<double>();
    EXPECT_NEAR(ours[key].get<double>(), value, 1e-3 * std::max(1.0, std::abs(value))) << key;
  }
}

// ms-swift against Lathe, step by step: loss, grad_norm, the learning rate (ms-swift logs the rate
// of the step to come, its scheduler having stepped already; Lathe and Trainer log the rate the
// step used: docs/commands.md), and every key ms-swift logs that Lathe has too.
void expect_swift_steps(const std::vector<json>& lathe, const std::vector<json>& swift) {
  ASSERT_EQ(lathe.size(), kSteps);
  ASSERT_EQ(swift.size(), kSteps);
  for (std::size_t step = 0; step < kSteps; ++step) {
    SCOPED_TRACE("ms-swift, step " + std::to_string(step + 1));
    expect_same_loss_and_grad_norm(lathe[step], swift[step]);
    if (step + 1 < kSteps) {
      EXPECT_NEAR(lathe[step + 1]["learning_rate"].get<double>(), swift[step]["learning_rate"].get<double>(), 1e-8);
    }
    for (const auto& [key, value] : swift[step].items()) {
      if (key == "token_acc") continue;  // not logged by Lathe's training steps (docs/commands.md)
      EXPECT_TRUE(lathe[step].contains(key)) << "ms-swift logs " << key << "; Lathe does not";
    }
  }
  EXPECT_LT(lathe.back()["loss"].get<double>(), 0.9 * lathe.front()["loss"].get<double>()) << "training learns";
}

TEST(Training, PtEqualsTrainerPeftAndSwiftStepByStep) {
  TempDir dir("training-pt");
  const auto start = make_start(dir);
  const auto tokenizer = Tokenizer::from_file(start.base);
  const auto chat_template = Template::for_model(start.base.string());
  std::optional<int32_t> eos;
  for (const auto& word : chat_template.stop_words()) {
    if ((eos = tokenizer.token_to_id(word))) break;
  }
  ASSERT_TRUE(eos);
  std::vector<json> rows;
  json examples = json::array();
  for (const auto& text : texts()) {
    rows.push_back({{"messages", json::array({{{"role", "assistant"}, {"content", text}}})}});
    auto ids = tokenizer.encode(text, true);
    ids.push_back(*eos);  // lathe pt (and swift pt) end every text row with the template's end token
    examples.push_back({{"input_ids", ids}});
  }
  write_jsonl(dir / "text.jsonl", rows);
  write_file_atomic(dir / "examples.json", examples.dump());

  run_lathe_and_swift("pt", "pretrain_main", command_line(start, dir / "text.jsonl", dir / "lathe"),
                      command_line(start, dir / "text.jsonl", dir / "swift"));
  EXPECT_FALSE(fs::exists(dir / "lathe" / "checkpoint-10")) << "--save_strategy no";
  std::vector<std::string> trainer_job{"hf_train", "--model", start.base.string(), "--adapter", start.adapter.string(),
                                       "--examples", (dir / "examples.json").string(), "--out", (dir / "trainer.json").string()};
  for (const auto& [key, value] : kHyperparameters) trainer_job.insert(trainer_job.end(), {key, value});
  ASSERT_TRUE(run_oracle({trainer_job}, dir.path()));

  const auto lathe = step_rows(dir / "lathe" / "logging.jsonl");
  const auto trainer = json::parse(read_file(dir / "trainer.json"));
  ASSERT_EQ(lathe.size(), kSteps);
  ASSERT_EQ(trainer.size(), kSteps);
  for (std::size_t step = 0; step < kSteps; ++step) {
    SCOPED_TRACE("Trainer, step " + std::to_string(step + 1));
    expect_same_loss_and_grad_norm(lathe[step], trainer[step]);
    EXPECT_NEAR(lathe[step]["learning_rate"].get<double>(), trainer[step]["learning_rate"].get<double>(), 1e-9);
  }
  expect_swift_steps(lathe, step_rows(dir / "swift" / "logging.jsonl"));
}

// Conversations (one and two rounds, ms-swift's default system prompt for the qwen2_5 template)
// trained by `lathe sft` and `swift sft` on one command line: the same tokens trained, the same
// losses and gradients.
TEST(Training, SftEqualsSwiftStepByStep) {
  TempDir dir("training-sft");
  const auto start = make_start(dir);
  std::vector<json> rows;
  for (const auto& messages : conversations()) rows.push_back({{"messages", messages}});
  write_jsonl(dir / "chat.jsonl", rows);
  run_lathe_and_swift("sft", "sft_main", command_line(start, dir / "chat.jsonl", dir / "lathe"),
                      command_line(start, dir / "chat.jsonl", dir / "swift"));
  expect_swift_steps(step_rows(dir / "lathe" / "logging.jsonl"), step_rows(dir / "swift" / "logging.jsonl"));
}

// `lathe rlhf` and `swift rlhf` on one command line, DPO from the PEFT adapter (so that the policy
// differs from its reference, the base with the adapter off): the same loss, gradient norm and
// ms-swift's alignment metrics at every step, for two-round conversations (earlier turns are
// context: loss_scale last_round) with rejected answers of other lengths, and a mix of losses.
TEST(Training, DpoEqualsSwiftStepByStep) {
  TempDir dir("training-dpo");
  const auto start = make_start(dir);
  const auto answers = texts();
  const auto chats = conversations();
  std::vector<json> rows;
  for (std::size_t i = 0; i < chats.size(); ++i) {
    rows.push_back({{"messages", chats[i]}, {"rejected_response", answers[(i + 3) % answers.size()] + " Or not."}});
  }
  write_jsonl(dir / "pairs.jsonl", rows);
  const auto with_dpo = [&](const fs::path& output) {
    auto args = command_line(start, dir / "pairs.jsonl", output);
    args.insert(args.begin(), {"--rlhf_type", "dpo", "--beta", "0.2", "--loss_type", "sigmoid", "sft", "--loss_weights",
                               "1.0", "0.5"});
    return args;
  };
  run_lathe_and_swift("rlhf", "rlhf_main", with_dpo(dir / "lathe"), with_dpo(dir / "swift"));
  const auto lathe = step_rows(dir / "lathe" / "logging.jsonl"), swift = step_rows(dir / "swift" / "logging.jsonl");
  ASSERT_EQ(lathe.size(), kSteps);
  ASSERT_EQ(swift.size(), kSteps);
  for (std::size_t step = 0; step < kSteps; ++step) {
    SCOPED_TRACE("ms-swift rlhf, step " + std::to_string(step + 1));
    expect_same_loss_and_grad_norm(lathe[step], swift[step]);
    expect_same_metrics(lathe[step], swift[step],
                        {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                         "logps/rejected", "logits/chosen", "logits/rejected", "nll_loss"});
  }
  EXPECT_GT(std::abs(lathe.front()["loss"].get<double>() - (std::log(2.0) + 0.5 * lathe.front()["nll_loss"].get<double>())), 1e-6)
      << "the starting adapter should set the policy apart from its reference";
  EXPECT_GT(lathe.back()["rewards/margins"].get<double>(), lathe.front()["rewards/margins"].get<double>());
}

// `lathe rlhf --rlhf_type rm` and `swift rlhf --rlhf_type rm` on one command line from `start`:
// the same loss, gradient norm, learning rate and reward metrics at every step, for one- and
// two-round conversations against rejected answers of other lengths, with a margin on most pairs
// and the centring term.
void expect_reward_model_equals_swift(const TempDir& dir, const Start& start, const std::vector<std::string>& tuner,
                                      const std::map<std::string, std::string>& overrides = {}) {
  const auto answers = texts();
  const auto chats = conversations();
  std::vector<json> rows;
  for (std::size_t i = 0; i < chats.size(); ++i) {
    rows.push_back({{"messages", chats[i]},
                    {"rejected_response", answers[(i + 3) % answers.size()] + " Or not."},
                    {"margin", 0.5 * static_cast<double>(i % 4)}});
  }
  write_jsonl(dir / "pairs.jsonl", rows);
  const auto with_rm = [&](const fs::path& output) {
    auto args = command_line(start, dir / "pairs.jsonl", output, overrides);
    args.insert(args.begin(), {"--rlhf_type", "rm", "--center_rewards_coefficient", "0.01"});
    args.insert(args.end(), tuner.begin(), tuner.end());
    return args;
  };
  run_lathe_and_swift("rlhf", "rlhf_main", with_rm(dir / "lathe"), with_rm(dir / "swift"));
  const auto lathe = step_rows(dir / "lathe" / "logging.jsonl"), swift = step_rows(dir / "swift" / "logging.jsonl");
  expect_swift_steps(lathe, swift);
  for (std::size_t step = 0; step < std::min(lathe.size(), swift.size()); ++step) {
    SCOPED_TRACE("ms-swift rlhf rm, step " + std::to_string(step + 1));
    expect_same_metrics(lathe[step], swift[step],
                        {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "center_rewards_loss"});
  }
}

// Every weight of a one-label classifier that transformers made, so that both trainers start from
// the same score head (each would draw its own for a causal LM). A lower learning rate than the
// other tests': at 5e-3 full tuning separates the pairs within five steps, and a loss near zero
// leaves the relative tolerance only its last digits.
TEST(Training, RewardModelEqualsSwiftStepByStep) {
  TempDir dir("training-rm");
  const Start start{dir / "classifier", {}};
  ASSERT_TRUE(run_oracle({create_job(start.base, {"--num_labels", "1"})}, dir.path()));
  expect_reward_model_equals_swift(dir, start, {"--tuner_type", "full"}, {{"--learning_rate", "1e-3"}});
}

// LoRA from an adapter that PEFT made for the causal LM as a SEQ_CLS task: both trainers make a
// classifier of the base, and the adapter brings the score head (modules_to_save) over their own.
TEST(Training, RewardModelLoraEqualsSwiftStepByStep) {
  TempDir dir("training-rm-lora");
  const Start start{dir / "base", dir / "start"};
  ASSERT_TRUE(run_oracle({create_job(start.base), {"peft_create", "--model", start.base.string(), "--kind", "lora",
                                                   "--task_type", "SEQ_CLS", "--out", start.adapter.string()}},
                         dir.path()));
  expect_reward_model_equals_swift(dir, start, {});
}

}  // namespace
}  // namespace lathe::testing
