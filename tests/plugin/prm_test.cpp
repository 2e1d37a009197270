// The PRM client against a small chat-completions server on 127.0.0.1 inside the test.
#include "lathe/plugin/prm.h"

#include <httplib.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "lathe/common/error.h"
#include "lathe/plugin/judge_reward.h"
#include "support/errors.h"

namespace lathe {
namespace {
using testing::error_of;

using nlohmann::json;

// Answers POST /v1/chat/completions with `answer` as the assistant's content; keeps the requests.
class JudgeServer {
 public:
  explicit JudgeServer(std::string answer, int status = 200) : answer_(std::move(answer)), status_(status) {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& request, httplib::Response& response) {
      {
        std::lock_guard lock(mutex_);
        bodies_.push_back(request.body);
        authorizations_.push_back(request.get_header_value("Authorization"));
      }
      json reply = {{"choices", json::array({{{"index", 0}, {"message", {{"role", "assistant"}, {"content", answer_}}}}})}};
      response.status = status_;
      response.set_content(reply.dump(), "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~JudgeServer() {
    server_.stop();
    thread_.join();
  }

  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }
  std::vector<std::string> authorizations() {
    std::lock_guard lock(mutex_);
    return authorizations_;
  }

 private:
  std::string answer_;
  int status_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<std::string> bodies_, authorizations_;
};

PrmInput request(const std::string& query, const std::string& response) {
  return PrmInput{Conversation{{{"system", "Be brief."}, {"user", query}, {"assistant", response}}, nullptr}, std::nullopt};
}

Arguments client_arguments(const std::string& base) {
  Arguments arguments;
  arguments.prm_api_base = base;
  arguments.prm_api_model = "judge-model";
  return arguments;
}


TEST(Prm, RegistryListsClientAndRejectsUnknownNames) {
  EXPECT_TRUE(prm_registry().contains("client"));
  EXPECT_NE(error_of([] { prm_registry().get("nope"); }).find("unknown prm 'nope' (registered: "), std::string::npos);
}

TEST(Prm, ParsesTheLastRewardClamped) {
  EXPECT_EQ(parse_judge_reward("Looks right.\nReward: 0.5"), 0.5);
  EXPECT_EQ(parse_judge_reward("Reward: -0.25 at first; on reflection Reward: .75"), 0.75);
  EXPECT_EQ(parse_judge_reward("Reward: 3"), 1.0);
  EXPECT_EQ(parse_judge_reward("Reward:-2.5"), -1.0);
  EXPECT_EQ(parse_judge_reward("no verdict"), std::nullopt);
  EXPECT_EQ(parse_judge_reward("Reward: high"), std::nullopt);
}

TEST(Prm, ClientSendsQueryAndResponseAndParsesTheReward) {
  JudgeServer server("The steps are fine but terse.\nReward: 0.5");
  Arguments arguments = client_arguments(server.base());
  arguments.prm_api_key = "secret-key";
  auto model = prm_registry().create("client", arguments);
  PrmInput with_truth = request("What is 6*7?", "6*7 = 42");
  with_truth.ground_truth = "42";
  auto rewards = model->score({with_truth, request("Capital of France?", "Paris.")});
  EXPECT_EQ(rewards, (std::vector<std::vector<double>>{{0.5}, {0.5}}));

  auto bodies = server.bodies();
  ASSERT_EQ(bodies.size(), 2u);
  json first = json::parse(bodies[0]);
  EXPECT_EQ(first["model"], "judge-model");
  const std::string question = first["messages"].back()["content"];
  EXPECT_NE(question.find("What is 6*7?"), std::string::npos) << question;
  EXPECT_NE(question.find("6*7 = 42"), std::string::npos) << question;
  EXPECT_NE(question.find("Reference answer:\n42"), std::string::npos) << question;
  EXPECT_NE(first["messages"][0]["content"].get<std::string>().find("Reward: x"), std::string::npos);
  const std::string second = json::parse(bodies[1])["messages"].back()["content"];
  EXPECT_NE(second.find("Capital of France?"), std::string::npos);
  EXPECT_NE(second.find("Paris."), std::string::npos);
  EXPECT_EQ(second.find("Reference answer"), std::string::npos);
  EXPECT_EQ(server.authorizations(), (std::vector<std::string>{"Bearer secret-key", "Bearer secret-key"}));
}

TEST(Prm, ClientTakesTheBaseFromTheEnvironment) {
  JudgeServer server("Reward: -0.2");
  ::setenv("LATHE_PRM_API_BASE", (server.base() + "/").c_str(), 1);
  auto model = prm_registry().create("client", client_arguments(""));
  ::unsetenv("LATHE_PRM_API_BASE");
  auto rewards = model->score({request("q", "r")});
  ASSERT_EQ(rewards.size(), 1u);
  ASSERT_EQ(rewards[0].size(), 1u);
  EXPECT_DOUBLE_EQ(rewards[0][0], -0.2);
}

TEST(Prm, ClientErrorsNameTheEndpoint) {
  {
    JudgeServer server("I cannot decide.");
    auto model = prm_registry().create("client", client_arguments(server.base()));
    std::string message = error_of([&] { model->score({request("q", "r")}); });
    EXPECT_NE(message.find(server.base() + "/chat/completions"), std::string::npos) << message;
    EXPECT_NE(message.find("no \"Reward: x\""), std::string::npos) << message;
  }
  {
    JudgeServer server("overloaded", 503);
    auto model = prm_registry().create("client", client_arguments(server.base()));
    std::string message = error_of([&] { model->score({request("q", "r")}); });
    EXPECT_NE(message.find("HTTP 503"), std::string::npos) << message;
  }
  std::string closed_base;
  {
    JudgeServer server("Reward: 1");  // a port that was free a moment ago and is closed now
    closed_base = server.base();
  }
  auto model = prm_registry().create("client", client_arguments(closed_base));
  std::string message = error_of([&] { model->score({request("q", "r")}); });
  EXPECT_NE(message.find("cannot reach " + closed_base + "/chat/completions"), std::string::npos) << message;

  EXPECT_NE(error_of([] { prm_registry().create("client", client_arguments("ftp://127.0.0.1/v1")); })
                .find("must start with http:// or https://"),
            std::string::npos);
  ::unsetenv("LATHE_PRM_API_BASE");
  EXPECT_NE(error_of([] { prm_registry().create("client", client_arguments("")); })
                .find("LATHE_PRM_API_BASE"),
            std::string::npos);
  auto last_message_not_assistant = PrmInput{Conversation{{{"user", "q"}}, nullptr}, std::nullopt};
  EXPECT_NE(error_of([&] { model->score({last_message_not_assistant}); }).find("must end with the assistant response"),
            std::string::npos);
}

}  // namespace
}  // namespace lathe
