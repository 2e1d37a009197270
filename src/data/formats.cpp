#include <fmt/format.h>

#include <array>
#include <fstream>
#include <string_view>

#include "lathe/common/format.h"
#include "lathe/data/dataset.h"
#include "lathe/common/files.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

std::string RowLocation::describe() const {
  return line > 0 ? fmt::format("{}:{}", file, line) : file;
}

namespace {

const json* first_field(const json& row, std::initializer_list<std::string_view> names) {
  for (auto name : names) {
    auto found = row.find(name);
    if (found != row.end() && !found->is_null()) return &*found;
  }
  return nullptr;
}

std::string text_field(const json& value, const RowLocation& where, std::string_view field) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number() || value.is_boolean()) return value.dump();
  fail("{}: field '{}' must be a string, got {}", where.describe(), field, value.type_name());
}

// OpenAI / SWIFT role names -> Lathe's.
std::string normalise_role(std::string role, const RowLocation& where) {
  static const std::array<std::pair<std::string_view, std::string_view>, 10> aliases{{
      {"human", "user"}, {"gpt", "assistant"}, {"bot", "assistant"}, {"model", "assistant"},
      {"function_call", "tool_call"}, {"observation", "tool_response"}, {"tool", "tool_response"},
      {"function", "tool_response"}, {"user", "user"}, {"assistant", "assistant"}}};
  for (auto [from, to] : aliases) {
    if (role == from) return std::string(to);
  }
  if (role == "system" || role == "tool_call" || role == "tool_response") return role;
  fail("{}: unknown role '{}' (expected system, user, assistant, tool_call or tool_response)",
       where.describe(), role);
}

std::optional<bool> loss_field(const json& item, const RowLocation& where) {
  auto loss = item.find("loss");
  if (loss == item.end() || loss->is_null()) return std::nullopt;
  if (!loss->is_boolean()) fail("{}: field 'loss' must be true or false", where.describe());
  return loss->get<bool>();
}

std::optional<double> loss_scale_field(const json& item, const RowLocation& where) {
  auto scale = item.find("loss_scale");
  if (scale == item.end() || scale->is_null()) return std::nullopt;
  if (!scale->is_number()) fail("{}: field 'loss_scale' must be a number", where.describe());
  return scale->get<double>();
}

// One message of a row; an OpenAI assistant message with tool_calls becomes its text (when it
// has any) followed by one tool_call message per call, every one keeping the message's loss and
// loss_scale, as the template writes them as one answer.
void append_message(std::vector<Message>& messages, const json& item, const RowLocation& where,
                    std::string_view role_key, std::string_view content_key) {
  if (!item.is_object()) fail("{}: each message must be an object, got {}", where.describe(), item.type_name());
  auto role = item.find(role_key);
  if (role == item.end() || !role->is_string()) {
    fail("{}: message is missing the string field '{}'", where.describe(), role_key);
  }
  Message message;
  message.role = normalise_role(role->get<std::string>(), where);
  auto content = item.find(content_key);
  if (content != item.end() && !content->is_null()) {
    message.content = text_field(*content, where, content_key);
  }
  message.loss = loss_field(item, where);
  message.loss_scale = loss_scale_field(item, where);
  auto calls = item.find("tool_calls");
  if (calls == item.end() || calls->is_null()) {
    messages.push_back(std::move(message));
    return;
  }
  if (!calls->is_array()) fail("{}: field 'tool_calls' must be a list of calls, got {}", where.describe(), calls->type_name());
  if (!message.content.empty() || calls->empty()) messages.push_back(message);
  for (std::size_t i = 0; i < calls->size(); ++i) {
    auto call = tool_call_message((*calls)[i]);
    if (!call) {
      fail("{}: tool_calls[{}] must be an object {{\"function\": {{\"name\": string, \"arguments\": ...}}}}, got {}",
           where.describe(), i, (*calls)[i].dump().substr(0, 200));
    }
    call->loss = message.loss;
    call->loss_scale = message.loss_scale;
    messages.push_back(std::move(*call));
  }
}

void add_system(Conversation& conversation, const json& row, const RowLocation& where) {
  if (const json* system = first_field(row, {"system"})) {
    conversation.messages.push_back({"system", text_field(*system, where, "system"), {}, {}});
  }
}

void add_history(Conversation& conversation, const json& history, const RowLocation& where) {
  if (!history.is_array()) fail("{}: field 'history' must be a list of [query, response] pairs", where.describe());
  for (const auto& pair : history) {
    if (!pair.is_array() || pair.size() != 2) {
      fail("{}: each 'history' entry must be a [query, response] pair", where.describe());
    }
    conversation.messages.push_back({"user", text_field(pair[0], where, "history"), {}, {}});
    conversation.messages.push_back({"assistant", text_field(pair[1], where, "history"), {}, {}});
  }
}

void read_tools(Conversation& conversation, const json& row, const RowLocation& where) {
  const json* tools = first_field(row, {"tools"});
  if (!tools) return;
  if (tools->is_string()) {
    conversation.tools = json::parse(tools->get<std::string>(), nullptr, false);
    if (conversation.tools.is_discarded()) fail("{}: field 'tools' is a string but not valid JSON", where.describe());
  } else {
    conversation.tools = *tools;
  }
  if (!conversation.tools.is_array()) fail("{}: field 'tools' must be a list of function specs", where.describe());
}

Conversation from_messages(const json& messages, std::string_view field, std::string_view role_key,
                           std::string_view content_key, const RowLocation& where) {
  if (!messages.is_array()) fail("{}: field '{}' must be a list of messages", where.describe(), field);
  Conversation conversation;
  for (const auto& item : messages) append_message(conversation.messages, item, where, role_key, content_key);
  return conversation;
}

// {"conversation": [{"human": q, "assistant": r}, ...]}
Conversation from_turn_pairs(const json& turns, const RowLocation& where) {
  if (!turns.is_array()) fail("{}: field 'conversation' must be a list", where.describe());
  Conversation conversation;
  for (const auto& turn : turns) {
    const json* query = turn.is_object() ? first_field(turn, {"human", "user"}) : nullptr;
    const json* response = turn.is_object() ? first_field(turn, {"assistant", "gpt"}) : nullptr;
    if (!query) fail("{}: each 'conversation' turn needs a 'human' field", where.describe());
    conversation.messages.push_back({"user", text_field(*query, where, "human"), {}, {}});
    if (response) conversation.messages.push_back({"assistant", text_field(*response, where, "assistant"), {}, {}});
  }
  return conversation;
}

Conversation from_query_response(const json& row, const RowLocation& where) {
  Conversation conversation;
  const json* instruction = first_field(row, {"instruction"});
  const json* input = first_field(row, {"input"});
  const json* query = first_field(row, {"query", "prompt", "question", "inputs"});
  std::string query_text;
  if (query) {
    query_text = text_field(*query, where, "query");
  } else if (instruction) {  // alpaca: instruction plus optional input
    query_text = text_field(*instruction, where, "instruction");
    if (input && !text_field(*input, where, "input").empty()) query_text += "\n" + text_field(*input, where, "input");
  } else if (input) {
    query_text = text_field(*input, where, "input");
  } else {
    fail("{}: row has no recognised fields (expected messages, conversations, "
         "instruction/output, query/response or text; got {})", where.describe(), row.dump().substr(0, 200));
  }
  if (const json* history = first_field(row, {"history"})) add_history(conversation, *history, where);
  conversation.messages.push_back({"user", std::move(query_text), {}, {}});
  if (const json* response = first_field(row, {"response", "answer", "output", "completion", "targets", "target"})) {
    conversation.messages.push_back({"assistant", text_field(*response, where, "response"), {}, {}});
  }
  return conversation;
}

}  // namespace

PromptRow to_prompt_row(const json& row, const RowLocation& where) {
  PromptRow result{to_conversation(row, where), std::nullopt};
  auto& messages = result.prompt.messages;
  if (!messages.empty() && messages.back().role == "assistant") {
    result.answer = messages.back().content;
    messages.pop_back();
  }
  if (messages.empty() || messages.back().role != "user") {
    fail("{}: the row must end with a user message (or a user message and its answer)", where.describe());
  }
  return result;
}

json to_messages_json(const Conversation& conversation) {
  json messages = json::array();
  for (const auto& message : conversation.messages) messages.push_back({{"role", message.role}, {"content", message.content}});
  return messages;
}

std::optional<Message> tool_call_message(const json& call) {
  if (!call.is_object()) return std::nullopt;
  const auto function_field = call.find("function");
  const json& function = function_field != call.end() ? *function_field : call;
  if (!function.is_object()) return std::nullopt;
  const auto name = function.find("name");
  if (name == function.end() || !name->is_string()) return std::nullopt;
  json arguments = function.value("arguments", json::object());
  if (arguments.is_string()) {
    json parsed = json::parse(arguments.get<std::string>(), nullptr, false);
    if (!parsed.is_discarded()) arguments = std::move(parsed);
  }
  return Message{"tool_call", json{{"name", *name}, {"arguments", arguments}}.dump(), std::nullopt, std::nullopt};
}

Conversation to_conversation(const json& row, const RowLocation& where) {
  if (!row.is_object()) fail("{}: a row must be a JSON object, got {}", where.describe(), row.type_name());
  Conversation conversation;
  if (const json* messages = first_field(row, {"messages"})) {
    conversation = from_messages(*messages, "messages", "role", "content", where);
  } else if (const json* conversations = first_field(row, {"conversations"})) {
    conversation = from_messages(*conversations, "conversations", "from", "value", where);
  } else if (const json* turns = first_field(row, {"conversation"})) {
    conversation = from_turn_pairs(*turns, where);
  } else if (const json* text = first_field(row, {"text"}); text && !first_field(row, {"query", "instruction", "prompt"})) {
    conversation.messages.push_back({"assistant", text_field(*text, where, "text"), {}, {}});
    return conversation;
  } else {
    conversation = from_query_response(row, where);
  }
  const bool has_system = !conversation.messages.empty() && conversation.messages.front().role == "system";
  if (!has_system) {
    Conversation with_system;
    add_system(with_system, row, where);
    if (!with_system.messages.empty()) {
      conversation.messages.insert(conversation.messages.begin(), with_system.messages.front());
    }
  }
  read_tools(conversation, row, where);
  return conversation;
}

}  // namespace lathe
