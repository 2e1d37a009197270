#include "lathe/plugin/chat_client.h"

#include <httplib.h>

#include "lathe/common/format.h"

namespace lathe {
namespace {

using nlohmann::json;

std::string excerpt(const std::string& text) { return text.size() > 300 ? text.substr(0, 300) + "..." : text; }

}  // namespace

ChatCompletionsClient::ChatCompletionsClient(std::string base, std::string api_key, std::string caller,
                                             std::string base_option, int read_timeout_seconds)
    : api_key_(std::move(api_key)), caller_(std::move(caller)), read_timeout_seconds_(read_timeout_seconds) {
  const std::size_t scheme_end = base.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : base.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https")
    fail("{}: {} '{}' must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)", caller_, base_option, base);
  while (!base.empty() && base.back() == '/') base.pop_back();
  const std::size_t path_start = base.find('/', scheme_end + 3);
  origin_ = base.substr(0, path_start);
  path_ = path_start == std::string::npos ? "" : base.substr(path_start);
  if (origin_.size() == scheme_end + 3) fail("{}: {} '{}' names no host", caller_, base_option, base);
  if (!path_.ends_with("/chat/completions")) path_ += "/chat/completions";
}

std::vector<std::string> ChatCompletionsClient::complete(const json& body) const {
  httplib::Client client(origin_);
  client.set_connection_timeout(10);
  client.set_read_timeout(read_timeout_seconds_);
  if (!api_key_.empty()) client.set_bearer_token_auth(api_key_);
  auto result = client.Post(path_, body.dump(), "application/json");
  if (!result) fail("{}: cannot reach {}: {}", caller_, url(), httplib::to_string(result.error()));
  if (result->status != 200) fail("{}: {} answered HTTP {}: {}", caller_, url(), result->status, excerpt(result->body));
  const json reply = json::parse(result->body, nullptr, false);
  if (!reply.is_object() || !reply.contains("choices") || !reply["choices"].is_array() || reply["choices"].empty())
    fail("{}: {} did not answer a chat completion (no choices): {}", caller_, url(), excerpt(result->body));
  std::vector<std::string> contents;
  const json::json_pointer content("/message/content");
  for (const auto& choice : reply["choices"]) {
    if (!choice.is_object() || !choice.contains(content) || !choice[content].is_string())
      fail("{}: {} answered a choice without message.content: {}", caller_, url(), excerpt(result->body));
    contents.push_back(choice[content].get<std::string>());
  }
  return contents;
}

}  // namespace lathe
