// Process reward models (plugins.md §8).
//
// `client` judges each (query, response) with an OpenAI-compatible chat model:
//   POST {base}/chat/completions  {"model", "messages": [system judging prompt, user: query +
//   response (+ reference answer)], "temperature": 0}
// base = --prm_api_base or $LATHE_PRM_API_BASE (http[s]://host[:port]/v1), model = --prm_api_model, key = --prm_api_key or $LATHE_PRM_API_KEY (sent as a
// bearer token when set). The reward is the last "Reward: x" of the answer, clamped to [-1, 1].
// An answer without one is an error naming the endpoint and quoting the answer: a silent 0 would
// bias which samples are kept.
#include "lathe/plugin/prm.h"

#include <httplib.h>

#include <algorithm>
#include <cstdlib>
#include <regex>

#include <nlohmann/json.hpp>

#include "common/format.h"

namespace lathe {

namespace {

using nlohmann::json;

constexpr const char* kJudgeInstructions =
    "You judge answers. Read the user's query and the assistant's response below and decide how good "
    "the response is: first whether every step of its reasoning and its final answer are correct, then "
    "whether it is complete and helpful. Explain briefly, then end with one line of the form\n"
    "Reward: x\n"
    "where x is a number from -1 (wrong or harmful) to 1 (fully correct and helpful).";

std::string setting(const std::string& given, const char* environment_variable) {
  if (!given.empty()) return given;
  const char* value = std::getenv(environment_variable);
  return value ? value : "";
}

std::string excerpt(const std::string& text) { return text.size() > 300 ? text.substr(0, 300) + "..." : text; }

struct Endpoint {
  std::string origin;  // http://host:port
  std::string path;    // /v1/chat/completions
  std::string url() const { return origin + path; }
};

Endpoint chat_endpoint(std::string base) {
  const std::size_t scheme_end = base.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : base.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    fail("prm client: --prm_api_base '{}' must start with http:// or https://", base);
  }
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::size_t path_start = base.find('/', scheme_end + 3);
  Endpoint endpoint{base.substr(0, path_start), path_start == std::string::npos ? "" : base.substr(path_start)};
  if (endpoint.origin.size() == scheme_end + 3) fail("prm client: --prm_api_base '{}' names no host", base);
  static constexpr std::string_view route = "/chat/completions";
  if (endpoint.path.size() < route.size() || endpoint.path.compare(endpoint.path.size() - route.size(), route.size(), route) != 0) {
    endpoint.path += route;
  }
  return endpoint;
}

// The last user message before the final assistant response, and that response.
std::pair<std::string, std::string> query_and_response(const Conversation& conversation) {
  const auto& messages = conversation.messages;
  if (messages.empty() || messages.back().role != "assistant") {
    fail("prm client: each request must end with the assistant response to judge (its last message has role '{}')",
         messages.empty() ? std::string("none") : messages.back().role);
  }
  for (std::size_t i = messages.size() - 1; i-- > 0;) {
    if (messages[i].role == "user") return {messages[i].content, messages.back().content};
  }
  fail("prm client: the request has no user message before the response to judge");
}

class ChatJudge : public ProcessRewardModel {
 public:
  ChatJudge(Endpoint endpoint, std::string model, std::string key)
      : endpoint_(std::move(endpoint)), model_(std::move(model)), key_(std::move(key)) {}

  std::vector<std::vector<double>> score(const std::vector<PrmInput>& inputs) override {
    httplib::Client client(endpoint_.origin);
    client.set_connection_timeout(10);
    client.set_read_timeout(300);
    if (!key_.empty()) client.set_bearer_token_auth(key_);
    std::vector<std::vector<double>> rewards;
    for (const auto& input : inputs) rewards.push_back({judge(client, input)});
    return rewards;
  }

 private:
  double judge(httplib::Client& client, const PrmInput& input) const {
    auto [query, response] = query_and_response(input.conversation);
    std::string question = "Query:\n" + query + "\n\nResponse:\n" + response;
    if (input.ground_truth) question += "\n\nReference answer:\n" + *input.ground_truth;
    json body = {{"model", model_},
                 {"messages", json::array({{{"role", "system"}, {"content", kJudgeInstructions}},
                                           {{"role", "user"}, {"content", question}}})},
                 {"temperature", 0}};
    auto result = client.Post(endpoint_.path, body.dump(), "application/json");
    if (!result) fail("prm client: cannot reach {}: {}", endpoint_.url(), httplib::to_string(result.error()));
    if (result->status != 200) {
      fail("prm client: {} answered HTTP {}: {}", endpoint_.url(), result->status, excerpt(result->body));
    }
    const std::string content = answer_content(result->body);
    auto reward = parse_judge_reward(content);
    if (!reward) fail("prm client: the answer of {} has no \"Reward: x\" line: {}", endpoint_.url(), excerpt(content));
    return *reward;
  }

  // choices[0].message.content of a chat-completion reply.
  std::string answer_content(const std::string& body) const {
    const json reply = json::parse(body, nullptr, false);
    const json::json_pointer path("/choices/0/message/content");
    if (!reply.is_object() || !reply.contains(path) || !reply[path].is_string()) {
      fail("prm client: {} did not answer a chat completion (choices[0].message.content): {}", endpoint_.url(),
           excerpt(body));
    }
    return reply[path].get<std::string>();
  }

  Endpoint endpoint_;
  std::string model_;
  std::string key_;
};

}  // namespace

std::optional<double> parse_judge_reward(const std::string& answer) {
  static const std::regex reward_line(R"(Reward:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))");
  std::optional<double> last;
  for (std::sregex_iterator match(answer.begin(), answer.end(), reward_line), end; match != end; ++match) {
    last = std::clamp(std::strtod((*match)[1].str().c_str(), nullptr), -1.0, 1.0);
  }
  return last;
}

Registry<PrmFactory>& prm_registry() {
  static Registry<PrmFactory> registry = [] {
    Registry<PrmFactory> built_ins("prm");
    built_ins.add("client", "asks an OpenAI-compatible chat endpoint (--prm_api_base) for \"Reward: x\" in [-1, 1]",
                  [](const Arguments& arguments) -> std::shared_ptr<ProcessRewardModel> {
                    std::string base = setting(arguments.prm_api_base, "LATHE_PRM_API_BASE");
                    if (base.empty()) fail("prm client: set --prm_api_base or LATHE_PRM_API_BASE (http://host:port/v1)");
                    if (arguments.prm_api_model.empty()) fail("prm client: set --prm_api_model (the judge model's name)");
                    return std::make_shared<ChatJudge>(chat_endpoint(base), arguments.prm_api_model,
                                                       setting(arguments.prm_api_key, "LATHE_PRM_API_KEY"));
                  });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
