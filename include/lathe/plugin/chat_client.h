#pragma once
// A client of an OpenAI-compatible chat-completions endpoint (a running `lathe deploy`, vLLM, ...),
// shared by the PRM `client` plugin and `lathe sample --sampler_engine client`.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class ChatCompletionsClient {
 public:
  // base: http[s]://host[:port][/path], "/chat/completions" appended unless the path ends with it.
  // `caller` starts every error message ("prm client"); `base_option` names where base came from.
  // An empty api_key sends no Authorization header.
  ChatCompletionsClient(std::string base, std::string api_key, std::string caller, std::string base_option,
                        int read_timeout_seconds);

  // POSTs body and returns choices[i].message.content of the reply, in order. Unreachable server,
  // a status other than 200, or a reply that is not a chat completion is a lathe::Error naming the
  // URL and quoting the reply.
  std::vector<std::string> complete(const nlohmann::json& body) const;

  std::string url() const { return origin_ + path_; }

 private:
  std::string origin_;  // http://host:port
  std::string path_;    // /v1/chat/completions
  std::string api_key_, caller_;
  int read_timeout_seconds_;
};

}  // namespace lathe

LATHE_API_END
