// lathe rlhf's rows (dataset.h): a chosen and a rejected conversation, or a labelled one.
#include "lathe/common/format.h"
#include "lathe/data/dataset.h"

namespace lathe {
namespace {

using nlohmann::json;

// The conversation must end with the answer that is judged.
void require_answer(const Conversation& conversation, const RowLocation& where, std::string_view side) {
  if (conversation.messages.empty() || conversation.messages.back().role == "user" ||
      conversation.messages.back().role == "system") {
    fail("{}: the {} conversation must end with the assistant's answer", where.describe(), side);
  }
}

// Everything up to and including the last user message.
std::vector<Message> prompt_of(const Conversation& conversation, const RowLocation& where) {
  std::size_t end = conversation.messages.size();
  while (end > 0 && conversation.messages[end - 1].role != "user") --end;
  if (end == 0) fail("{}: the conversation has no user message to answer", where.describe());
  return {conversation.messages.begin(), conversation.messages.begin() + static_cast<std::ptrdiff_t>(end)};
}

std::vector<Message> rejected_answer(const json& value, const RowLocation& where) {
  if (value.is_string()) return {Message{"assistant", value.get<std::string>(), {}, {}}};
  if (!value.is_array() || value.empty()) {
    fail("{}: field 'rejected_response' must be a string or a list of assistant and tool messages, got {}",
         where.describe(), value.dump().substr(0, 120));
  }
  auto messages = to_conversation(json{{"messages", value}}, where).messages;
  for (const auto& message : messages) {
    if (message.role == "user" || message.role == "system") {
      fail("{}: field 'rejected_response' holds a {} message; it replaces the answer after the last user message, "
           "so it takes assistant and tool messages only (a whole conversation goes in 'rejected_messages')",
           where.describe(), message.role);
    }
  }
  return messages;
}

bool same_single_answer(const std::vector<Message>& chosen, const std::vector<Message>& rejected) {
  return chosen.size() == 1 && rejected.size() == 1 && chosen[0].content == rejected[0].content;
}

}  // namespace

PreferenceRow to_preference_row(const json& row, const RowLocation& where) {
  PreferenceRow result;
  result.chosen = to_conversation(row, where);
  require_answer(result.chosen, where, "chosen");
  const auto response = row.find("rejected_response");
  const auto messages = row.find("rejected_messages");
  const bool has_response = response != row.end() && !response->is_null();
  const bool has_messages = messages != row.end() && !messages->is_null();
  if (has_response == has_messages) {
    fail("{}: a preference row needs exactly one of 'rejected_response' (the rejected answer) and "
         "'rejected_messages' (the rejected conversation), got {}",
         where.describe(), has_response ? "both" : "neither");
  }
  if (has_response) {
    const auto prompt = prompt_of(result.chosen, where);
    const std::vector<Message> chosen_answer(result.chosen.messages.begin() + static_cast<std::ptrdiff_t>(prompt.size()),
                                             result.chosen.messages.end());
    const auto answer = rejected_answer(*response, where);
    if (same_single_answer(chosen_answer, answer)) {
      fail("{}: 'rejected_response' equals the chosen answer; a preference pair needs two different answers",
           where.describe());
    }
    result.rejected.messages = prompt;
    result.rejected.messages.insert(result.rejected.messages.end(), answer.begin(), answer.end());
    result.rejected.tools = result.chosen.tools;
  } else {
    if (!messages->is_array()) {
      fail("{}: field 'rejected_messages' must be a list of messages, got {}", where.describe(), messages->type_name());
    }
    json rejected_row = row;
    rejected_row.erase("rejected_messages");
    rejected_row["messages"] = *messages;
    result.rejected = to_conversation(rejected_row, where);
    require_answer(result.rejected, where, "rejected");
  }
  if (const auto margin = row.find("margin"); margin != row.end() && !margin->is_null()) {
    if (!margin->is_number()) fail("{}: field 'margin' must be a number, got {}", where.describe(), margin->dump());
    result.margin = margin->get<double>();
  }
  return result;
}

LabelledRow to_labelled_row(const json& row, const RowLocation& where) {
  LabelledRow result;
  result.conversation = to_conversation(row, where);
  require_answer(result.conversation, where, "labelled");
  const auto label = row.find("label");
  if (label == row.end() || label->is_null()) {
    fail("{}: a kto row needs 'label': true for a desirable answer, false for an undesirable one", where.describe());
  }
  if (!label->is_boolean()) {
    fail("{}: field 'label' must be a JSON boolean (true or false), got {}", where.describe(), label->dump());
  }
  result.desirable = label->get<bool>();
  return result;
}

}  // namespace lathe
