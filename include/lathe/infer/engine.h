#pragma once
// The generation engine shared by infer, sample, eval and deploy: requests from any thread are
// decoded together in one batch with continuous batching (finished sequences leave and waiting
// ones join between decoding steps), each with its own sampling parameters.
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "lathe/infer/generate.h"
#include "lathe/model/model.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct EngineOptions {
  int64_t max_batch_size = 8;  // sequences decoded together; more requests wait in a queue
  // Text of a token sequence; needed for stop strings (SamplingParams::stop). The engine calls it
  // from its own thread.
  std::function<std::string(const std::vector<int32_t>&)> decode;
  // true: a request's max_new_tokens shrinks to the positions left after its prompt, and only a
  // prompt that leaves no room is rejected (batch callers); false: a request that does not fit is.
  bool fit_max_new_tokens = false;
};

// Streaming: called from the engine thread with each new token (and its log-probability when
// SamplingParams::logprobs is set). Return false to cancel the request (the client went away):
// its slot is freed and its result finishes with "abort".
using StreamCallback = std::function<bool(const TokenLogprob& token)>;

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;  // n is ignored: one request is one sequence
  StreamCallback on_token = {};
};

class GenerationEngine {
 public:
  GenerationEngine(CausalLM model, EngineOptions options);
  ~GenerationEngine();  // stops the decoding thread; pending requests finish with "abort"
  GenerationEngine(const GenerationEngine&) = delete;
  GenerationEngine& operator=(const GenerationEngine&) = delete;

  // Thread-safe. The future holds the finished generation, or the error for a request the engine
  // rejects (empty prompt, prompt + max_new_tokens past max_position_embeddings).
  std::future<Generation> submit(std::vector<int32_t> prompt, SamplingParams params, StreamCallback on_token = {});

  // Thread-safe; one future per request, in order. The requests enter the queue at once, so the
  // batches they are decoded in (and with them the floating-point rounding that sampling sees)
  // depend only on what was submitted, never on when the decoding thread woke: submitted together
  // into an idle engine, the same requests draw the same tokens on every run.
  std::vector<std::future<Generation>> submit_all(std::vector<GenerationRequest> requests);

  // Convenience for batch callers (sample, eval, infer): submits all and waits. With params.n > 1
  // each prompt gives n generations (seeds seed, seed+1, ...), in prompt order.
  std::vector<Generation> generate_all(const std::vector<std::vector<int32_t>>& prompts, const SamplingParams& params);

  int64_t max_batch_size() const;
  int64_t active_sequences() const;  // decoding now
  int64_t waiting_requests() const;  // queued

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lathe

LATHE_API_END
