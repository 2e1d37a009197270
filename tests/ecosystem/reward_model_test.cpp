// Reward models that `lathe rlhf --rlhf_type rm` trains, read by transformers and PEFT: the full
// checkpoint loads as AutoModelForSequenceClassification with nothing missing, the LoRA one as a
// PEFT SEQ_CLS adapter (its score head in modules_to_save) on the causal LM it started from, and
// both score chats, batched with right padding so that transformers finds each row's last token
// through config.pad_token_id, as Lathe's sequence_rewards does; a SEQ_CLS adapter that PEFT made
// scores in Lathe as in PEFT.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/arguments.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/model/weights.h"
#include "lathe/plugin/tuner.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"
#include "lathe/train/alignment.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kTolerance = 1e-4;  // float32: summation order, padded batch against packed rows

json chat(const std::string& question, const std::string& answer) {
  return json::array({{{"role", "user"}, {"content", question}}, {{"role", "assistant"}, {"content", answer}}});
}

std::vector<json> preference_rows() {
  std::vector<json> rows;
  for (int i = 0; i < 8; ++i) {
    rows.push_back({{"messages", chat("Which tool turns wood, " + std::to_string(i) + "?", "A lathe turns it.")},
                    {"rejected_response", "A hammer, " + std::string(i % 3 + 1, 'o') + "f course."},
                    {"margin", 0.25 * (i % 3)}});
  }
  return rows;
}

// Chats of different lengths, one of two rounds, encoded as Lathe (and ms-swift) encode a pair's
// sides: the template's default system prompt, and the suffix "<|im_end|>\n", whose newline is the
// token scored; the last one stops at <|im_end|> instead.
std::vector<std::vector<int32_t>> scored_sequences(const fs::path& model) {
  const auto tokenizer = Tokenizer::from_file(model);
  const auto chat_template = Template::for_model(model.string());
  const auto suffix = tokenizer.encode("<|im_end|>\n", false);
  EXPECT_EQ(suffix.size(), 2u);
  std::vector<json> chats{chat("Hi?", "Hello."), chat("Which tool turns wood?", "A lathe turns it, round and round, all day."),
                          chat("And metal?", "A hammer.")};
  chats.push_back(chats[0]);
  for (const auto& message : chats[1]) chats.back().push_back(message);
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& messages : chats) {
    Conversation conversation;
    for (const auto& message : messages) {
      conversation.messages.push_back({message["role"].get<std::string>(), message["content"].get<std::string>()});
    }
    sequences.push_back(chat_template.encode(tokenizer, conversation, false).input_ids);
    EXPECT_TRUE(std::equal(suffix.rbegin(), suffix.rend(), sequences.back().rbegin()));
  }
  sequences.back().pop_back();
  return sequences;
}

torch::Tensor lathe_rewards(CausalLM& model, const std::vector<std::vector<int32_t>>& sequences) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<TokenSequence> spans;
  for (const auto& ids : sequences) spans.push_back({ids, ids});
  return sequence_rewards(model, spans);
}

torch::Tensor oracle_rewards(const json& result) { return torch::tensor(result.at("rewards").get<std::vector<float>>()); }

// The causal LM `base` made a classifier as `lathe rlhf --rlhf_type rm` makes it, with a SEQ_CLS
// adapter on it, whose score head replaces the one the conversion drew.
CausalLM classifier_with_adapter(const fs::path& base, const fs::path& adapter) {
  auto model = load_pretrained(base, torch::kFloat32, {}, ClassifierConversion{1});
  load_adapter_folder(model, adapter, Arguments{}, false);
  return model;
}

TEST(RewardModels, ScoresEqualTransformersAndPeft) {
  TempDir dir("reward-model-scores");
  const auto base = dir / "base";
  ASSERT_TRUE(run_oracle({{"create", "--arch", "qwen2", "--gqa", "--out", base.string(), "--tokenizer",
                           qwen_tokenizer_dir().string(), "--initializer_range", "0.1"}},
                         dir.path()));
  write_jsonl(dir / "pairs.jsonl", preference_rows());
  const auto train = [&](const std::string& train_type, const std::vector<std::string>& tuner) {
    std::vector<std::string> args{"rlhf", "--rlhf_type", "rm", "--model", base.string(), "--dataset",
                                  (dir / "pairs.jsonl").string(), "--output_dir", (dir / train_type).string(),
                                  "--train_type", train_type, "--add_version", "false", "--max_steps", "3",
                                  "--save_steps", "3", "--per_device_train_batch_size", "4", "--torch_dtype", "float32",
                                  "--center_rewards_coefficient", "0.01", "--seed", "5"};
    args.insert(args.end(), tuner.begin(), tuner.end());
    const auto result = run_lathe(args);
    EXPECT_EQ(result.exit_code, 0) << train_type << ": " << result.err;
    return dir / train_type / "checkpoint-3";
  };
  const auto full = train("full", {"--learning_rate", "1e-3"});
  // A large learning rate, so that three steps move the LoRA matrices well away from zero.
  const auto lora = train("lora", {"--learning_rate", "2e-2", "--lora_rank", "4", "--lora_alpha", "8"});
  ASSERT_FALSE(HasFailure());

  const auto sequences = scored_sequences(base);
  std::set<std::size_t> lengths;
  for (const auto& ids : sequences) lengths.insert(ids.size());
  ASSERT_EQ(lengths.size(), sequences.size()) << "every row of the batch padded to a different length";
  write_file_atomic(dir / "sequences.json", json(sequences).dump());
  const auto job = [&](const fs::path& model, const std::string& out, const std::vector<std::string>& extra) {
    std::vector<std::string> args{"rewards", "--model", model.string(), "--sequences", (dir / "sequences.json").string(),
                                  "--out", (dir / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  // And the other way round: an adapter that PEFT made (every LoRA matrix random, the score head
  // transformers' own) scores in Lathe as in PEFT.
  const auto peft_adapter = dir / "peft-seq-cls";
  ASSERT_TRUE(run_oracle({job(full, "full.json", {}), job(base, "lora.json", {"--num_labels", "1", "--adapter", lora.string()}),
                          {"peft_create", "--model", base.string(), "--kind", "lora", "--task_type", "SEQ_CLS", "--out",
                           peft_adapter.string(), "--seed", "3"},
                          job(base, "peft.json", {"--num_labels", "1", "--adapter", peft_adapter.string()})},
                         dir.path()));

  {
    SCOPED_TRACE("full: AutoModelForSequenceClassification");
    const auto expected = json::parse(read_file(dir / "full.json"));
    EXPECT_EQ(expected["loading"], json({{"missing_keys", json::array()}, {"unexpected_keys", json::array()},
                                         {"mismatched_keys", json::array()}}));
    EXPECT_EQ(expected["num_labels"], 1);
    EXPECT_EQ(expected["pad_token_id"], 151643) << "<|endoftext|>, the tokenizer's pad token";
    auto model = load_pretrained(full);
    EXPECT_LE(max_abs_diff(lathe_rewards(model, sequences), oracle_rewards(expected)), kTolerance);
  }
  {
    SCOPED_TRACE("LoRA: AutoModelForSequenceClassification + PeftModel.from_pretrained");
    const auto expected = json::parse(read_file(dir / "lora.json"));
    EXPECT_EQ(expected["adapter_loading"], json({{"missing_keys", json::array()}, {"unexpected_keys", json::array()}}));
    auto model = classifier_with_adapter(base, lora);
    const auto actual = lathe_rewards(model, sequences);
    EXPECT_LE(max_abs_diff(actual, oracle_rewards(expected)), kTolerance);

    // The score head alone (the adapter's, on the untouched base) scores otherwise: the LoRA
    // matrices take part in what PEFT was compared on.
    auto head_only = load_pretrained(base, torch::kFloat32, {}, ClassifierConversion{1});
    {
      torch::NoGradGuard no_grad;
      head_only->output_weight().copy_(load_tensors(lora / "adapter_model.safetensors").at("base_model.model.score.weight"));
    }
    EXPECT_GT(max_abs_diff(actual, lathe_rewards(head_only, sequences)), 1e-3);
  }
  {
    SCOPED_TRACE("PEFT's SEQ_CLS adapter in Lathe");
    const auto expected = json::parse(read_file(dir / "peft.json"));
    auto model = classifier_with_adapter(base, peft_adapter);
    EXPECT_LE(max_abs_diff(lathe_rewards(model, sequences), oracle_rewards(expected)), kTolerance);
  }
}

}  // namespace
}  // namespace lathe::testing
