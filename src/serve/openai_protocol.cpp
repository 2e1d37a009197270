#include "serve/openai_protocol.h"

#include <algorithm>
#include <limits>
#include <random>

#include <fmt/format.h>

#include "lathe/data/dataset.h"
#include "lathe/tokenizer/tokenizer.h"
#include "lathe/plugin/tool_json.h"

namespace lathe::serve {

using nlohmann::json;

ApiError::ApiError(int status_code, const std::string& message, std::string param_name, std::string error_code)
    : std::runtime_error(message), status(status_code), param(std::move(param_name)), code(std::move(error_code)) {}

json error_body(int status, const std::string& message, const std::string& param, const std::string& code) {
  const char* type = status == 401   ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status < 500  ? "invalid_request_error"
                                     : "server_error";
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

json parse_json(const std::string& text, bool* too_deep) {
  bool deep = false;
  // nlohmann's parser keeps its own stack, so only what is built from the value needs the limit.
  auto limit = [&deep](int depth, json::parse_event_t, json&) {
    deep = deep || depth >= kMaxJsonDepth;  // the outermost value is depth 0
    return !deep;
  };
  json value = json::parse(text, limit, /*allow_exceptions=*/false);
  if (too_deep) *too_deep = deep;
  return deep ? json(json::value_t::discarded) : value;
}

namespace {

[[noreturn]] void invalid(const std::string& param, const std::string& message) {
  throw ApiError(400, fmt::format("'{}': {}", param, message), param, "invalid_value");
}

// A field that is absent or null is not set.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number(const json& body, const char* name, double low, double high) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  if (!value->is_number()) invalid(name, fmt::format("expected a number, got {}", value->dump()));
  const double x = value->get<double>();
  if (!(x >= low && x <= high)) invalid(name, fmt::format("{} is outside [{}, {}]", x, low, high));
  return x;
}

std::optional<int64_t> integer(const json& body, const char* name, int64_t low, int64_t high) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  if (!value->is_number_integer()) invalid(name, fmt::format("expected an integer, got {}", value->dump()));
  const int64_t x = value->get<int64_t>();
  if (x < low || x > high) invalid(name, fmt::format("{} is outside [{}, {}]", x, low, high));
  return x;
}

std::optional<bool> boolean(const json& body, const char* name) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  if (!value->is_boolean()) invalid(name, fmt::format("expected true or false, got {}", value->dump()));
  return value->get<bool>();
}

std::vector<std::string> stop_strings(const json& body) {
  const json* value = field(body, "stop");
  if (!value) return {};
  if (value->is_string()) return {value->get<std::string>()};
  std::vector<std::string> stops;
  if (value->is_array()) {
    for (const auto& stop : *value) {
      if (!stop.is_string()) invalid("stop", "expected a string or a list of strings");
      if (!stop.get<std::string>().empty()) stops.push_back(stop.get<std::string>());
    }
    return stops;
  }
  invalid("stop", "expected a string or a list of strings");
}

// Settings shared by both endpoints.
CompletionRequest parse_common(const json& body, const SamplingParams& defaults) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_json");
  CompletionRequest request;
  if (const json* model = field(body, "model")) {
    if (!model->is_string()) invalid("model", "expected a string");
    request.model = model->get<std::string>();
  }
  SamplingParams& params = request.params;
  params = defaults;
  const int64_t kMaxTokens = int64_t{1} << 40;
  auto max_tokens = integer(body, "max_completion_tokens", 1, kMaxTokens);
  if (!max_tokens) max_tokens = integer(body, "max_tokens", 1, kMaxTokens);
  request.max_tokens_given = max_tokens.has_value();
  params.max_new_tokens = max_tokens.value_or(defaults.max_new_tokens);
  params.temperature = number(body, "temperature", 0.0, 2.0).value_or(defaults.temperature);
  params.top_p = number(body, "top_p", 1e-9, 1.0).value_or(defaults.top_p);
  params.top_k = std::max<int64_t>(0, integer(body, "top_k", -1, int64_t{1} << 31).value_or(defaults.top_k));
  params.min_p = number(body, "min_p", 0.0, 1.0).value_or(defaults.min_p);
  params.presence_penalty = number(body, "presence_penalty", -2.0, 2.0).value_or(defaults.presence_penalty);
  params.frequency_penalty = number(body, "frequency_penalty", -2.0, 2.0).value_or(defaults.frequency_penalty);
  params.repetition_penalty = number(body, "repetition_penalty", 1e-6, 100.0).value_or(defaults.repetition_penalty);
  if (auto seed = integer(body, "seed", INT64_MIN, INT64_MAX)) params.seed = static_cast<uint64_t>(*seed);
  params.n = integer(body, "n", 1, 64).value_or(1);
  params.stop = stop_strings(body);
  for (const auto& stop : defaults.stop) params.stop.push_back(stop);
  request.stream = boolean(body, "stream").value_or(false);
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) invalid("stream_options", "expected an object");
    request.include_usage = boolean(*options, "include_usage").value_or(false);
  }
  return request;
}

std::string message_text(const json& content, std::size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) invalid(param, "expected a string or a list of content parts");
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
      invalid(param, "only text parts ({\"type\": \"text\", \"text\": ...}) are supported");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

// An assistant message's tool calls, as tool_call messages {"name", "arguments"} (one per call),
// which the chat template writes through its agent template.
std::vector<Message> tool_call_messages(const json& message, std::size_t index) {
  const json* calls = field(message, "tool_calls");
  if (!calls) return {};
  const std::string param = fmt::format("messages[{}].tool_calls", index);
  if (!calls->is_array()) invalid(param, "expected a list");
  std::vector<Message> out;
  for (std::size_t i = 0; i < calls->size(); ++i) {
    auto call = tool_call_message((*calls)[i]);
    if (!call) invalid(param, "each call needs function.name");
    out.push_back(std::move(*call));
  }
  return out;
}

Conversation parse_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) invalid("messages", "is required");
  if (!messages->is_array() || messages->empty()) invalid("messages", "expected a non-empty list of messages");
  Conversation conversation;
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    if (!message.is_object()) invalid(fmt::format("messages[{}]", i), "expected an object");
    const json* role = field(message, "role");
    if (!role || !role->is_string()) invalid(fmt::format("messages[{}].role", i), "expected a string");
    std::string name = role->get<std::string>();
    if (name == "developer") name = "system";
    if (name == "tool") name = "tool_response";
    if (name != "system" && name != "user" && name != "assistant" && name != "tool_response") {
      invalid(fmt::format("messages[{}].role", i), fmt::format("unknown role '{}' (expected system, user, assistant or tool)", name));
    }
    std::string text = message_text(message.contains("content") ? message["content"] : json(nullptr), i);
    auto calls = name == "assistant" ? tool_call_messages(message, i) : std::vector<Message>{};
    if (calls.empty() || !text.empty()) conversation.messages.push_back({name, std::move(text), {}, {}});
    for (auto& call : calls) conversation.messages.push_back(std::move(call));
  }
  return conversation;
}

json parse_tools(const json& body) {
  const json* tools = field(body, "tools");
  if (!tools) return json::array();
  if (!tools->is_array()) invalid("tools", "expected a list of tools");
  for (std::size_t i = 0; i < tools->size(); ++i) {
    const json& tool = (*tools)[i];
    if (!tool.is_object()) invalid(fmt::format("tools[{}]", i), "expected an object");
    const json& function = unwrap_tool(tool);
    if (!function.is_object() || !function.contains("name") || !function["name"].is_string()) {
      invalid(fmt::format("tools[{}]", i), "expected {\"type\": \"function\", \"function\": {\"name\", ...}}");
    }
  }
  const json* choice = field(body, "tool_choice");
  if (!choice || (choice->is_string() && (*choice == "auto" || *choice == "required"))) return *tools;
  if (choice->is_string() && *choice == "none") return json::array();
  const json* function = choice->is_object() ? field(*choice, "function") : nullptr;
  if (!function || !function->is_object() || !function->contains("name") || !(*function)["name"].is_string()) {
    invalid("tool_choice", "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\"}}");
  }
  json chosen = json::array();
  for (const auto& tool : *tools) {
    if (unwrap_tool(tool)["name"] == (*function)["name"]) chosen.push_back(tool);
  }
  if (chosen.empty()) invalid("tool_choice", fmt::format("no tool is named {}", (*function)["name"].dump()));
  return chosen;
}

}  // namespace

CompletionRequest parse_chat_request(const json& body, const SamplingParams& defaults) {
  CompletionRequest request = parse_common(body, defaults);
  request.conversation = parse_messages(body);
  request.tools = parse_tools(body);
  if (!request.tools.empty()) request.conversation.tools = request.tools;
  // Chat: logprobs is a flag and top_logprobs the count of alternatives; the server's --logprobs
  // and --top_logprobs are the defaults, as for completions.
  request.params.logprobs = boolean(body, "logprobs").value_or(defaults.logprobs);
  request.params.top_logprobs = integer(body, "top_logprobs", 0, 20).value_or(request.params.logprobs ? defaults.top_logprobs : 0);
  if (request.params.top_logprobs > 0 && !request.params.logprobs) invalid("top_logprobs", "requires logprobs: true");
  return request;
}

namespace {

// A list of token ids, each a non-negative 32-bit integer.
std::optional<std::vector<int32_t>> token_ids(const json& value) {
  if (!value.is_array() || value.empty()) return std::nullopt;
  std::vector<int32_t> ids;
  for (const auto& id : value) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      return std::nullopt;
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

// "prompt": a string, a list of strings, a list of token ids, or a list of such lists.
void read_prompts(const json& prompt, CompletionRequest& request) {
  constexpr const char* kExpected = "expected a string, a list of strings, a list of token ids or a list of such lists";
  if (prompt.is_string()) {
    request.prompts = {prompt.get<std::string>()};
    return;
  }
  if (!prompt.is_array() || prompt.empty()) invalid("prompt", kExpected);
  if (auto ids = token_ids(prompt)) {
    request.prompt_ids = {std::move(*ids)};
    return;
  }
  for (const auto& item : prompt) {
    if (item.is_string() && request.prompt_ids.empty()) {
      request.prompts.push_back(item.get<std::string>());
    } else if (auto ids = token_ids(item); ids && request.prompts.empty()) {
      request.prompt_ids.push_back(std::move(*ids));
    } else {
      invalid("prompt", kExpected);
    }
  }
}

}  // namespace

CompletionRequest parse_completion_request(const json& body, const SamplingParams& defaults) {
  CompletionRequest request = parse_common(body, defaults);
  const json* prompt = field(body, "prompt");
  if (!prompt) invalid("prompt", "is required");
  read_prompts(*prompt, request);
  // Completions: logprobs is the count of alternatives (0 = the chosen tokens only).
  if (auto count = integer(body, "logprobs", 0, 20)) {
    request.params.logprobs = true;
    request.params.top_logprobs = *count;
  }
  return request;
}

json tool_calls_json(const std::vector<ToolCall>& calls) {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  json out = json::array();
  for (const auto& call : calls) {
    out.push_back({{"id", fmt::format("call_{:016x}", random())},
                   {"type", "function"},
                   {"function",
                    {{"name", call.name},
                     {"arguments", call.arguments.is_string() ? call.arguments.get<std::string>() : call.arguments.dump()}}}});
  }
  return out;
}

std::string cut_at_stop(const std::string& text, const std::vector<std::string>& stops) {
  std::size_t end = text.size();
  for (const auto& stop : stops) {
    if (!stop.empty()) end = std::min(end, text.find(stop));
  }
  return text.substr(0, end);
}

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& stop : stops_) hold_ = std::max(hold_, stop.empty() ? 0 : stop.size() - 1);
}

std::string StopStringFilter::push(const std::string& piece) {
  if (stopped_) return "";
  pending_ += piece;
  std::string before = cut_at_stop(pending_, stops_);
  if (before.size() < pending_.size()) {
    stopped_ = true;
    pending_.clear();
    return before;
  }
  if (pending_.size() <= hold_) return "";
  std::size_t ready = pending_.size() - hold_;
  // Never split a UTF-8 character: move the cut back past continuation bytes.
  while (ready > 0 && (static_cast<unsigned char>(pending_[ready]) & 0xC0) == 0x80) --ready;
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StopStringFilter::finish() {
  std::string out = stopped_ ? "" : cut_at_stop(pending_, stops_);
  pending_.clear();
  return out;
}

namespace {

json token_entry(const Tokenizer& tokenizer, int32_t id, float logprob) {
  const std::string text = tokenizer.decode(std::vector<int32_t>{id});
  json bytes = json::array();
  for (unsigned char byte : text) bytes.push_back(static_cast<int>(byte));
  return {{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
}

}  // namespace

json chat_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs) {
  json content = json::array();
  for (const auto& step : logprobs) {
    json entry = token_entry(tokenizer, step.token, step.logprob);
    entry["top_logprobs"] = json::array();
    for (const auto& [id, logprob] : step.top) entry["top_logprobs"].push_back(token_entry(tokenizer, id, logprob));
    content.push_back(std::move(entry));
  }
  return {{"content", content}};
}

json completion_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array();
  for (const auto& step : logprobs) {
    tokens.push_back(tokenizer.decode(std::vector<int32_t>{step.token}));
    token_logprobs.push_back(step.logprob);
    json alternatives = json::object();
    for (const auto& [id, logprob] : step.top) alternatives[tokenizer.decode(std::vector<int32_t>{id})] = logprob;
    top.push_back(std::move(alternatives));
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}};
}

}  // namespace lathe::serve
