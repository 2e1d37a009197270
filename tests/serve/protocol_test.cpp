// The OpenAI wire format apart from HTTP: request checking, tool calls out of a fixed response,
// and stop strings in streamed text.
#include "serve/openai_protocol.h"

#include <gtest/gtest.h>

namespace lathe::serve {
namespace {

using json = nlohmann::json;

const json kWeatherTool = json::parse(R"({"type": "function", "function": {"name": "get_weather",
  "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})");

json chat_body(json extra = json::object()) {
  json body = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  body.update(extra);
  return body;
}

// The status and param of the ApiError a body gets.
std::pair<int, std::string> rejection(const json& body, bool chat = true) {
  try {
    chat ? parse_chat_request(body, {}) : parse_completion_request(body, {});
  } catch (const ApiError& error) {
    return {error.status, error.param};
  }
  return {0, ""};
}

TEST(OpenAIProtocol, RequestFieldsBecomeSamplingParameters) {
  SamplingParams defaults;
  defaults.max_new_tokens = 99;
  defaults.stop_token_ids = {7};
  auto request = parse_chat_request(
      chat_body({{"max_tokens", 5}, {"temperature", 0.5}, {"top_p", 0.9}, {"seed", 3}, {"n", 2},
                 {"stop", "END"}, {"logprobs", true}, {"top_logprobs", 2}, {"stream", true}}),
      defaults);
  EXPECT_EQ(request.params.max_new_tokens, 5);
  EXPECT_TRUE(request.max_tokens_given);
  EXPECT_DOUBLE_EQ(request.params.temperature, 0.5);
  EXPECT_DOUBLE_EQ(request.params.top_p, 0.9);
  EXPECT_EQ(request.params.seed, 3U);
  EXPECT_EQ(request.params.n, 2);
  EXPECT_EQ(request.params.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(request.params.logprobs);
  EXPECT_EQ(request.params.top_logprobs, 2);
  EXPECT_TRUE(request.stream);
  EXPECT_EQ(request.params.stop_token_ids, std::vector<int32_t>{7});
  ASSERT_EQ(request.conversation.messages.size(), 1U);
  EXPECT_EQ(request.conversation.messages[0].content, "hi");

  auto plain = parse_chat_request(chat_body(), defaults);
  EXPECT_EQ(plain.params.max_new_tokens, 99);
  EXPECT_FALSE(plain.max_tokens_given);
}

// The server's --logprobs / --top_logprobs are defaults for chat as for completions.
TEST(OpenAIProtocol, ServerLogprobDefaultsApplyToChatAndCompletions) {
  SamplingParams defaults;
  defaults.logprobs = true;
  defaults.top_logprobs = 3;
  for (const auto& request : {parse_chat_request(chat_body(), defaults),
                              parse_completion_request(json{{"prompt", "hi"}}, defaults)}) {
    EXPECT_TRUE(request.params.logprobs);
    EXPECT_EQ(request.params.top_logprobs, 3);
  }
  const auto declined = parse_chat_request(chat_body({{"logprobs", false}}), defaults);
  EXPECT_FALSE(declined.params.logprobs);
  EXPECT_EQ(declined.params.top_logprobs, 0);
  EXPECT_EQ(parse_chat_request(chat_body({{"top_logprobs", 1}}), defaults).params.top_logprobs, 1);
}

TEST(OpenAIProtocol, WrongTypesAndValuesAreRejectedNamingTheField) {
  EXPECT_EQ(rejection(chat_body({{"temperature", "hot"}})), std::make_pair(400, std::string("temperature")));
  EXPECT_EQ(rejection(chat_body({{"temperature", 3}})), std::make_pair(400, std::string("temperature")));
  EXPECT_EQ(rejection(chat_body({{"messages", "hi"}})), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(rejection(chat_body({{"messages", json::array()}})), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(rejection(json{{"model", "tiny"}}), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(rejection(chat_body({{"max_tokens", 0}})), std::make_pair(400, std::string("max_tokens")));
  EXPECT_EQ(rejection(chat_body({{"max_tokens", 1.5}})), std::make_pair(400, std::string("max_tokens")));
  EXPECT_EQ(rejection(chat_body({{"n", 0}})), std::make_pair(400, std::string("n")));
  EXPECT_EQ(rejection(chat_body({{"stop", json::array({1})}})), std::make_pair(400, std::string("stop")));
  EXPECT_EQ(rejection(chat_body({{"stream", "yes"}})), std::make_pair(400, std::string("stream")));
  EXPECT_EQ(rejection(chat_body({{"model", 5}})), std::make_pair(400, std::string("model")));
  EXPECT_EQ(rejection(chat_body({{"tools", json::object()}})), std::make_pair(400, std::string("tools")));
  EXPECT_EQ(rejection(chat_body({{"tools", json::array({kWeatherTool})}, {"tool_choice", "sometimes"}})),
            std::make_pair(400, std::string("tool_choice")));
  EXPECT_EQ(rejection(chat_body({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}})),
            std::make_pair(400, std::string("messages[0].role")));
  EXPECT_EQ(rejection(json::array()), std::make_pair(400, std::string("")));
  EXPECT_EQ(rejection(json{{"prompt", 3}}, false), std::make_pair(400, std::string("prompt")));
  for (const auto& prompt : {json::array(), json::array({1, "x"}), json::array({-1}), json::array({json::array({1}), "x"}),
                             json::array({json::array()}), json::array({1.5}), json::array({4294967296LL})}) {
    EXPECT_EQ(rejection(json{{"prompt", prompt}}, false), std::make_pair(400, std::string("prompt"))) << prompt.dump();
  }
  EXPECT_EQ(rejection(json{{"prompt", "x"}, {"logprobs", true}}, false), std::make_pair(400, std::string("logprobs")));
}

TEST(OpenAIProtocol, ErrorBodiesHaveOpenAIsShape) {
  const json body = error_body(400, "bad", "temperature", "invalid_value");
  EXPECT_EQ(body, json::parse(R"({"error": {"message": "bad", "type": "invalid_request_error",
                                             "param": "temperature", "code": "invalid_value"}})"));
  EXPECT_EQ(error_body(401, "no key")["error"]["type"], "authentication_error");
  EXPECT_TRUE(error_body(500, "oops")["error"]["param"].is_null());
}

TEST(OpenAIProtocol, JsonNestedDeeperThanTheLimitIsRefused) {
  const auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  bool too_deep = true;
  EXPECT_FALSE(serve::parse_json(nested(serve::kMaxJsonDepth), &too_deep).is_discarded());
  EXPECT_FALSE(too_deep);
  EXPECT_TRUE(serve::parse_json(nested(serve::kMaxJsonDepth + 1), &too_deep).is_discarded());
  EXPECT_TRUE(too_deep);
  EXPECT_TRUE(serve::parse_json(nested(100000), &too_deep).is_discarded());
  EXPECT_TRUE(too_deep);
  EXPECT_TRUE(serve::parse_json("{\"a\": ", &too_deep).is_discarded());
  EXPECT_FALSE(too_deep);
}

TEST(OpenAIProtocol, ToolChoiceSelectsTheToolsPresented) {
  json other = kWeatherTool;
  other["function"]["name"] = "search";
  const json tools = json::array({kWeatherTool, other});
  EXPECT_EQ(parse_chat_request(chat_body({{"tools", tools}}), {}).tools.size(), 2U);
  EXPECT_TRUE(parse_chat_request(chat_body({{"tools", tools}, {"tool_choice", "none"}}), {}).tools.empty());
  auto named = parse_chat_request(
      chat_body({{"tools", tools}, {"tool_choice", {{"type", "function"}, {"function", {{"name", "search"}}}}}}), {});
  ASSERT_EQ(named.tools.size(), 1U);
  EXPECT_EQ(named.tools[0]["function"]["name"], "search");
}

TEST(OpenAIProtocol, AFixedHermesResponseBecomesToolCalls) {
  auto hermes = agent_template_registry().create("hermes", Arguments{});
  const std::string response =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  const json calls = tool_calls_json(hermes->parse_tool_calls(response));
  ASSERT_EQ(calls.size(), 1U);
  EXPECT_EQ(calls[0]["type"], "function");
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  // OpenAI sends arguments as JSON text.
  EXPECT_EQ(json::parse(calls[0]["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}}));
  EXPECT_TRUE(calls[0]["id"].get<std::string>().starts_with("call_"));
  EXPECT_TRUE(tool_calls_json(hermes->parse_tool_calls("It is sunny.")).empty());
}

TEST(OpenAIProtocol, EarlierToolCallsAndResultsBecomeToolMessages) {
  const json body = chat_body(
      {{"messages", json::parse(R"([
          {"role": "user", "content": "Weather in Paris?"},
          {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])")},
       {"tools", json::array({kWeatherTool})}});
  const auto request = parse_chat_request(body, {});
  const auto& messages = request.conversation.messages;
  ASSERT_EQ(messages.size(), 3U);
  EXPECT_EQ(messages[1].role, "tool_call");
  EXPECT_EQ(json::parse(messages[1].content), json::parse(R"({"name": "get_weather", "arguments": {"city": "Paris"}})"));
  EXPECT_EQ(messages[2].role, "tool_response");
  EXPECT_EQ(messages[2].content, "sunny");
  EXPECT_EQ(request.conversation.tools, json::array({kWeatherTool}));
}

TEST(OpenAIProtocol, StreamedTextNeverShowsAStopString) {
  StopStringFilter filter({"STOP", "\n\n"});
  std::string sent;
  for (const char* piece : {"Hel", "lo S", "T", "OP and more"}) sent += filter.push(piece);
  EXPECT_EQ(sent, "Hello ");
  EXPECT_TRUE(filter.stopped());
  EXPECT_EQ(filter.finish(), "");

  StopStringFilter near_miss({"STOP"});
  std::string text = near_miss.push("a ST");
  text += near_miss.push("AR");
  EXPECT_EQ(text + near_miss.finish(), "a STAR");
  EXPECT_FALSE(near_miss.stopped());

  // Held-back text never ends inside a UTF-8 character.
  StopStringFilter utf8({"xyz"});
  const std::string sent_part = utf8.push("a\xC3\xA9");  // "aé", 3 bytes, 2 held back
  EXPECT_EQ(sent_part, "a");
  EXPECT_EQ(utf8.finish(), "\xC3\xA9");

  EXPECT_EQ(cut_at_stop("one two three", {"three", "two"}), "one ");
  EXPECT_EQ(cut_at_stop("one", {}), "one");
}

}  // namespace
}  // namespace lathe::serve
