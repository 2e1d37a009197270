#pragma once
// `lathe deploy`: an OpenAI-compatible HTTP server (cpp-httplib) in front of a generation engine.
// Routes: POST /v1/chat/completions, POST /v1/completions (streaming as server-sent events ending
// in `data: [DONE]`), GET /v1/models, GET /health. Every failure a client can cause is answered
// with a 4xx status and an OpenAI error body {"error": {"message", "type", "param", "code"}};
// nothing a request does stops the server.
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/infer/engine.h"
#include "lathe/infer/generate.h"
#include "lathe/infer/inference.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                   // 0: any free port (OpenAIServer::bind returns it)
  std::string api_key;               // empty: no authentication; else "Authorization: Bearer KEY"
  std::string served_model_name;     // the one name /v1/models lists and requests may ask for
  int64_t max_body_bytes = 8 << 20;  // larger bodies get 413
  int threads = 32;                  // HTTP worker threads (a streaming request holds one)
};

// --host, --port, --api_key, --max_body_bytes, and --served_model_name (default: the name of the
// --model folder).
ServerOptions server_options(const Arguments& arguments);

// How the server generates: GenerationEngine::submit_all in `lathe deploy` (a request's n choices
// are submitted together, so a seeded request draws the same choices every time); tests may stand in.
using SubmitFunction = std::function<std::vector<std::future<Generation>>(std::vector<GenerationRequest> requests)>;
inline SubmitFunction submit_to(GenerationEngine& engine) {
  return [&engine](std::vector<GenerationRequest> requests) { return engine.submit_all(std::move(requests)); };
}

class OpenAIServer {
 public:
  // `model` gives the tokenizer, chat template, stop tokens and context length; `defaults` the
  // sampling settings a request does not name (from the command line); `agent` (the chat
  // template's, which also presents the tools) parses tool calls out of responses. All must
  // outlive the server.
  OpenAIServer(const InferenceModel& model, SamplingParams defaults, std::shared_ptr<const AgentTemplate> agent,
               SubmitFunction submit, ServerOptions options);
  ~OpenAIServer();
  OpenAIServer(const OpenAIServer&) = delete;
  OpenAIServer& operator=(const OpenAIServer&) = delete;

  // Binds the listening socket; returns the port (the free one picked for port 0). Errors: lathe::Error.
  int bind();
  // Serves on the bound socket until stop(); returns then.
  void serve();
  // Thread-safe; makes serve() return once it is running (before that it has nothing to stop).
  void stop();
  // Whether serve() is in its listen loop (stop() before that has nothing to stop).
  bool running() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lathe

LATHE_API_END
