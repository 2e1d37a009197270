// Training against Hugging Face's Trainer + PEFT and against ms-swift itself: the same tiny model,
// the same starting adapter (made by PEFT), the same tokens and the same hyperparameters (AdamW,
// cosine schedule with warm-up, gradient accumulation, clipping, weight decay) give the same loss,
// gradient norm and learning rate at every step; `swift pt` runs the very command line given to
// `lathe pt` and logs its shared quantities under the same logging.jsonl keys.
#include <gtest/gtest.h>

#include <cmath>
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

std::vector<std::string> texts() {
  std::vector<std::string> rows;
  for (int i = 0; i < 8; ++i) {
    std::string text = "Row " + std::to_string(i) + ":";
    for (int word = 0; word <= 3 * i; ++word) text += " word" + std::to_string((word * 7 + i) % 11);
    rows.push_back(text + ".");
  }
  return rows;
}

// `lathe pt` on the text rows, one optimizer step seeing all eight of them (4 rows x 2 accumulated
// micro-batches), so the order within a step, which the two trainers choose differently, does not
// change the loss or the gradient.
TEST(Training, LatheEqualsTrainerPeftAndSwiftStepByStep) {
  TempDir dir("hf-trainer");
  const auto base = dir / "base";
  ASSERT_TRUE(run_oracle({{"create", "--arch", "qwen2", "--gqa", "--out", base.string(), "--tokenizer",
                           qwen_tokenizer_dir().string(), "--initializer_range", "0.1"},
                          {"peft_create", "--model", base.string(), "--kind", "lora", "--out", (dir / "start").string()}},
                         dir.path()));

  const auto tokenizer = Tokenizer::from_file(base);
  const auto chat_template = Template::for_model(base.string());
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
    ids.push_back(*eos);  // lathe pt ends every text row with the template's end token
    examples.push_back({{"input_ids", ids}});
  }
  write_jsonl(dir / "text.jsonl", rows);
  write_file_atomic(dir / "examples.json", examples.dump());

  // One command line for `lathe pt` and `swift pt` (ms-swift needs --model_type and --template for
  // a folder it cannot name itself; Lathe ignores the first with a notice).
  const std::vector<std::pair<std::string, std::string>> hyperparameters{
      {"--max_steps", "10"}, {"--learning_rate", "5e-3"}, {"--per_device_train_batch_size", "4"},
      {"--gradient_accumulation_steps", "2"}, {"--warmup_steps", "3"}, {"--lr_scheduler_type", "cosine"},
      {"--max_grad_norm", "0.5"}, {"--weight_decay", "0.1"}, {"--adam_beta1", "0.9"}, {"--adam_beta2", "0.999"}};
  auto command_line = [&](const std::string& output) {
    std::vector<std::string> args{"--model", base.string(), "--model_type", "qwen2", "--template", "qwen2_5",
                                  "--adapters", (dir / "start").string(), "--dataset", (dir / "text.jsonl").string(),
                                  "--output_dir", (dir / output).string(), "--add_version", "false", "--packing", "false",
                                  "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false",
                                  "--split_dataset_ratio", "0", "--torch_dtype", "float32", "--logging_steps", "1",
                                  "--save_strategy", "no", "--report_to", "none", "--seed", "1"};
    for (const auto& [key, value] : hyperparameters) args.insert(args.end(), {key, value});
    return args;
  };
  std::vector<std::string> lathe_args = command_line("lathe");
  lathe_args.insert(lathe_args.begin(), "pt");
  const auto lathe_run = run_lathe(lathe_args);
  ASSERT_EQ(lathe_run.exit_code, 0) << lathe_run.err;
  EXPECT_FALSE(fs::exists(dir / "lathe" / "checkpoint-10")) << "--save_strategy no";

  std::vector<std::string> swift_args{"-c", "from swift.pipelines import pretrain_main; pretrain_main()"};
  const auto swift_command = command_line("swift");
  swift_args.insert(swift_args.end(), swift_command.begin(), swift_command.end());
  const auto swift_run = run_program(oracle_python(), swift_args, "",
                                     {"OMP_NUM_THREADS=1", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "MODELSCOPE_OFFLINE=1"});
  ASSERT_EQ(swift_run.exit_code, 0) << swift_run.err.substr(swift_run.err.size() > 4000 ? swift_run.err.size() - 4000 : 0);

  std::vector<std::string> trainer_job{"hf_train", "--model", base.string(), "--adapter", (dir / "start").string(),
                                       "--examples", (dir / "examples.json").string(), "--out", (dir / "trainer.json").string()};
  for (const auto& [key, value] : hyperparameters) trainer_job.insert(trainer_job.end(), {key, value});
  ASSERT_TRUE(run_oracle({trainer_job}, dir.path()));

  auto step_rows = [](const fs::path& file) {
    std::vector<json> rows;
    for (const auto& row : read_jsonl(file)) {
      if (row.contains("loss") && row.contains("grad_norm")) rows.push_back(row);
    }
    return rows;
  };
  const auto lathe_steps = step_rows(dir / "lathe" / "logging.jsonl");
  const auto swift_steps = step_rows(dir / "swift" / "logging.jsonl");
  const auto trainer_steps = json::parse(read_file(dir / "trainer.json"));
  ASSERT_EQ(lathe_steps.size(), 10u);
  ASSERT_EQ(trainer_steps.size(), 10u);
  ASSERT_EQ(swift_steps.size(), 10u);
  for (std::size_t step = 0; step < 10; ++step) {
    SCOPED_TRACE("step " + std::to_string(step + 1));
    const auto& ours = lathe_steps[step];
    for (const auto* theirs : {&trainer_steps[step], &swift_steps[step]}) {
      const double loss = (*theirs)["loss"].get<double>(), grad_norm = (*theirs)["grad_norm"].get<double>();
      EXPECT_NEAR(ours["loss"].get<double>(), loss, kLossTolerance * std::abs(loss));
      EXPECT_NEAR(ours["grad_norm"].get<double>(), grad_norm, kGradNormTolerance * std::abs(grad_norm));
    }
    EXPECT_NEAR(ours["learning_rate"].get<double>(), trainer_steps[step]["learning_rate"].get<double>(), 1e-9);
    // ms-swift logs the rate of the step to come (its scheduler has already stepped); Lathe and
    // Trainer log the rate this step used (docs/commands.md).
    if (step + 1 < 10) {
      EXPECT_NEAR(lathe_steps[step + 1]["learning_rate"].get<double>(), swift_steps[step]["learning_rate"].get<double>(), 1e-8);
    }
    for (const auto& [key, value] : swift_steps[step].items()) {
      if (key == "token_acc") continue;  // not logged by Lathe's training steps (docs/commands.md)
      EXPECT_TRUE(ours.contains(key)) << "ms-swift logs " << key << "; Lathe does not";
    }
  }
  EXPECT_LT(lathe_steps.back()["loss"].get<double>(), 0.9 * lathe_steps.front()["loss"].get<double>()) << "training learns";
}

}  // namespace
}  // namespace lathe::testing
