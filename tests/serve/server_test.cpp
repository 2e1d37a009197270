// The OpenAI-compatible server end to end: a real HTTP client against a server started in this
// process on a tiny random model, sharing one GenerationEngine. Expected answers come from
// lathe::generate (the engine-free path) on the same prompts.
#include "lathe/serve/openai_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <sstream>
#include <thread>

#include "cli/cli_util.h"
#include "lathe/infer/engine.h"
#include "lathe/infer/inference.h"

namespace lathe {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct Shared {
  fs::path dir;
  Arguments arguments;
  std::unique_ptr<InferenceModel> model;
  std::unique_ptr<GenerationEngine> engine;
  std::atomic<int> cancelled_callbacks{0};  // stream callbacks the server answered false
};
Shared* shared = nullptr;

// A server on a free port, serving until the object dies.
class RunningServer {
 public:
  // stand_in, when given, answers instead of the shared engine.
  explicit RunningServer(ServerOptions options = {}, SubmitFunction stand_in = nullptr) {
    options.port = 0;
    options.served_model_name = "tiny";
    auto engine_submit = stand_in ? std::move(stand_in) : submit_to(*shared->engine);
    SubmitFunction counting = [engine_submit](std::vector<GenerationRequest> requests) {
      for (auto& request : requests) {
        if (!request.on_token) continue;
        request.on_token = [inner = std::move(request.on_token)](const TokenLogprob& token) {
          const bool go_on = inner(token);
          if (!go_on) ++shared->cancelled_callbacks;
          return go_on;
        };
      }
      return engine_submit(std::move(requests));
    };
    server_ = std::make_unique<OpenAIServer>(*shared->model, shared->model->sampling(shared->arguments),
                                             shared->model->chat_template.agent_template(),
                                             counting, options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->serve(); });
  }
  ~RunningServer() {
    server_->stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(120);
    return client;
  }
  json post(const std::string& path, const json& body, int expected_status = 200) const {
    auto result = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(result) << "no answer to " << path;
    if (!result) return json();
    EXPECT_EQ(result->status, expected_status) << result->body;
    return json::parse(result->body);
  }

 private:
  std::unique_ptr<OpenAIServer> server_;
  int port_ = 0;
  std::thread thread_;
};

class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared = new Shared;
    shared->dir = fs::path(LATHE_BINARY_DIR) / "tests" / "tmp" / ("serve-model-" + std::to_string(::getpid()));
    fs::create_directories(shared->dir);
    testing::write_tiny_model(shared->dir);
    shared->arguments.model = shared->dir.string();
    shared->arguments.max_new_tokens = 12;
    shared->model = std::make_unique<InferenceModel>(load_inference_model(shared->arguments));
    EngineOptions options;
    options.max_batch_size = 4;
    options.decode = [](const std::vector<int32_t>& ids) { return shared->model->tokenizer.decode(ids); };
    shared->engine = std::make_unique<GenerationEngine>(shared->model->model, options);
  }
  static void TearDownTestSuite() {
    shared->engine.reset();
    fs::remove_all(shared->dir);
    delete shared;
    shared = nullptr;
  }

  static Conversation user(const std::string& text) { return {{{"user", text, {}, {}}}, nullptr}; }
  static json chat(const std::string& text, json extra = json::object()) {
    json body = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", text}}})}};
    body.update(extra);
    return body;
  }
  // The greedy answer lathe::generate gives, and its token count.
  static std::pair<std::string, std::size_t> expected(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    auto params = shared->model->sampling(shared->arguments);
    params.max_new_tokens = max_tokens;
    auto generation = generate(shared->model->model, {prompt}, params)[0];
    return {shared->model->decode_response(generation.ids), generation.ids.size()};
  }
};

TEST_F(Server, HealthAndModels) {
  RunningServer server;
  auto health = server.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto models = server.client().Get("/v1/models");
  ASSERT_TRUE(models);
  const json body = json::parse(models->body);
  ASSERT_EQ(body["data"].size(), 1U);
  EXPECT_EQ(body["data"][0]["id"], "tiny");
}

TEST_F(Server, ChatCompletionIsTheGreedyAnswerWithUsage) {
  RunningServer server;
  const json body = server.post("/v1/chat/completions", chat("What is 2+2?", {{"max_tokens", 10}}));
  const auto prompt = shared->model->encode_prompt(user("What is 2+2?"));
  const auto [text, tokens] = expected(prompt, 10);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "tiny");
  ASSERT_EQ(body["choices"].size(), 1U);
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], text);
  EXPECT_EQ(body["choices"][0]["finish_reason"], tokens == 10 ? "length" : "stop");
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(body["usage"]["completion_tokens"], tokens);
  EXPECT_EQ(body["usage"]["total_tokens"], prompt.size() + tokens);
}

TEST_F(Server, StreamedChunksAddUpToTheAnswerAndEndWithDone) {
  RunningServer server;
  const json request = chat("Tell me a story", {{"max_tokens", 10}, {"stream", true}, {"stream_options", {{"include_usage", true}}}});
  const json whole = server.post("/v1/chat/completions", chat("Tell me a story", {{"max_tokens", 10}}));
  auto result = server.client().Post("/v1/chat/completions", request.dump(), "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_NE(result->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::istringstream lines(result->body);
  std::string line, content, finish, last;
  bool saw_role = false;
  json usage;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    ASSERT_TRUE(line.starts_with("data: ")) << line;
    last = line;
    if (line == "data: [DONE]") break;
    const json event = json::parse(line.substr(6));
    EXPECT_EQ(event["object"], "chat.completion.chunk");
    if (event.contains("usage")) usage = event["usage"];
    for (const auto& choice : event["choices"]) {
      if (choice["delta"].contains("role")) saw_role = true;
      if (choice["delta"].contains("content")) content += choice["delta"]["content"].get<std::string>();
      if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    }
  }
  EXPECT_EQ(last, "data: [DONE]");
  EXPECT_TRUE(saw_role);
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, whole["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage, whole["usage"]);
}

TEST_F(Server, TextCompletionAnswersTheRawPrompt) {
  RunningServer server;
  const json body = server.post("/v1/completions", {{"model", "tiny"}, {"prompt", "Once upon a time"}, {"max_tokens", 8}});
  const auto [text, tokens] = expected(shared->model->tokenizer.encode("Once upon a time"), 8);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], text);
  EXPECT_EQ(body["usage"]["completion_tokens"], tokens);
}

// OpenAI's and vLLM's prompt forms: token ids (as given, no BOS added), and a list of prompts,
// each answered by n choices (prompt p's j-th at index p * n + j).
TEST_F(Server, TextCompletionTakesTokenIdsAndListsOfPrompts) {
  RunningServer server;
  const auto ids = shared->model->tokenizer.encode("Once upon a time");
  const auto other = shared->model->tokenizer.encode("The end");
  const json single = server.post("/v1/completions", {{"prompt", ids}, {"max_tokens", 8}});
  EXPECT_EQ(single["choices"][0]["text"], expected(ids, 8).first);
  EXPECT_EQ(single["usage"]["prompt_tokens"], ids.size());
  const json batch = server.post("/v1/completions", {{"prompt", json::array({ids, other})}, {"n", 2}, {"max_tokens", 6}});
  ASSERT_EQ(batch["choices"].size(), 4U);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(batch["choices"][i]["index"], i);
    EXPECT_EQ(batch["choices"][i]["text"], expected(i < 2 ? ids : other, 6).first) << "choice " << i;
  }
  EXPECT_EQ(batch["usage"]["prompt_tokens"], ids.size() + other.size());
  const json texts = server.post("/v1/completions", {{"prompt", json::array({"Once upon a time", "The end"})}, {"max_tokens", 6}});
  ASSERT_EQ(texts["choices"].size(), 2U);
  EXPECT_EQ(texts["choices"][1]["text"], expected(other, 6).first);
}

TEST_F(Server, SeededSamplesAreReproducibleAndNGivesNChoices) {
  RunningServer server;
  const json request = chat("Pick a word", {{"n", 3}, {"temperature", 1.0}, {"seed", 11}, {"max_tokens", 8},
                                            {"logprobs", true}, {"top_logprobs", 2}});
  const json first = server.post("/v1/chat/completions", request);
  const json second = server.post("/v1/chat/completions", request);
  ASSERT_EQ(first["choices"].size(), 3U);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(first["choices"][i]["index"], i);
    EXPECT_EQ(first["choices"][i]["message"], second["choices"][i]["message"]);
    const auto& content = first["choices"][i]["logprobs"]["content"];
    ASSERT_FALSE(content.empty());
    EXPECT_LE(content[0]["logprob"].get<double>(), 0.0);
    EXPECT_EQ(content[0]["top_logprobs"].size(), 2U);
  }
}

TEST_F(Server, StopStringsEndTheAnswerBeforeThem) {
  RunningServer server;
  const json whole = server.post("/v1/chat/completions", chat("Say something", {{"max_tokens", 12}}));
  const std::string text = whole["choices"][0]["message"]["content"];
  ASSERT_GE(text.size(), 4U);
  const std::string stop = text.substr(text.size() / 2, 2);
  const json cut = server.post("/v1/chat/completions", chat("Say something", {{"max_tokens", 12}, {"stop", stop}}));
  EXPECT_EQ(cut["choices"][0]["message"]["content"], text.substr(0, text.find(stop)));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
}

TEST_F(Server, ToolsArePresentedInThePromptAndAnswered) {
  RunningServer server;
  const json tool = json::parse(R"({"type": "function", "function": {"name": "get_weather", "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})");
  const json body = server.post("/v1/chat/completions",
                                chat("Weather in Paris?", {{"tools", json::array({tool})}, {"tool_choice", "auto"}, {"max_tokens", 6}}));
  auto conversation = user("Weather in Paris?");
  conversation.tools = json::array({tool});
  const auto prompt = shared->model->encode_prompt(conversation);
  EXPECT_GT(prompt.size(), shared->model->encode_prompt(user("Weather in Paris?")).size() + 20);
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt.size());
  const std::string finish = body["choices"][0]["finish_reason"];
  EXPECT_TRUE(finish == "stop" || finish == "length" || finish == "tool_calls") << finish;
  // Streaming with tools sends the whole answer in the last chunk.
  auto streamed = server.client().Post(
      "/v1/chat/completions",
      chat("Weather in Paris?", {{"tools", json::array({tool})}, {"max_tokens", 6}, {"stream", true}}).dump(),
      "application/json");
  ASSERT_TRUE(streamed);
  EXPECT_EQ(streamed->status, 200);
  EXPECT_NE(streamed->body.find(body["choices"][0]["message"]["content"].dump()), std::string::npos);
}

// Stands in for the engine: every request is answered with `text` (its tokens streamed too).
SubmitFunction fixed_answer(const std::string& text) {
  return [text](std::vector<GenerationRequest> requests) {
    std::vector<std::future<Generation>> futures;
    for (const auto& request : requests) {
      Generation generation;
      generation.ids = shared->model->tokenizer.encode(text, /*add_special_tokens=*/false);
      generation.finish_reason = "stop";
      if (request.on_token) {
        for (const auto id : generation.ids) request.on_token(TokenLogprob{id, 0.0F, {}});
      }
      std::promise<Generation> promise;
      promise.set_value(std::move(generation));
      futures.push_back(promise.get_future());
    }
    return futures;
  };
}

TEST_F(Server, AToolCallInTheAnswerComesBackAsToolCalls) {
  const auto& agent = shared->model->chat_template.agent_template();
  ASSERT_TRUE(agent);
  RunningServer server({}, fixed_answer(agent->format_tool_calls({{"get_weather", json{{"city", "Paris"}}}})));
  const json tool = json::parse(R"({"type": "function", "function": {"name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})");
  const json body = server.post("/v1/chat/completions", chat("Weather in Paris?", {{"tools", json::array({tool})}}));
  const auto& choice = body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1U);
  const auto& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}}));
  // Without tools in the request the same text is plain content.
  const json plain = server.post("/v1/chat/completions", chat("Weather in Paris?"));
  EXPECT_EQ(plain["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(plain["choices"][0]["message"]["content"].is_string());
  // Streamed, the call arrives in the last chunk with finish_reason tool_calls.
  auto streamed = server.client().Post(
      "/v1/chat/completions", chat("Weather in Paris?", {{"tools", json::array({tool})}, {"stream", true}}).dump(),
      "application/json");
  ASSERT_TRUE(streamed);
  EXPECT_EQ(streamed->status, 200);
  EXPECT_NE(streamed->body.find("\"get_weather\""), std::string::npos) << streamed->body;
  EXPECT_NE(streamed->body.find("\"finish_reason\":\"tool_calls\""), std::string::npos) << streamed->body;
}

// A request the engine refuses at submission gets an error status even when it asked to stream.
TEST_F(Server, AStreamTheEngineRefusesIsAnErrorBeforeTheStream) {
  SubmitFunction refusing = [](std::vector<GenerationRequest> requests) {
    std::vector<std::future<Generation>> futures;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      std::promise<Generation> promise;
      promise.set_exception(std::make_exception_ptr(Error("prompt token 999999 at position 0 is outside the vocabulary")));
      futures.push_back(promise.get_future());
    }
    return futures;
  };
  RunningServer server({}, refusing);
  auto streamed = server.client().Post("/v1/chat/completions", chat("hi", {{"stream", true}}).dump(), "application/json");
  ASSERT_TRUE(streamed);
  EXPECT_EQ(streamed->status, 400);
  const json error = json::parse(streamed->body, nullptr, false);
  ASSERT_TRUE(error.is_object() && error.contains("error")) << streamed->body;
  EXPECT_NE(error["error"]["message"].get<std::string>().find("outside the vocabulary"), std::string::npos);
}

TEST_F(Server, EveryClientMistakeGetsAnOpenAIErrorBody) {
  ServerOptions options;
  options.max_body_bytes = 4000;
  RunningServer server(options);
  auto expect_error = [&](const std::string& path, const std::string& body, int status, const std::string& param = "",
                          const std::string& code = "") {
    auto result = server.client().Post(path.c_str(), body, "application/json");
    ASSERT_TRUE(result) << body.substr(0, 100);
    EXPECT_EQ(result->status, status) << body.substr(0, 100);
    const json error = json::parse(result->body, nullptr, false);
    ASSERT_TRUE(error.is_object() && error.contains("error")) << result->body;
    for (const char* key : {"message", "type", "param", "code"}) EXPECT_TRUE(error["error"].contains(key)) << key;
    EXPECT_FALSE(error["error"]["message"].get<std::string>().empty());
    if (!param.empty()) EXPECT_EQ(error["error"]["param"], param);
    if (!code.empty()) EXPECT_EQ(error["error"]["code"], code);
  };
  expect_error("/v1/chat/completions", "{\"messages\": [", 400, "", "invalid_json");
  expect_error("/v1/chat/completions", std::string(1000, '[') + std::string(1000, ']'), 400, "", "invalid_json");
  expect_error("/v1/chat/completions", chat("hi", {{"temperature", "hot"}}).dump(), 400, "temperature");
  expect_error("/v1/chat/completions", json{{"messages", "hi"}}.dump(), 400, "messages");
  expect_error("/v1/chat/completions", chat("hi", {{"model", "gpt-9"}}).dump(), 404, "model", "model_not_found");
  expect_error("/v1/completions", json{{"prompt", 5}}.dump(), 400, "prompt");
  // The tiny model has 512 positions.
  expect_error("/v1/chat/completions", chat("hi", {{"max_tokens", 600}}).dump(), 400, "messages", "context_length_exceeded");
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += " word";
  expect_error("/v1/completions", json{{"prompt", long_prompt + long_prompt}}.dump(), 400, "prompt", "context_length_exceeded");
  expect_error("/v1/completions", json{{"prompt", std::string(5000, 'a')}}.dump(), 413);
  expect_error("/v1/nothing", "{}", 404);
  // The server still answers.
  server.post("/v1/chat/completions", chat("hi", {{"max_tokens", 2}}));
}

TEST_F(Server, ConcurrentClientsGetTheirSequentialAnswers) {
  RunningServer server;
  std::vector<json> requests;
  for (int i = 0; i < 8; ++i) requests.push_back(chat("Question number " + std::to_string(i * 7), {{"max_tokens", 6 + i}}));
  std::vector<json> sequential;
  for (const auto& request : requests) sequential.push_back(server.post("/v1/chat/completions", request)["choices"][0]);
  std::vector<json> concurrent(requests.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] {
      auto result = server.client().Post("/v1/chat/completions", requests[i].dump(), "application/json");
      if (result && result->status == 200) concurrent[i] = json::parse(result->body)["choices"][0];
    });
  }
  for (auto& client : clients) client.join();
  for (std::size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(concurrent[i], sequential[i]) << "client " << i;
}

TEST_F(Server, AClientLeavingMidStreamFreesItsSlot) {
  RunningServer server;
  const int cancelled_before = shared->cancelled_callbacks;
  std::size_t received = 0;
  auto client = server.client();
  const json request = chat("Go on and on", {{"max_tokens", 450}, {"stream", true}});
  httplib::Request raw;
  raw.method = "POST";
  raw.path = "/v1/chat/completions";
  raw.body = request.dump();
  raw.set_header("Content-Type", "application/json");
  raw.content_receiver = [&](const char*, size_t length, uint64_t, uint64_t) {
    received += length;
    return received < 200;  // leave after the first few events
  };
  auto result = client.send(raw);
  EXPECT_FALSE(result);  // the client cancelled
  client.stop();
  // The engine finishes the request early: its callback is refused and the slot empties.
  for (int i = 0; i < 600 && (shared->engine->active_sequences() > 0 || shared->cancelled_callbacks == cancelled_before); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GT(shared->cancelled_callbacks, cancelled_before);
  EXPECT_EQ(shared->engine->active_sequences(), 0);
  EXPECT_EQ(shared->engine->waiting_requests(), 0);
}

TEST_F(Server, AnApiKeyIsRequiredWhenSet) {
  ServerOptions options;
  options.api_key = "secret";
  RunningServer server(options);
  auto anonymous = server.client().Post("/v1/chat/completions", chat("hi").dump(), "application/json");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_EQ(json::parse(anonymous->body)["error"]["type"], "authentication_error");
  auto client = server.client();
  client.set_bearer_token_auth("wrong");
  EXPECT_EQ(client.Get("/v1/models")->status, 401);
  client.set_bearer_token_auth("secret");
  auto allowed = client.Post("/v1/chat/completions", chat("hi", {{"max_tokens", 2}}).dump(), "application/json");
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 200);
  EXPECT_EQ(server.client().Get("/health")->status, 200);
}

}  // namespace
}  // namespace lathe
