// `lathe sft` end to end on a tiny model: the loss falls, the output layout is SWIFT's, a run
// killed with SIGKILL and resumed ends with the same weights, merged adapters equal base+adapter.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>
#include <tuple>

#include "cli/cli_util.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/tuner/lora.h"
#include "lathe/model/weights.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::vector<json> arithmetic_rows(int count) {
  std::vector<json> rows;
  for (int i = 0; i < count; ++i) {
    const int a = i % 7, b = (i * 3) % 5;
    rows.push_back({{"query", "What is " + std::to_string(a) + " plus " + std::to_string(b) + "?"},
                    {"response", "The answer is " + std::to_string(a + b) + "."}});
  }
  return rows;
}

// `lathe sft` on dir/model and dir/train.jsonl, writing into dir/<output>.
std::vector<std::string> common_arguments(const TempDir& dir, const std::string& output = "output") {
  return {"sft", "--model", (dir / "model").string(), "--dataset", (dir / "train.jsonl").string(), "--output_dir",
          (dir / output).string(), "--per_device_train_batch_size", "4", "--logging_steps", "1", "--seed", "3"};
}

TEST(Sft, LossFallsAndTheRunFolderHasSwiftsLayout) {
  TempDir dir("sft-layout");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(32));
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--train_type", "lora", "--lora_rank", "4", "--learning_rate", "2e-2", "--max_steps", "24",
                           "--save_steps", "12", "--split_dataset_ratio", "0.125", "--lora_dropout", "0"});
  auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto run = only_run_dir(dir / "output");
  EXPECT_TRUE(fs::path(run.filename()).string().starts_with("v0-"));
  EXPECT_TRUE(fs::exists(run / "args.json"));
  auto logs = read_jsonl(run / "logging.jsonl");
  std::vector<double> losses;
  bool saw_eval = false;
  for (const auto& row : logs) {
    if (row.contains("loss")) {
      losses.push_back(row["loss"].get<double>());
      for (const char* key : {"grad_norm", "learning_rate", "epoch", "global_step/max_steps", "percentage", "elapsed_time",
                              "remaining_time", "memory(GiB)", "train_speed(s/it)", "tokens/s"}) {
        EXPECT_TRUE(row.contains(key)) << key;
      }
    }
    saw_eval = saw_eval || row.contains("eval_loss");
  }
  ASSERT_GE(losses.size(), 20u);
  EXPECT_LT(losses.back(), 0.6 * losses.front()) << "loss did not fall: " << losses.front() << " -> " << losses.back();
  EXPECT_TRUE(saw_eval);
  for (const char* checkpoint : {"checkpoint-12", "checkpoint-24"}) {
    for (const char* file : {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.json",
                             "rng_state.pt", "trainer_state.json", "args.json", "tokenizer.json", "tokenizer_config.json"}) {
      EXPECT_TRUE(fs::exists(run / checkpoint / file)) << checkpoint << "/" << file;
    }
  }
  auto state = json::parse(read_file(run / "checkpoint-24" / "trainer_state.json"));
  EXPECT_EQ(state["global_step"], 24);
  EXPECT_FALSE(state["log_history"].empty());
  EXPECT_TRUE(fs::exists(run / "images" / "train_loss.png"));
  EXPECT_TRUE(fs::exists(run / "images" / "learning_rate.png"));
  EXPECT_NE(result.err.find("last_model_checkpoint"), std::string::npos);
}

// SWIFT's --early_stop_interval through the CLI: with a learning rate of 0 the evaluation loss
// never improves on the first one, so training stops after the first save and 2 more.
TEST(Sft, EarlyStopIntervalStopsAfterSavesWithoutABetterMetric) {
  TempDir dir("sft-early-stop");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(8));
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--train_type", "full", "--learning_rate", "0", "--max_steps", "10", "--save_steps", "1",
                           "--split_dataset_ratio", "0.25", "--early_stop_interval", "2", "--add_version", "false"});
  auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::vector<int64_t> evaluated;
  for (const auto& row : read_jsonl(dir / "output" / "logging.jsonl")) {
    if (row.contains("eval_loss")) evaluated.push_back(row["global_step"].get<int64_t>());
  }
  EXPECT_EQ(evaluated, (std::vector<int64_t>{1, 2, 3})) << result.err;
  EXPECT_TRUE(fs::is_directory(dir / "output" / "checkpoint-3"));
  EXPECT_FALSE(fs::exists(dir / "output" / "checkpoint-4"));
}

TEST(Sft, ConfigFileGivesArgumentsAndTheCommandLineWins) {
  TempDir dir("sft-config");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(8));
  write_file_atomic(dir / "config.yaml",
                    "train_type: full\nmax_steps: 3\nlearning_rate: 0.5\nsave_steps: 100\n"
                    "plugin_args:\n  infonce: {temperature: 0.2, use_batch: false}\n"
                    "lr_scheduler_kwargs: {min_lr_rate: 0.05}\n");
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--config", (dir / "config.yaml").string(), "--learning_rate", "1e-4"});
  auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto saved = json::parse(read_file(only_run_dir(dir / "output") / "args.json"));
  EXPECT_EQ(saved["train_type"], "full");
  EXPECT_EQ(saved["max_steps"], 3);
  EXPECT_DOUBLE_EQ(saved["learning_rate"].get<double>(), 1e-4);
  EXPECT_EQ(saved["plugin_args"], json::parse(R"({"infonce": {"temperature": 0.2, "use_batch": false}})"));
  EXPECT_EQ(saved["lr_scheduler_kwargs"], json::parse(R"({"min_lr_rate": 0.05})"));
}

// Each plugin's settings live under its name, so two plugins' keys never collide; a flat key is
// refused with the form to use.
TEST(Sft, PluginArgsAreNamespacedByPlugin) {
  auto refused = run_lathe({"sft", "--model", "m", "--dataset", "d.jsonl", "--plugin_args", R"({"focal_gamma": 2})"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("'focal_gamma' is not an object"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find(R"({"custom_loss": {"focal_gamma": 2}})"), std::string::npos) << refused.err;
}

std::map<std::string, torch::Tensor> final_weights(const fs::path& output, int64_t step) {
  return load_tensors(only_run_dir(output) / ("checkpoint-" + std::to_string(step)) / "model.safetensors");
}

TEST(Sft, ResumeAfterSigkillEndsWithTheSameWeights) {
  TempDir dir("sft-resume");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(24));
  const std::vector<std::string> one_thread{"OMP_NUM_THREADS=1"};
  auto arguments_for = [&](const std::string& output) {
    auto args = common_arguments(dir, output);
    args.insert(args.end(), {"--train_type", "full", "--max_steps", "30", "--save_steps", "3", "--learning_rate", "1e-3",
                             "--gradient_accumulation_steps", "2"});
    return args;
  };
  auto straight = run_lathe(arguments_for("straight"), "", one_thread);
  ASSERT_EQ(straight.exit_code, 0) << straight.err;

  // Kill the second run as soon as its first checkpoint is complete, then resume from the newest.
  const auto pid = spawn_lathe(arguments_for("killed"), dir / "killed", one_thread);
  ASSERT_GT(pid, 0);
  fs::path checkpoint;
  for (int i = 0; i < 6000 && checkpoint.empty(); ++i) {
    if (fs::exists(dir / "killed")) {
      for (const auto& run : fs::directory_iterator(dir / "killed")) {
        if (fs::exists(run.path() / "checkpoint-3")) checkpoint = run.path();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_FALSE(checkpoint.empty()) << "no checkpoint appeared";
  int64_t newest = 0;
  for (const auto& entry : fs::directory_iterator(checkpoint)) {
    const auto name = entry.path().filename().string();
    if (name.starts_with("checkpoint-")) newest = std::max<int64_t>(newest, std::stoll(name.substr(11)));
  }
  ASSERT_LT(newest, 30) << "the run finished before it could be killed";
  auto resume = arguments_for("resumed");
  resume.insert(resume.end(), {"--resume_from_checkpoint", (checkpoint / ("checkpoint-" + std::to_string(newest))).string()});
  auto resumed = run_lathe(resume, "", one_thread);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;

  auto expected = final_weights(dir / "straight", 30);
  auto actual = final_weights(dir / "resumed", 30);
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, tensor] : expected) {
    EXPECT_TRUE(torch::equal(tensor, actual.at(name))) << name << " differs after resuming from step " << newest;
  }
}

TEST(Sft, MergedExportEqualsBasePlusAdapter) {
  TempDir dir("sft-merge");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(8));
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--train_type", "lora", "--max_steps", "4", "--learning_rate", "1e-2", "--use_dora", "true"});
  auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto adapter = only_run_dir(dir / "output") / "checkpoint-4";
  auto exported = run_lathe({"export", "--model", (dir / "model").string(), "--adapters", adapter.string(), "--merge_lora",
                             "true", "--output_dir", (dir / "merged").string()});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_TRUE(fs::exists(dir / "merged" / "tokenizer.json"));

  auto with_adapter = load_pretrained(dir / "model");
  load_adapter(with_adapter, adapter, false);
  auto merged = load_pretrained(dir / "merged");
  with_adapter->eval();
  merged->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::tensor({{9707, 1879, 11, 1246, 525, 498}}, torch::kLong);
  auto positions = torch::arange(6, torch::kLong).unsqueeze(0);
  auto expected = with_adapter->logits(with_adapter->forward({ids, positions, {}, nullptr}));
  auto actual = merged->logits(merged->forward({ids, positions, {}, nullptr}));
  EXPECT_LT((expected - actual).abs().max().item<double>(), 1e-4);
}

TEST(Sft, BadRowsStopTheRunUnlessStrictIsOff) {
  TempDir dir("sft-strict");
  write_tiny_model(dir / "model");
  auto rows = arithmetic_rows(8);
  rows.insert(rows.begin() + 3, json{{"messages", "not a list"}});
  write_jsonl(dir / "train.jsonl", rows);
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--max_steps", "1", "--train_type", "full"});
  auto strict = run_lathe(args);
  EXPECT_EQ(strict.exit_code, 1);
  EXPECT_NE(strict.err.find("train.jsonl:4"), std::string::npos) << strict.err;
  EXPECT_NE(strict.err.find("'messages'"), std::string::npos) << strict.err;
  args.insert(args.end(), {"--strict", "false"});
  auto lenient = run_lathe(args);
  ASSERT_EQ(lenient.exit_code, 0) << lenient.err;
  EXPECT_NE(lenient.err.find("8 rows"), std::string::npos) << lenient.err;
  EXPECT_NE(lenient.err.find("1 bad rows skipped"), std::string::npos) << lenient.err;
}

// A row whose shape only a later stage trips over (a malformed tool call; a self-cognition "tag"
// that is not a string) is still a file:line error on an encoding worker, never an abort.
TEST(Sft, RowsThatFailInsideEncodingWorkersAreBadRows) {
  TempDir dir("sft-worker-errors");
  write_tiny_model(dir / "model");
  const auto bad_call = json::parse(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "assistant", "tool_calls": ["x"]}]})");
  const auto bad_tag = json{{"query", "who are you?"}, {"response", "I am {{NAME}}."}, {"tag", 5}};
  for (const auto& [row, position, where, what] : {std::tuple{bad_call, 2, "train.jsonl:3", "tool_calls[0]"},
                                                   std::tuple{bad_tag, 4, "train.jsonl:5", "type must be string"}}) {
    auto rows = arithmetic_rows(8);
    rows.insert(rows.begin() + position, row);
    write_jsonl(dir / "train.jsonl", rows);
    auto args = common_arguments(dir);
    args.insert(args.end(), {"--max_steps", "1", "--train_type", "full", "--model_name", "Lathe", "--dataset_num_proc", "2"});
    auto strict = run_lathe(args);
    EXPECT_EQ(strict.exit_code, 1) << strict.err;
    EXPECT_NE(strict.err.find(where), std::string::npos) << strict.err;
    EXPECT_NE(strict.err.find(what), std::string::npos) << strict.err;
    args.insert(args.end(), {"--strict", "false"});
    auto lenient = run_lathe(args);
    ASSERT_EQ(lenient.exit_code, 0) << lenient.err;
    EXPECT_NE(lenient.err.find("1 bad rows skipped"), std::string::npos) << lenient.err;
  }
}

TEST(Sft, NonFiniteLossesAreSkippedThenStopTheRun) {
  TempDir dir("sft-nan");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(16));
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--train_type", "full", "--learning_rate", "1e30", "--max_grad_norm", "0", "--max_steps", "20",
                           "--max_nan_steps", "2", "--save_steps", "1"});
  auto result = run_lathe(args);
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find("not finite in 2 consecutive steps"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("the step is skipped"), std::string::npos) << result.err;
}

TEST(Sft, SaveTotalLimitKeepsTheBestAndTheLast) {
  TempDir dir("sft-limit");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(16));
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--train_type", "lora", "--max_steps", "8", "--save_steps", "2", "--save_total_limit", "1",
                           "--split_dataset_ratio", "0.25", "--learning_rate", "1e-2"});
  auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto run = only_run_dir(dir / "output");
  std::vector<std::string> kept;
  for (const auto& entry : fs::directory_iterator(run)) {
    if (entry.path().filename().string().starts_with("checkpoint-")) kept.push_back(entry.path().filename().string());
  }
  auto state = json::parse(read_file(run / "checkpoint-8" / "trainer_state.json"));
  const auto best = fs::path(state["best_model_checkpoint"].get<std::string>()).filename().string();
  EXPECT_TRUE(std::find(kept.begin(), kept.end(), "checkpoint-8") != kept.end());
  EXPECT_TRUE(std::find(kept.begin(), kept.end(), best) != kept.end()) << best;
  EXPECT_LE(kept.size(), 2u);
}

TEST(Sft, StreamingTrainsAndResumesExactly) {
  TempDir dir("sft-streaming");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", arithmetic_rows(10));  // fewer rows than one run consumes: epochs wrap
  const std::vector<std::string> one_thread{"OMP_NUM_THREADS=1"};
  auto arguments_for = [&](const std::string& output) {
    auto args = common_arguments(dir, output);
    args.insert(args.end(), {"--streaming", "true", "--train_type", "full", "--max_steps", "8", "--save_steps", "4",
                             "--learning_rate", "1e-3"});
    return args;
  };
  auto straight = run_lathe(arguments_for("straight"), "", one_thread);
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  auto resume = arguments_for("resumed");
  resume.insert(resume.end(), {"--resume_from_checkpoint", (only_run_dir(dir / "straight") / "checkpoint-4").string()});
  auto resumed = run_lathe(resume, "", one_thread);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  auto expected = final_weights(dir / "straight", 8);
  auto actual = final_weights(dir / "resumed", 8);
  for (const auto& [name, tensor] : expected) EXPECT_TRUE(torch::equal(tensor, actual.at(name))) << name;
  auto without_steps = common_arguments(dir);
  without_steps.insert(without_steps.end(), {"--streaming", "true"});
  auto refused = run_lathe(without_steps);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("--max_steps"), std::string::npos) << refused.err;
}

TEST(Pt, TrainsEveryTokenOfTextRows) {
  TempDir dir("pt");
  write_tiny_model(dir / "model");
  std::vector<json> rows;
  for (int i = 0; i < 12; ++i) rows.push_back({{"text", "Line " + std::to_string(i) + ": the quick brown fox jumps."}});
  write_jsonl(dir / "train.jsonl", rows);
  auto args = common_arguments(dir);
  args.insert(args.end(), {"--train_type", "full", "--max_steps", "6", "--learning_rate", "1e-3", "--max_length", "64"});
  args[0] = "pt";
  auto result = run_lathe(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // Every token but the first of each row is trained.
  EXPECT_NE(result.err.find("12 rows"), std::string::npos) << result.err;
  auto logs = read_jsonl(only_run_dir(dir / "output") / "logging.jsonl");
  ASSERT_FALSE(logs.empty());
}

TEST(Tokenize, CommandPrintsIdsAndDecodes) {
  auto encoded = run_lathe({"tokenize", "--model", qwen_tokenizer_dir().string()}, "Hello world\n你好\n");
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
  EXPECT_EQ(encoded.out, "[9707,1879]\n[108386]\n");
  auto decoded = run_lathe({"tokenize", "--model", qwen_tokenizer_dir().string(), "--decode"}, "[9707, 1879]\n");
  ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_EQ(decoded.out, "\"Hello world\"\n");
}

}  // namespace
}  // namespace lathe::testing
