// ms-swift's own example command lines run with `lathe` in place of `swift`, the hub ids swapped
// for the test's local files: the quick-start LoRA run, inference and export from the checkpoint
// alone (the base model read from its args.json), pre-training, DPO and sampling. SWIFT's arguments that
// mean nothing here are accepted with a notice; a hub id is refused with how to use a local copy.
#include <gtest/gtest.h>

#include "cli/cli_util.h"
#include "lathe/common/files.h"
#include "lathe/model/weights.h"
#include <torch/torch.h>

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class SwiftCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("swift-commands");
    write_tiny_model(*dir_ / "model");
    std::vector<json> alpaca, english;
    for (int i = 0; i < 8; ++i) {
      alpaca.push_back({{"instruction", "把 " + std::to_string(i) + " 加一"}, {"output", std::to_string(i + 1)}});
      english.push_back({{"instruction", "Add one to " + std::to_string(i)}, {"input", ""}, {"output", std::to_string(i + 1)}});
    }
    write_jsonl(*dir_ / "alpaca-gpt4-data-zh.jsonl", alpaca);
    write_jsonl(*dir_ / "alpaca-gpt4-data-en.jsonl", english);
    // ms-swift's quick start, as its README has it, with local paths.
    quick_start_ = run_lathe(
        {"sft", "--model", path("model"), "--train_type", "lora", "--dataset", path("alpaca-gpt4-data-zh.jsonl") + "#8",
         path("alpaca-gpt4-data-en.jsonl") + "#8", std::string(LATHE_SOURCE_DIR) + "/assets/self_cognition.jsonl#8",
         "--torch_dtype", "bfloat16", "--num_train_epochs", "1", "--per_device_train_batch_size", "1",
         "--per_device_eval_batch_size", "1", "--learning_rate", "1e-4", "--lora_rank", "8", "--lora_alpha", "32",
         "--target_modules", "all-linear", "--gradient_accumulation_steps", "16", "--eval_steps", "50", "--save_steps",
         "50", "--save_total_limit", "2", "--logging_steps", "5", "--max_length", "2048", "--output_dir", path("output"),
         "--system", "You are a helpful assistant.", "--warmup_ratio", "0.05", "--dataloader_num_workers", "4",
         "--model_author", "swift", "--model_name", "swift-robot"});
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string path(const std::string& name) { return (*dir_ / name).string(); }
  // The run's last checkpoint folder (checkpoint-N; not an export's checkpoint-N-merged beside it).
  static std::string checkpoint() {
    std::string last;
    int64_t last_step = -1;
    for (const auto& run : fs::directory_iterator(*dir_ / "output")) {
      for (const auto& entry : fs::directory_iterator(run.path())) {
        const auto name = entry.path().filename().string();
        if (!name.starts_with("checkpoint-") || name.find_first_not_of("0123456789", 11) != std::string::npos) continue;
        if (const auto step = std::stoll(name.substr(11)); step > last_step) {
          last_step = step;
          last = entry.path().string();
        }
      }
    }
    return last;
  }

  static TempDir* dir_;
  static CommandResult quick_start_;
};
TempDir* SwiftCommands::dir_ = nullptr;
CommandResult SwiftCommands::quick_start_;

TEST_F(SwiftCommands, QuickStartTrains) {
  ASSERT_EQ(quick_start_.exit_code, 0) << quick_start_.err;
  ASSERT_FALSE(checkpoint().empty());
  const auto saved = json::parse(read_file(fs::path(checkpoint()) / "args.json"));
  EXPECT_EQ(saved["dataloader_num_workers"], 4);
  EXPECT_EQ(saved["model_name"], json({"swift-robot"}));
}

// `swift infer --adapters CKPT`: the base model, template and system come from the checkpoint.
TEST_F(SwiftCommands, InferFromTheCheckpointAlone) {
  ASSERT_EQ(quick_start_.exit_code, 0) << quick_start_.err;
  auto as_trained = run_lathe({"infer", "--adapters", checkpoint(), "--stream", "true", "--temperature", "0",
                               "--max_new_tokens", "8"},
                              "who are you?\n");
  ASSERT_EQ(as_trained.exit_code, 0) << as_trained.err;
  EXPECT_FALSE(as_trained.out.empty());
  // The command line wins over args.json (bfloat16 there): in float32 the merged weights give the
  // greedy answer of base + adapter (bfloat16 rounding of a merge can flip a random model's near ties).
  auto plain = run_lathe({"infer", "--adapters", checkpoint(), "--torch_dtype", "float32", "--temperature", "0",
                          "--max_new_tokens", "8"},
                         "who are you?\n");
  auto merged = run_lathe({"infer", "--adapters", checkpoint(), "--torch_dtype", "float32", "--stream", "true",
                           "--merge_lora", "true", "--infer_backend", "vllm", "--vllm_max_model_len", "8192",
                           "--temperature", "0", "--max_new_tokens", "8"},
                          "who are you?\n");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_EQ(merged.out, plain.out);
  EXPECT_TRUE(contains(merged.err, "--infer_backend has no effect here")) << merged.err;
  EXPECT_TRUE(contains(merged.err, "--vllm_max_model_len has no effect here")) << merged.err;
}

TEST_F(SwiftCommands, ExportMergesFromTheCheckpointAlone) {
  ASSERT_EQ(quick_start_.exit_code, 0) << quick_start_.err;
  auto merged = run_lathe({"export", "--adapters", checkpoint(), "--merge_lora", "true"});
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_TRUE(fs::exists(fs::path(checkpoint() + "-merged") / "model.safetensors"));
  auto pushed = run_lathe({"export", "--adapters", checkpoint(), "--push_to_hub", "true", "--hub_model_id", "me/model",
                           "--hub_token", "secret", "--use_hf", "false"});
  EXPECT_TRUE(contains(pushed.err, "--push_to_hub has no effect here: Lathe reads and writes local folders only"))
      << pushed.err;
  EXPECT_NE(pushed.exit_code, 0);  // nothing left to do without --merge_lora
  EXPECT_TRUE(contains(pushed.err, "nothing to do")) << pushed.err;
}

TEST_F(SwiftCommands, PretrainingWithDeepspeedAndStreaming) {
  std::vector<json> text;
  for (int i = 0; i < 8; ++i) text.push_back({{"text", "Line " + std::to_string(i) + " of a small corpus."}});
  write_jsonl(*dir_ / "chinese-c4.jsonl", text);
  auto result = run_lathe({"pt", "--model", path("model"), "--dataset", path("chinese-c4.jsonl"), "--streaming", "true",
                           "--tuner_type", "full", "--deepspeed", "zero2", "--output_dir", path("pt-output"),
                           "--max_steps", "2", "--attn_impl", "flash_attn", "--lazy_tokenize", "true"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // ms-swift 4 names --train_type --tuner_type.
  for (const auto& run : fs::directory_iterator(*dir_ / "pt-output")) {
    EXPECT_EQ(json::parse(read_file(run.path() / "args.json")).at("train_type"), "full");
  }
  EXPECT_TRUE(contains(result.err, "--deepspeed has no effect here: Lathe trains in one process")) << result.err;
  EXPECT_TRUE(contains(result.err, "--attn_impl has no effect here")) << result.err;
}

// ms-swift's examples/train/rlhf/dpo/lora.sh and its padding-free full-tuning DPO example.
TEST_F(SwiftCommands, DpoExamplesTrain) {
  std::vector<json> pairs;
  for (int i = 0; i < 8; ++i) {
    pairs.push_back({{"messages", json::array({{{"role", "user"}, {"content", "Add one to " + std::to_string(i)}},
                                               {{"role", "assistant"}, {"content", std::to_string(i + 1)}}})},
                     {"rejected_response", std::to_string(i + 2) + " 😀"}});
  }
  write_jsonl(*dir_ / "shareAI-Llama3-DPO-zh-en-emoji.jsonl", pairs);
  const std::vector<std::string> common{
      "rlhf", "--rlhf_type", "dpo", "--model", path("model"), "--dataset", path("shareAI-Llama3-DPO-zh-en-emoji.jsonl"),
      "--split_dataset_ratio", "0.01", "--torch_dtype", "bfloat16", "--num_train_epochs", "1",
      "--per_device_train_batch_size", "1", "--per_device_eval_batch_size", "1", "--eval_steps", "100", "--save_steps",
      "100", "--save_total_limit", "2", "--logging_steps", "5", "--warmup_ratio", "0.05", "--dataloader_num_workers", "4",
      "--dataset_num_proc", "4"};
  auto lora = common;
  lora.insert(lora.end(), {"--train_type", "lora", "--learning_rate", "1e-4", "--lora_rank", "8", "--lora_alpha", "32",
                           "--target_modules", "all-linear", "--gradient_accumulation_steps", "16", "--max_length", "2048",
                           "--output_dir", path("dpo-lora")});
  auto result = run_lathe(lora);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto full = common;
  full.insert(full.end(), {"--train_type", "full", "--learning_rate", "1e-5", "--gradient_accumulation_steps", "1",
                           "--max_length", "8192", "--output_dir", path("dpo-full"), "--save_only_model", "true",
                           "--deepspeed", "zero3", "--attn_impl", "flash_attn", "--padding_free", "true"});
  result = run_lathe(full);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(contains(result.err, "--deepspeed has no effect here")) << result.err;
  for (const char* output : {"dpo-lora", "dpo-full"}) {
    for (const auto& run : fs::directory_iterator(*dir_ / output)) {
      bool rewards_logged = false;
      for (const auto& row : read_jsonl(run.path() / "logging.jsonl")) rewards_logged = rewards_logged || row.contains("rewards/margins");
      EXPECT_TRUE(rewards_logged) << output;
    }
  }
}

TEST_F(SwiftCommands, SamplingWithThePtEngine) {
  auto result = run_lathe({"sample", "--model", path("model"), "--sampler_engine", "pt", "--num_return_sequences", "2",
                           "--dataset", path("alpaca-gpt4-data-zh.jsonl") + "#2", "--output_dir", path("sample-output"),
                           "--max_new_tokens", "4"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(fs::exists(*dir_ / "sample-output" / "sample.jsonl"));
}

TEST_F(SwiftCommands, HubIdsAreRefusedWithHowToUseALocalCopy) {
  auto model = run_lathe({"sft", "--model", "Qwen/Qwen2.5-7B-Instruct", "--dataset", path("alpaca-gpt4-data-en.jsonl")});
  EXPECT_NE(model.exit_code, 0);
  EXPECT_TRUE(contains(model.err, "Qwen/Qwen2.5-7B-Instruct: model folder not found. Lathe reads local folders and files "
                                  "only"))
      << model.err;
  EXPECT_TRUE(contains(model.err, "huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir DIR")) << model.err;
  auto dataset = run_lathe({"sft", "--model", path("model"), "--dataset", "AI-ModelScope/alpaca-gpt4-data-zh#500",
                            "--output_dir", path("hub-output")});
  EXPECT_NE(dataset.exit_code, 0);
  EXPECT_TRUE(contains(dataset.err, "huggingface-cli download --repo-type dataset AI-ModelScope/alpaca-gpt4-data-zh"))
      << dataset.err;
}

// `swift sft --adapters CKPT`: training goes on from the saved adapter, with its own rank and
// targets (--lora_rank is the adapter's business then). With a learning rate of 0 one step changes
// nothing, so the saved adapter is the loaded one, tensor for tensor.
TEST_F(SwiftCommands, SftTrainsOnFromASavedAdapter) {
  ASSERT_EQ(quick_start_.exit_code, 0) << quick_start_.err;
  auto result = run_lathe({"sft", "--model", path("model"), "--adapters", checkpoint(), "--dataset",
                           path("alpaca-gpt4-data-en.jsonl") + "#4", "--output_dir", path("adapter-output"),
                           "--add_version", "false", "--max_steps", "1", "--learning_rate", "0", "--lora_rank", "2",
                           "--per_device_train_batch_size", "2"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto saved = fs::path(path("adapter-output")) / "checkpoint-1";
  EXPECT_EQ(nlohmann::json::parse(read_file(saved / "adapter_config.json"))["r"],
            nlohmann::json::parse(read_file(fs::path(checkpoint()) / "adapter_config.json"))["r"]);
  const auto before = load_tensors(fs::path(checkpoint()) / "adapter_model.safetensors");
  const auto after = load_tensors(saved / "adapter_model.safetensors");
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [key, tensor] : before) {
    ASSERT_TRUE(after.count(key)) << key;
    EXPECT_TRUE(torch::equal(tensor, after.at(key))) << key;
  }

  auto full = run_lathe({"sft", "--model", path("model"), "--adapters", checkpoint(), "--train_type", "full",
                         "--dataset", path("alpaca-gpt4-data-en.jsonl"), "--output_dir", path("full-output")});
  EXPECT_NE(full.exit_code, 0);
  EXPECT_TRUE(contains(full.err, "--train_type full trains a model, not an adapter")) << full.err;
  EXPECT_FALSE(fs::exists(*dir_ / "full-output"));
}

}  // namespace
}  // namespace lathe::testing
