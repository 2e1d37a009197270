#pragma once
// The OpenAI wire format, apart from HTTP: request bodies to prompts and sampling settings,
// generations to response bodies, errors to error bodies.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/infer/generate.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/template/template.h"

namespace lathe {
class Tokenizer;
}

namespace lathe::serve {

// A failure answered to the client: HTTP status and the fields of the OpenAI error body.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = "", std::string code = "");
  int status;
  std::string param;
  std::string code;
};

// {"error": {"message", "type", "param", "code"}}; type follows from the status as OpenAI names it.
nlohmann::json error_body(int status, const std::string& message, const std::string& param = "",
                          const std::string& code = "");

// Requests nest a few levels (messages, content parts, tool schemas); deeper JSON is refused before
// anything walks it recursively (printing a value back in an error message would).
constexpr int kMaxJsonDepth = 64;
// The parsed text, or a discarded value when it is not JSON or nests deeper than kMaxJsonDepth
// (*too_deep tells which, when given).
nlohmann::json parse_json(const std::string& text, bool* too_deep = nullptr);

// What a /v1/chat/completions or /v1/completions body asks for, checked.
struct CompletionRequest {
  std::optional<std::string> model;
  Conversation conversation;            // chat; its tools are the ones to present
  // Completions: the prompts as text, or as token ids (given as they are, no BOS added); a
  // request answers n choices for each, prompt p's j-th at index p * n + j, as OpenAI does.
  std::vector<std::string> prompts;
  std::vector<std::vector<int32_t>> prompt_ids;
  nlohmann::json tools = nlohmann::json::array();  // the tools to present (after tool_choice)
  SamplingParams params;
  bool max_tokens_given = false;
  bool stream = false;
  bool include_usage = false;           // stream_options.include_usage
};

// `defaults` supplies what the body does not set. Throws ApiError (400) naming the field.
CompletionRequest parse_chat_request(const nlohmann::json& body, const SamplingParams& defaults);
CompletionRequest parse_completion_request(const nlohmann::json& body, const SamplingParams& defaults);

// OpenAI `tool_calls` entries for calls parsed from a response (arguments as JSON text).
nlohmann::json tool_calls_json(const std::vector<ToolCall>& calls);

// The text before the earliest stop string (all of it when none occurs).
std::string cut_at_stop(const std::string& text, const std::vector<std::string>& stops);

// Streaming text with stop strings: holds back the tail that may be the start of a stop string,
// so that no part of a stop string reaches the client.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  // The text that is now safe to send; empty once a stop string has been seen.
  std::string push(const std::string& piece);
  // What was held back, when the generation ended without a stop string.
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::size_t hold_ = 0;  // longest stop string - 1
  std::string pending_;
  bool stopped_ = false;
};

// choices[].logprobs of a chat completion: {"content": [{token, logprob, bytes, top_logprobs}]}.
nlohmann::json chat_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs);
// choices[].logprobs of a text completion: {tokens, token_logprobs, top_logprobs}.
nlohmann::json completion_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs);

}  // namespace lathe::serve
