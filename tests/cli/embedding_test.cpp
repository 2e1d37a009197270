// `lathe sft --task_type embedding` end to end: for each embedding loss, the first step's loss
// equals the loss of the last-token states of every sequence run through the model on its own
// (so the packed row, the pooling and the label layout are checked against a plain forward pass);
// training lowers the loss; bad rows and mismatched arguments are refused clearly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cli/cli_util.h"
#include "lathe/model/model.h"
#include "lathe/model/weights.h"
#include "lathe/plugin/embedding_losses.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// Pairs (anchor, positive, similarity label) and groups (anchor, positive, negatives).
// Similarity scores for cosine_similarity; 1 (similar) or 0 for the contrastive losses.
std::vector<json> pair_rows(bool binary) {
  std::vector<json> rows{{{"query", "a small cat"}, {"response", "a kitten"}, {"label", 0.9}},
                         {{"query", "the red car"}, {"response", "a banana"}, {"label", 0.1}},
                         {{"query", "two plus two"}, {"response", "four"}, {"label", 1}},
                         {{"query", "cold weather"}, {"response", "hot soup is nice"}, {"label", 0}},
                         {{"query", "a quiet night"}, {"response", "silence after dark"}, {"label", 0.8}},
                         {{"query", "fast trains"}, {"response", "green tea"}, {"label", 0.2}}};
  if (binary) {
    for (auto& row : rows) row["label"] = row["label"].get<double>() >= 0.5 ? 1 : 0;
  }
  return rows;
}
std::vector<json> group_rows() {
  return {{{"query", "a small cat"}, {"response", "a kitten"}, {"rejected_response", {"a truck", "the sea"}}},
          {{"messages", {{{"role", "user"}, {"content", "two plus two"}}}},
           {"positive_messages", {{{{"role", "user"}, {"content", "four"}}}}},
           {"negative_messages", {{{{"role", "user"}, {"content", "five"}}}, {{{"role", "user"}, {"content", "blue"}}}}}},
          {{"query", "cold weather"}, {"response", "winter"}, {"rejected_response", {"summer", "a lamp"}}}};
}

// The hidden state of the sequence's last token, the sequence run alone (no packing).
torch::Tensor last_token_state(CausalLM& model, const std::vector<int32_t>& ids) {
  const auto length = static_cast<int64_t>(ids.size());
  const auto input = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).unsqueeze(0);
  const auto positions = torch::arange(length, torch::kLong).unsqueeze(0);
  const auto mask = causal_padding_mask(torch::ones({1, length}, torch::kBool), length);
  return model->forward({input, positions, mask, nullptr}).index({0, length - 1});
}

Conversation to_embed(const std::string& text) {
  Conversation conversation;
  conversation.messages = {{"user", text, {}, {}}, {"assistant", "", {}, {}}};
  return conversation;
}

// SWIFT's rows read by hand: each row's texts (anchor first) and its labels.
struct ReferenceRow {
  std::vector<std::string> texts;
  std::vector<float> labels;
};
ReferenceRow reference_row(const json& row) {
  if (row.contains("positive_messages")) {
    ReferenceRow result{{row["messages"][0]["content"], row["positive_messages"][0][0]["content"]}, {1.0f}};
    for (const auto& negative : row["negative_messages"]) {
      result.texts.push_back(negative[0]["content"]);
      result.labels.push_back(0.0f);
    }
    return result;
  }
  ReferenceRow result{{row["query"], row["response"]}, {row.value("label", 1.0f)}};
  for (const auto& negative : row.value("rejected_response", json::array())) {
    result.texts.push_back(negative);
    result.labels.push_back(0.0f);
  }
  return result;
}

double reference_loss(const fs::path& model_dir, const std::vector<json>& rows, const std::string& loss) {
  torch::NoGradGuard no_grad;
  auto model = load_pretrained(model_dir, torch::kFloat32);
  model->eval();
  const auto tokenizer = Tokenizer::from_file(model_dir);
  const auto chat_template = Template::for_model(model_dir.string());
  std::vector<torch::Tensor> states;
  std::vector<float> labels;
  for (const auto& row : rows) {
    const auto reference = reference_row(row);
    for (const auto& text : reference.texts) {
      states.push_back(last_token_state(model, chat_template.encode(tokenizer, to_embed(text), false).input_ids));
    }
    labels.insert(labels.end(), reference.labels.begin(), reference.labels.end());
  }
  const auto embeddings = torch::stack(states);
  const auto label_tensor = torch::tensor(labels, torch::kFloat32);
  if (loss == "cosine_similarity") return cosine_similarity_loss(embeddings, label_tensor).item<double>();
  if (loss == "contrastive") return contrastive_loss(embeddings, label_tensor).item<double>();
  if (loss == "online_contrastive") return online_contrastive_loss(embeddings, label_tensor).item<double>();
  return infonce_loss(embeddings, label_tensor).item<double>();
}

std::vector<double> logged_losses(const fs::path& output) {
  std::vector<double> losses;
  for (const auto& entry : fs::directory_iterator(output)) {
    for (const auto& row : read_jsonl(entry.path() / "logging.jsonl")) {
      if (row.contains("loss")) losses.push_back(row["loss"].get<double>());
    }
  }
  return losses;
}

CommandResult train_embeddings(const TempDir& dir, const std::vector<json>& rows, const std::string& loss,
                               const std::string& steps, const std::string& learning_rate) {
  write_jsonl(dir / "rows.jsonl", rows);
  return run_lathe({"sft", "--model", (dir / "model").string(), "--dataset", (dir / "rows.jsonl").string(),
                    "--task_type", "embedding", "--loss_type", loss, "--train_type", "full", "--output_dir",
                    (dir / "output").string(), "--per_device_train_batch_size", std::to_string(rows.size()),
                    "--max_steps", steps, "--learning_rate", learning_rate, "--logging_steps", "1", "--save_steps",
                    "100", "--warmup_ratio", "0", "--lr_scheduler_type", "constant"});
}

class EmbeddingLoss : public ::testing::TestWithParam<std::string> {};

TEST_P(EmbeddingLoss, FirstStepEqualsSeparatelyPooledSequences) {
  const auto loss = GetParam();
  TempDir dir("embedding-" + loss);
  write_tiny_model(dir / "model");
  const auto rows = loss == "infonce" ? group_rows() : pair_rows(loss != "cosine_similarity");
  const auto result = train_embeddings(dir, rows, loss, "1", "1e-4");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto losses = logged_losses(dir / "output");
  ASSERT_EQ(losses.size(), 1u);
  const double expected = reference_loss(dir / "model", rows, loss);
  EXPECT_NEAR(losses[0], expected, 1e-5 + 1e-4 * std::abs(expected)) << loss;
  EXPECT_GT(expected, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Losses, EmbeddingLoss,
                         ::testing::Values("cosine_similarity", "contrastive", "online_contrastive", "infonce"));

TEST(EmbeddingTraining, InfoNCELossFalls) {
  TempDir dir("embedding-train");
  write_tiny_model(dir / "model");
  const auto result = train_embeddings(dir, group_rows(), "infonce", "12", "3e-3");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto losses = logged_losses(dir / "output");
  ASSERT_EQ(losses.size(), 12u);
  EXPECT_LT(losses.back(), 0.5 * losses.front()) << losses.front() << " -> " << losses.back();
}

TEST(EmbeddingTraining, RefusesTokenLossesAndRowsWithoutAPositive) {
  TempDir dir("embedding-errors");
  write_tiny_model(dir / "model");
  auto token_loss = train_embeddings(dir, pair_rows(false), "cross_entropy", "1", "1e-4");
  EXPECT_NE(token_loss.exit_code, 0);
  EXPECT_NE(token_loss.err.find("--loss_type cross_entropy trains tokens"), std::string::npos) << token_loss.err;
  auto no_positive = train_embeddings(dir, {{{"query", "a"}, {"response", "b"}}, {{"query", "lonely"}}}, "infonce", "1", "1e-4");
  EXPECT_NE(no_positive.exit_code, 0);
  EXPECT_NE(no_positive.err.find("rows.jsonl:2: an embedding row needs"), std::string::npos) << no_positive.err;
}

}  // namespace
}  // namespace lathe::testing
