// SWIFT's embedding rows (dataset.h): both layouts to one EmbeddingRow.
#include "lathe/common/format.h"
#include "lathe/data/dataset.h"

namespace lathe {
namespace {

using nlohmann::json;

// The conversation's text to embed ends it as a user message followed by an empty answer, as SWIFT
// encodes each side of a pair (the template's end-of-turn tokens then close every sequence).
Conversation with_empty_answer(Conversation conversation, const RowLocation& where, std::string_view field) {
  if (conversation.messages.empty() || conversation.messages.back().role != "user") {
    fail("{}: '{}' must end with a user message (the text to embed)", where.describe(), field);
  }
  conversation.messages.push_back({"assistant", "", {}, {}});
  return conversation;
}

Conversation messages_field(const json& messages, const RowLocation& where, std::string_view field) {
  return with_empty_answer(to_conversation(json{{"messages", messages}}, where), where, field);
}

std::vector<std::string> rejected_texts(const json& value, const RowLocation& where) {
  if (value.is_string()) return {value.get<std::string>()};
  std::vector<std::string> texts;
  if (value.is_array()) {
    for (const auto& item : value) {
      if (!item.is_string()) break;
      texts.push_back(item.get<std::string>());
    }
    if (texts.size() == value.size()) return texts;
  }
  fail("{}: field 'rejected_response' must be a string or a list of strings (the negatives), got {}", where.describe(),
       value.dump().substr(0, 120));
}

double label_field(const json& row, const RowLocation& where) {
  const auto label = row.find("label");
  if (label == row.end() || label->is_null()) return 1.0;
  if (label->is_boolean()) return label->get<bool>() ? 1.0 : 0.0;
  if (label->is_number()) return label->get<double>();
  fail("{}: field 'label' must be a number (the pair's similarity) or a boolean, got {}", where.describe(), label->dump());
}

// {"messages", "positive_messages", "negative_messages"}.
EmbeddingRow from_message_lists(const json& row, const RowLocation& where) {
  EmbeddingRow result;
  result.anchor = with_empty_answer(to_conversation(row, where), where, "messages");
  const auto& positives = row.at("positive_messages");
  if (!positives.is_array() || positives.size() != 1) {
    fail("{}: field 'positive_messages' must hold exactly one list of messages, got {}", where.describe(),
         positives.dump().substr(0, 120));
  }
  result.positive = messages_field(positives[0], where, "positive_messages");
  if (const auto negatives = row.find("negative_messages"); negatives != row.end() && !negatives->is_null()) {
    if (!negatives->is_array()) fail("{}: field 'negative_messages' must be a list of message lists", where.describe());
    for (const auto& messages : *negatives) result.negatives.push_back(messages_field(messages, where, "negative_messages"));
  }
  result.label = label_field(row, where);
  return result;
}

}  // namespace

EmbeddingRow to_embedding_row(const json& row, const RowLocation& where) {
  if (!row.is_object()) fail("{}: a row must be a JSON object, got {}", where.describe(), row.type_name());
  if (row.contains("positive_messages")) return from_message_lists(row, where);
  auto conversation = to_conversation(row, where);
  auto& messages = conversation.messages;
  if (messages.size() < 2 || messages.back().role != "assistant" || messages[messages.size() - 2].role != "user") {
    fail("{}: an embedding row needs the anchor as its last user message and the positive as the answer "
         "(or 'positive_messages')",
         where.describe());
  }
  EmbeddingRow result;
  const auto positive_text = messages.back().content;
  messages.back().content.clear();
  result.anchor = conversation;
  auto replaced = [&](const std::string& text) {
    auto copy = conversation;
    copy.messages[copy.messages.size() - 2].content = text;
    return copy;
  };
  result.positive = replaced(positive_text);
  if (const auto rejected = row.find("rejected_response"); rejected != row.end() && !rejected->is_null()) {
    for (const auto& text : rejected_texts(*rejected, where)) result.negatives.push_back(replaced(text));
  }
  result.label = label_field(row, where);
  return result;
}

}  // namespace lathe
