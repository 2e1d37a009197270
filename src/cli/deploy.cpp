// `lathe deploy`: serves a model over an OpenAI-compatible HTTP API until SIGINT or SIGTERM.
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "cli/arguments.h"
#include "lathe/infer/engine.h"
#include "lathe/infer/inference.h"
#include "lathe/serve/openai_server.h"

namespace lathe::cli {

namespace {

// Waits for SIGINT/SIGTERM on a thread of its own and stops the server. It is woken and joined on
// every way out of the scope, an exception included (a joinable thread must never be destroyed).
class StopOnSignal {
 public:
  StopOnSignal(OpenAIServer& server, sigset_t signals) : server_(server), signals_(signals) {
    waiter_ = std::thread([this] { wait(); });
  }
  ~StopOnSignal() {
    returned_ = true;
    if (!signalled_) kill(getpid(), SIGTERM);  // wakes the waiter (the signal is blocked, so it only pends)
    waiter_.join();
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

 private:
  void wait() {
    int signal = 0;
    sigwait(&signals_, &signal);
    signalled_ = true;
    // A signal that comes before serve() has entered its listen loop would find nothing to stop
    // and be lost: wait for the loop (or for serve() to have returned) first.
    while (!returned_ && !server_.running()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    server_.stop();
  }

  OpenAIServer& server_;
  sigset_t signals_;
  std::atomic<bool> signalled_{false}, returned_{false};
  std::thread waiter_;
};

}  // namespace

int run_deploy(const Args& args) {
  CLI::App app("Serve a model with an OpenAI-compatible API: /v1/chat/completions, /v1/completions, "
               "/v1/models, /health. --port 0 picks a free port; the address is printed on stdout.",
               "deploy");
  Arguments arguments;
  add_options(app, arguments, {ArgumentGroup::Model, ArgumentGroup::Generation, ArgumentGroup::Serving, ArgumentGroup::Export});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  const auto options = server_options(arguments);
  // Signals go to the thread that waits for them, not to whichever thread is running; so the
  // mask is set before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto loaded = load_inference_model(arguments);
  auto engine_options = loaded.engine_options(arguments);
  // A request's explicit max_tokens past the context is the client's error (400), not shortened.
  engine_options.fit_max_new_tokens = false;
  GenerationEngine engine(loaded.model, engine_options);
  auto agent = loaded.chat_template.agent_template();
  auto defaults = loaded.sampling(arguments);
  // Without --seed, a request without "seed" samples afresh each time, as OpenAI's API does.
  if (app.count("--seed") == 0) defaults.seed.reset();
  OpenAIServer server(loaded, defaults, agent, submit_to(engine), options);
  const int port = server.bind();

  StopOnSignal stop_on_signal(server, stop_signals);
  fmt::print("listening on http://{}:{}\n", options.host, port);
  std::fflush(stdout);
  fmt::print(stderr, "lathe deploy: serving '{}' (batch {}); stop with Ctrl-C\n", options.served_model_name,
             engine_options.max_batch_size);
  server.serve();
  fmt::print(stderr, "lathe deploy: stopped\n");
  return 0;
}

}  // namespace lathe::cli
