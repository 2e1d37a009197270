// SWIFT's embedding rows: pairs with a label, groups with rejected_response negatives, and the
// positive_messages / negative_messages layout, each sequence ending with an empty answer.
#include <gtest/gtest.h>

#include "lathe/common/error.h"
#include "lathe/data/dataset.h"

namespace lathe {
namespace {
using nlohmann::json;
using Turns = std::vector<std::pair<std::string, std::string>>;

const RowLocation kWhere{"pairs.jsonl", 4};

Turns turns(const Conversation& conversation) {
  Turns result;
  for (const auto& message : conversation.messages) result.emplace_back(message.role, message.content);
  return result;
}

std::string error_of(const json& row) {
  try {
    to_embedding_row(row, kWhere);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(EmbeddingRows, QueryResponsePairWithLabel) {
  const auto row = to_embedding_row(json{{"query", "a cat"}, {"response", "a kitten"}, {"label", 0.8}}, kWhere);
  EXPECT_EQ(turns(row.anchor), (Turns{{"user", "a cat"}, {"assistant", ""}}));
  EXPECT_EQ(turns(row.positive), (Turns{{"user", "a kitten"}, {"assistant", ""}}));
  EXPECT_TRUE(row.negatives.empty());
  EXPECT_DOUBLE_EQ(row.label, 0.8);
}

// The positive and negatives take the anchor's place in the same conversation (system, history).
TEST(EmbeddingRows, MessagesWithRejectedResponses) {
  const auto row = to_embedding_row(json::parse(R"({"messages": [{"role": "system", "content": "S"},
      {"role": "user", "content": "q"}, {"role": "assistant", "content": "p"}],
      "rejected_response": ["n1", "n2"]})"),
                                    kWhere);
  EXPECT_EQ(turns(row.anchor), (Turns{{"system", "S"}, {"user", "q"}, {"assistant", ""}}));
  EXPECT_EQ(turns(row.positive), (Turns{{"system", "S"}, {"user", "p"}, {"assistant", ""}}));
  ASSERT_EQ(row.negatives.size(), 2u);
  EXPECT_EQ(turns(row.negatives[1]), (Turns{{"system", "S"}, {"user", "n2"}, {"assistant", ""}}));
  EXPECT_DOUBLE_EQ(row.label, 1.0);
  EXPECT_EQ(to_embedding_row(json{{"query", "q"}, {"response", "p"}, {"rejected_response", "n"}}, kWhere).negatives.size(), 1u);
}

TEST(EmbeddingRows, PositiveAndNegativeMessageLists) {
  const auto row = to_embedding_row(json::parse(R"({"messages": [{"role": "user", "content": "q"}],
      "positive_messages": [[{"role": "user", "content": "p"}]],
      "negative_messages": [[{"role": "user", "content": "n1"}], [{"role": "user", "content": "n2"}]],
      "label": false})"),
                                    kWhere);
  EXPECT_EQ(turns(row.anchor), (Turns{{"user", "q"}, {"assistant", ""}}));
  EXPECT_EQ(turns(row.positive), (Turns{{"user", "p"}, {"assistant", ""}}));
  ASSERT_EQ(row.negatives.size(), 2u);
  EXPECT_EQ(turns(row.negatives[0]), (Turns{{"user", "n1"}, {"assistant", ""}}));
  EXPECT_DOUBLE_EQ(row.label, 0.0);
}

TEST(EmbeddingRows, BadRowsNameTheLineAndField) {
  EXPECT_EQ(error_of(json{{"query", "q"}}),
            "pairs.jsonl:4: an embedding row needs the anchor as its last user message and the positive as the answer "
            "(or 'positive_messages')");
  EXPECT_EQ(error_of(json{{"query", "q"}, {"response", "p"}, {"label", "high"}}),
            "pairs.jsonl:4: field 'label' must be a number (the pair's similarity) or a boolean, got \"high\"");
  EXPECT_EQ(error_of(json{{"query", "q"}, {"response", "p"}, {"rejected_response", {1, 2}}}),
            "pairs.jsonl:4: field 'rejected_response' must be a string or a list of strings (the negatives), got [1,2]");
  EXPECT_EQ(error_of(json::parse(R"({"messages": [{"role": "user", "content": "q"}], "positive_messages": []})")),
            "pairs.jsonl:4: field 'positive_messages' must hold exactly one list of messages, got []");
  EXPECT_EQ(error_of(json::parse(R"({"messages": [{"role": "user", "content": "q"}],
      "positive_messages": [[{"role": "assistant", "content": "p"}]]})")),
            "pairs.jsonl:4: 'positive_messages' must end with a user message (the text to embed)");
}

}  // namespace
}  // namespace lathe
