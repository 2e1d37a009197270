// Process reward models (docs/plugins.md).
//
// `client` judges each (query, response) with an OpenAI-compatible chat model:
//   POST {base}/chat/completions  {"model", "messages": [system judging prompt, user: query +
//   response (+ reference answer)], "temperature": 0}
// base = --prm_api_base or $LATHE_PRM_API_BASE (http[s]://host[:port]/v1), model = --prm_api_model, key = --prm_api_key or $LATHE_PRM_API_KEY (sent as a
// bearer token when set). The reward is the last "Reward: x" of the answer, clamped to [-1, 1].
// An answer without one is an error naming the endpoint and quoting the answer: a silent 0 would
// bias which samples are kept.
#include "lathe/plugin/prm.h"
#include "lathe/plugin/judge_reward.h"

#include <algorithm>
#include <cstdlib>
#include <regex>

#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/plugin/chat_client.h"

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

std::string excerpt(const std::string& text) { return text.size() > 300 ? text.substr(0, 300) + "..." : text; }

class ChatJudge : public ProcessRewardModel {
 public:
  ChatJudge(ChatCompletionsClient client, std::string model) : client_(std::move(client)), model_(std::move(model)) {}

  std::vector<std::vector<double>> score(const std::vector<PrmInput>& inputs) override {
    std::vector<std::vector<double>> rewards;
    for (const auto& input : inputs) rewards.push_back({judge(input)});
    return rewards;
  }

 private:
  double judge(const PrmInput& input) const {
    auto [query, response] = query_and_response(input.conversation);
    std::string question = "Query:\n" + query + "\n\nResponse:\n" + response;
    if (input.ground_truth) question += "\n\nReference answer:\n" + *input.ground_truth;
    json body = {{"model", model_},
                 {"messages", json::array({{{"role", "system"}, {"content", kJudgeInstructions}},
                                           {{"role", "user"}, {"content", question}}})},
                 {"temperature", 0}};
    const std::string content = client_.complete(body).front();
    auto reward = parse_judge_reward(content);
    if (!reward) fail("prm client: the answer of {} has no \"Reward: x\" line: {}", client_.url(), excerpt(content));
    return *reward;
  }

  ChatCompletionsClient client_;
  std::string model_;
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
                  [](const PluginContext& context) -> std::shared_ptr<ProcessRewardModel> {
                    std::string base = setting(context.arguments.prm_api_base, "LATHE_PRM_API_BASE");
                    if (base.empty()) fail("prm client: set --prm_api_base or LATHE_PRM_API_BASE (http://host:port/v1)");
                    if (context.arguments.prm_api_model.empty()) fail("prm client: set --prm_api_model (the judge model's name)");
                    ChatCompletionsClient client(base, setting(context.arguments.prm_api_key, "LATHE_PRM_API_KEY"),
                                                 "prm client", "--prm_api_base", /*read_timeout_seconds=*/300);
                    return std::make_shared<ChatJudge>(std::move(client), context.arguments.prm_api_model);
                  });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
