// The HTTP side of `lathe deploy`: routes, authentication, error bodies and server-sent events.
// Protocol details (request checking, response pieces) are in openai_protocol.cpp.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include "lathe/common/format.h"
#include "lathe/serve/openai_server.h"
#include "lathe/tokenizer/tokenizer.h"
#include "serve/openai_protocol.h"

namespace lathe {

using nlohmann::json;
using serve::ApiError;
using serve::CompletionRequest;

ServerOptions server_options(const Arguments& arguments) {
  ServerOptions options;
  options.host = arguments.host;
  if (arguments.port < 0 || arguments.port > 65535) fail("--port: {} is not a TCP port (0-65535)", arguments.port);
  options.port = static_cast<int>(arguments.port);
  options.api_key = arguments.api_key;
  options.served_model_name = arguments.served_model_name;
  if (options.served_model_name.empty()) {
    std::filesystem::path folder(arguments.model);
    options.served_model_name = (folder.has_filename() ? folder : folder.parent_path()).filename().string();
  }
  if (arguments.max_body_bytes <= 0) fail("--max_body_bytes: expected a positive size, got {}", arguments.max_body_bytes);
  options.max_body_bytes = arguments.max_body_bytes;
  options.threads = static_cast<int>(std::max<int64_t>(32, 2 * arguments.max_batch_size + 8));
  return options;
}

namespace {

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void send_error(httplib::Response& response, int status, const std::string& message, const std::string& param = "",
                const std::string& code = "") {
  response.status = status;
  response.set_content(serve::error_body(status, message, param, code).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// Runs a handler; whatever it throws becomes an error answer, never a crash.
template <class Handler>
void guarded(httplib::Response& response, Handler&& handler) {
  try {
    handler();
  } catch (const ApiError& error) {
    send_error(response, error.status, error.what(), error.param, error.code);
  } catch (const Error& error) {
    send_error(response, 400, error.what());
  } catch (const std::exception& error) {
    send_error(response, 500, fmt::format("internal error: {}", error.what()));
  } catch (...) {
    send_error(response, 500, "internal error");
  }
}

// One accepted completion request, ready to generate.
struct Job {
  bool chat = true;
  CompletionRequest request;
  std::vector<std::vector<int32_t>> prompts;  // chat: one; completions: one or more
  std::string id;
  int64_t created = 0;
};

// Tokens and ends of the n generations of a streaming request, from the engine thread to the
// HTTP thread that writes the events.
struct StreamQueue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::pair<std::size_t, TokenLogprob>> tokens;
  std::atomic<bool> cancelled{false};
};

}  // namespace

struct OpenAIServer::State {
  const InferenceModel& model;
  SamplingParams defaults;
  std::shared_ptr<const AgentTemplate> agent;
  SubmitFunction submit;
  ServerOptions options;
  int64_t context_limit = 0;
  httplib::Server http;
  std::atomic<uint64_t> next_id{0};

  State(const InferenceModel& m, SamplingParams d, std::shared_ptr<const AgentTemplate> a, SubmitFunction s, ServerOptions o)
      : model(m), defaults(std::move(d)), agent(std::move(a)), submit(std::move(s)), options(std::move(o)),
        context_limit(m.model->config().max_position_embeddings) {
    routes();
  }

  void routes() {
    http.new_task_queue = [threads = options.threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
    http.set_pre_routing_handler([this](const httplib::Request& request, httplib::Response& response) {
      if (options.api_key.empty() || request.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      if (request.get_header_value("Authorization") == "Bearer " + options.api_key) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      send_error(response, 401, "missing or wrong API key (expected 'Authorization: Bearer <key>')", "", "invalid_api_key");
      return httplib::Server::HandlerResponse::Handled;
    });
    // httplib's own refusals (unknown route, 413 body too large, bad request line) get an error body.
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& request, httplib::Response& response) {
      if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message = response.status == 404 ? fmt::format("no route {} {}", request.method, request.path)
                            : response.status == 413 ? "the request body is larger than --max_body_bytes"
                                                     : fmt::format("HTTP {}", response.status);
      send_error(response, response.status, message);
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
      send_error(response, 500, "internal error");
    });
    http.Get("/health", [](const httplib::Request&, httplib::Response& response) {
      response.set_content(R"({"status":"ok"})", "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& response) {
      json model = {{"id", options.served_model_name}, {"object", "model"}, {"created", unix_time()},
                    {"owned_by", "lathe"}, {"max_model_len", context_limit}};
      response.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& request, httplib::Response& response) {
      guarded(response, [&] { complete(accept(request.body, true), response); });
    });
    http.Post("/v1/completions", [this](const httplib::Request& request, httplib::Response& response) {
      guarded(response, [&] { complete(accept(request.body, false), response); });
    });
  }

  Job accept(const std::string& body_text, bool chat) {
    bool too_deep = false;
    json body = serve::parse_json(body_text, &too_deep);
    if (too_deep)
      throw ApiError(400, fmt::format("the request body nests deeper than {} levels", serve::kMaxJsonDepth), "",
                     "invalid_json");
    if (body.is_discarded()) throw ApiError(400, "the request body is not valid JSON", "", "invalid_json");
    Job job;
    job.chat = chat;
    job.request = chat ? serve::parse_chat_request(body, defaults) : serve::parse_completion_request(body, defaults);
    auto& request = job.request;
    if (request.model && *request.model != options.served_model_name) {
      throw ApiError(404, fmt::format("the model '{}' does not exist; this server serves '{}'", *request.model,
                                      options.served_model_name),
                     "model", "model_not_found");
    }
    job.prompts = prompts_of(request, chat);
    std::size_t longest = 0;
    for (const auto& prompt : job.prompts) {
      if (prompt.empty()) throw ApiError(400, "the prompt is empty", chat ? "messages" : "prompt");
      longest = std::max(longest, prompt.size());
    }
    const auto prompt_tokens = static_cast<int64_t>(longest);
    const auto room = context_limit - prompt_tokens;
    if (room < 1 || (request.max_tokens_given && request.params.max_new_tokens > room)) {
      throw ApiError(400,
                     fmt::format("this model's context is {} tokens; the prompt has {} and {} more were asked for",
                                 context_limit, prompt_tokens, request.params.max_new_tokens),
                     chat ? "messages" : "prompt", "context_length_exceeded");
    }
    request.params.max_new_tokens = std::min(request.params.max_new_tokens, room);
    job.id = fmt::format("{}-{:x}{:08x}", chat ? "chatcmpl" : "cmpl", unix_time(), next_id.fetch_add(1));
    job.created = unix_time();
    return job;
  }

  std::vector<std::vector<int32_t>> prompts_of(const CompletionRequest& request, bool chat) const {
    if (chat) return {model.encode_prompt(request.conversation)};
    if (!request.prompt_ids.empty()) return request.prompt_ids;
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& text : request.prompts) prompts.push_back(model.tokenizer.encode(text, /*add_special_tokens=*/true));
    return prompts;
  }

  // Choice i answers prompt i / n.
  static std::size_t choice_count(const Job& job) { return job.prompts.size() * static_cast<std::size_t>(job.request.params.n); }
  static const std::vector<int32_t>& prompt_of_choice(const Job& job, std::size_t i) {
    return job.prompts[i / static_cast<std::size_t>(job.request.params.n)];
  }

  // The parameters of choice i: seeds seed, seed+1, ... make the n samples differ reproducibly.
  SamplingParams choice_params(const Job& job, std::size_t i) const {
    SamplingParams params = job.request.params;
    params.n = 1;
    if (params.seed) params.seed = *params.seed + i;
    return params;
  }

  static Generation result_of(std::future<Generation>& future) {
    try {
      return future.get();
    } catch (const Error& error) {
      throw ApiError(400, error.what());
    }
  }

  // The text of a finished generation: without the stop token and stop string.
  std::string text_of(const Job& job, const Generation& generation) const {
    return serve::cut_at_stop(model.decode_response(generation.ids), job.request.params.stop);
  }

  json usage(const Job& job, int64_t completion_tokens) const {
    int64_t prompt_tokens = 0;
    for (const auto& prompt : job.prompts) prompt_tokens += static_cast<int64_t>(prompt.size());
    return {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  }

  // The message (chat) and finish reason of a finished text, with tool calls parsed when tools
  // were offered.
  std::pair<json, std::string> chat_message(const Job& job, const std::string& text, std::string finish) const {
    json message = {{"role", "assistant"}, {"content", text}};
    if (!job.request.tools.empty() && agent) {
      auto calls = agent->parse_tool_calls(text);
      if (!calls.empty()) {
        message["content"] = nullptr;
        message["tool_calls"] = serve::tool_calls_json(calls);
        finish = "tool_calls";
      }
    }
    return {message, finish};
  }

  void complete(Job job, httplib::Response& response) {
    if (job.request.stream) {
      stream(std::make_shared<Job>(std::move(job)), response);
      return;
    }
    std::vector<GenerationRequest> requests;
    for (std::size_t i = 0; i < choice_count(job); ++i) requests.push_back({prompt_of_choice(job, i), choice_params(job, i)});
    auto futures = submit(std::move(requests));
    json choices = json::array();
    int64_t completion_tokens = 0;
    for (std::size_t i = 0; i < futures.size(); ++i) {
      Generation generation = result_of(futures[i]);
      completion_tokens += static_cast<int64_t>(generation.ids.size());
      const std::string text = text_of(job, generation);
      json choice = {{"index", i}, {"logprobs", nullptr}};
      if (job.chat) {
        auto [message, finish] = chat_message(job, text, generation.finish_reason);
        choice["message"] = message;
        choice["finish_reason"] = finish;
        if (job.request.params.logprobs) choice["logprobs"] = serve::chat_logprobs(model.tokenizer, generation.logprobs);
      } else {
        choice["text"] = text;
        choice["finish_reason"] = generation.finish_reason;
        if (job.request.params.logprobs) choice["logprobs"] = serve::completion_logprobs(model.tokenizer, generation.logprobs);
      }
      choices.push_back(std::move(choice));
    }
    json body = {{"id", job.id}, {"object", job.chat ? "chat.completion" : "text_completion"}, {"created", job.created},
                 {"model", options.served_model_name}, {"choices", choices}, {"usage", usage(job, completion_tokens)}};
    response.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  }

  void stream(std::shared_ptr<Job> job, httplib::Response& response) {
    auto queue = std::make_shared<StreamQueue>();
    std::vector<GenerationRequest> requests;
    for (std::size_t i = 0; i < choice_count(*job); ++i) {
      requests.push_back({prompt_of_choice(*job, i), choice_params(*job, i), [queue, i](const TokenLogprob& token) {
                            if (queue->cancelled) return false;
                            {
                              std::lock_guard lock(queue->mutex);
                              queue->tokens.emplace_back(i, token);
                            }
                            queue->ready.notify_one();
                            return true;
                          }});
    }
    auto futures = std::make_shared<std::vector<std::shared_future<Generation>>>();
    for (auto& future : submit(std::move(requests))) futures->push_back(future.share());
    // What the engine refuses (a prompt token outside the model's vocabulary, parameters it cannot
    // honour) fails at submission: answered with an error status here, before the stream's 200.
    for (const auto& future : *futures) {
      if (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) continue;
      try {
        future.get();
      } catch (...) {
        queue->cancelled = true;  // the other choices stop at their next token
        throw;
      }
    }
    response.set_chunked_content_provider(
        "text/event-stream",
        [this, job, queue, futures](size_t, httplib::DataSink& sink) {
          // httplib runs this outside its own exception handling: nothing may escape.
          bool written = false;
          try {
            written = write_events(*job, *queue, *futures, sink);
          } catch (...) {
            written = false;
          }
          if (!written) {
            queue->cancelled = true;  // the client went away (or writing failed): the engine frees the slots
            return false;
          }
          sink.done();
          return true;
        },
        [queue](bool) { queue->cancelled = true; });
  }

  // Per-choice streaming state.
  struct ChoiceStream {
    std::unique_ptr<Tokenizer::StreamDecoder> decoder;
    serve::StopStringFilter filter;
    std::string buffered;  // with tools: the whole text, sent at the end
    std::vector<TokenLogprob> logprobs;  // not yet sent
    bool finished = false;
  };

  json chunk(const Job& job, json choices) const {
    return {{"id", job.id}, {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", job.created}, {"model", options.served_model_name}, {"choices", std::move(choices)}};
  }

  json text_choice(const Job& job, std::size_t index, const std::string& text, std::vector<TokenLogprob>& logprobs,
                   const json& finish) const {
    json choice = {{"index", index}, {"finish_reason", finish}, {"logprobs", nullptr}};
    if (job.chat) {
      choice["delta"] = text.empty() ? json::object() : json{{"content", text}};
    } else {
      choice["text"] = text;
    }
    if (job.request.params.logprobs && !logprobs.empty()) {
      choice["logprobs"] = job.chat ? serve::chat_logprobs(model.tokenizer, logprobs)
                                    : serve::completion_logprobs(model.tokenizer, logprobs);
      logprobs.clear();
    }
    return choice;
  }

  // Writes the events of a streaming request as its tokens arrive; false when the client is gone.
  bool write_events(const Job& job, StreamQueue& queue, std::vector<std::shared_future<Generation>>& futures,
                    httplib::DataSink& sink) const {
    auto send = [&](const json& event) {
      const std::string line = "data: " + event.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
      return sink.is_writable() && sink.write(line.data(), line.size());
    };
    const bool with_tools = job.chat && !job.request.tools.empty();
    std::vector<ChoiceStream> choices;
    for (std::size_t i = 0; i < futures.size(); ++i) {
      choices.push_back({std::make_unique<Tokenizer::StreamDecoder>(model.tokenizer), serve::StopStringFilter(job.request.params.stop), "", {}, false});
      if (job.chat && !send(chunk(job, json::array({{{"index", i},
                                                    {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                    {"logprobs", nullptr},
                                                    {"finish_reason", nullptr}}})))) {
        return false;
      }
    }
    const auto& stops = model.stop_token_ids;
    auto emit = [&](std::size_t i, const std::string& piece) {
      auto& choice = choices[i];
      if (with_tools) {
        choice.buffered += piece;
        return true;
      }
      std::string text = choice.filter.push(piece);
      if (text.empty()) return true;
      return send(chunk(job, json::array({text_choice(job, i, text, choice.logprobs, nullptr)})));
    };
    int64_t completion_tokens = 0;
    std::size_t open = choices.size();
    while (open > 0) {
      // Text may be held back (tools, a possible stop string): notice a client that left anyway.
      if (!sink.is_writable()) return false;
      std::deque<std::pair<std::size_t, TokenLogprob>> tokens;
      {
        std::unique_lock lock(queue.mutex);
        queue.ready.wait_for(lock, std::chrono::milliseconds(20), [&] { return !queue.tokens.empty(); });
        tokens.swap(queue.tokens);
      }
      for (auto& [i, token] : tokens) {
        auto& choice = choices[i];
        if (job.request.params.logprobs) choice.logprobs.push_back(token);
        if (std::find(stops.begin(), stops.end(), token.token) != stops.end()) continue;
        if (!emit(i, choice.decoder->push(token.token))) return false;
      }
      if (!tokens.empty()) continue;  // finish only after every queued token is written
      for (std::size_t i = 0; i < choices.size(); ++i) {
        auto& choice = choices[i];
        if (choice.finished || futures[i].wait_for(std::chrono::seconds(0)) != std::future_status::ready) continue;
        {
          // Tokens the engine queued just before it finished.
          std::lock_guard lock(queue.mutex);
          if (!queue.tokens.empty()) break;
        }
        choice.finished = true;
        --open;
        Generation generation;
        try {
          generation = futures[i].get();
        } catch (const std::exception& error) {
          const int status = dynamic_cast<const Error*>(&error) ? 400 : 500;
          if (!send(serve::error_body(status, error.what()))) return false;
          continue;
        }
        completion_tokens += static_cast<int64_t>(generation.ids.size());
        if (!emit(i, choice.decoder->finish())) return false;
        json finish = generation.finish_reason;
        json last;
        if (with_tools) {
          auto [message, reason] = chat_message(job, serve::cut_at_stop(choice.buffered, job.request.params.stop), generation.finish_reason);
          finish = reason;
          json delta = json::object();
          if (message.contains("tool_calls")) {
            delta["tool_calls"] = message["tool_calls"];
            for (std::size_t k = 0; k < delta["tool_calls"].size(); ++k) delta["tool_calls"][k]["index"] = k;
          } else {
            delta["content"] = message["content"];
          }
          last = {{"index", i}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", finish}};
          if (job.request.params.logprobs) last["logprobs"] = serve::chat_logprobs(model.tokenizer, choice.logprobs);
        } else {
          last = text_choice(job, i, choice.filter.finish(), choice.logprobs, finish);
        }
        if (!send(chunk(job, json::array({last})))) return false;
      }
    }
    if (job.request.include_usage) {
      json event = chunk(job, json::array());
      event["usage"] = usage(job, completion_tokens);
      if (!send(event)) return false;
    }
    static constexpr std::string_view done = "data: [DONE]\n\n";
    return sink.write(done.data(), done.size());
  }
};

OpenAIServer::OpenAIServer(const InferenceModel& model, SamplingParams defaults, std::shared_ptr<const AgentTemplate> agent,
                           SubmitFunction submit, ServerOptions options)
    : state_(std::make_unique<State>(model, std::move(defaults), std::move(agent), std::move(submit), std::move(options))) {}

OpenAIServer::~OpenAIServer() { stop(); }

int OpenAIServer::bind() {
  const auto& options = state_->options;
  if (options.port == 0) {
    const int port = state_->http.bind_to_any_port(options.host);
    if (port <= 0) fail("deploy: cannot listen on {} (any port)", options.host);
    return port;
  }
  if (!state_->http.bind_to_port(options.host, options.port)) {
    fail("deploy: cannot listen on {}:{} (in use, or not an address of this machine)", options.host, options.port);
  }
  return options.port;
}

void OpenAIServer::serve() { state_->http.listen_after_bind(); }

void OpenAIServer::stop() { state_->http.stop(); }

bool OpenAIServer::running() const { return state_->http.is_running(); }

}  // namespace lathe
