#pragma once
// Token generation with a KV cache: greedy or sampled (temperature, top-k, top-p, min-p,
// repetition / presence / frequency penalties), for one prompt or a left-padded batch of prompts.
// lathe/infer/engine.h serves concurrent requests with continuous batching on top of the same sampler.
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lathe/model/model.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct SamplingParams {
  int64_t max_new_tokens = 512;
  double temperature = 0.0;         // 0: greedy
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // 1: off
  double min_p = 0.0;               // 0: off; keeps tokens with p >= min_p * p(most likely)
  double repetition_penalty = 1.0;  // 1: off (CTRL-style: divide positive logits, multiply negative)
  double presence_penalty = 0.0;    // OpenAI: minus this once for every token already generated
  double frequency_penalty = 0.0;   // OpenAI: minus this times the count of each generated token
  std::optional<uint64_t> seed;     // fixed seed: reproducible samples
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;    // stop strings: the text ends before the first one found
  int64_t n = 1;                    // samples per prompt (GenerationEngine::generate_all)
  bool logprobs = false;            // record each chosen token's log-probability
  int64_t top_logprobs = 0;         // and this many most likely alternatives
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0F;                           // log-softmax of the unmodified logits
  std::vector<std::pair<int32_t, float>> top;     // top_logprobs alternatives, most likely first
};

struct Generation {
  std::vector<int32_t> ids;           // generated tokens (a final stop token included)
  std::string finish_reason;          // "stop" (stop token / string, or the callback said so) | "length" | "abort"
  std::vector<TokenLogprob> logprobs; // one per id when SamplingParams::logprobs
  std::string stop_string;            // the stop string that ended it, if any
  // With EngineOptions::decode: the generated text, without a final stop token and cut before the
  // stop string.
  std::string text;
};

// Picks the next token from one row of logits, given the tokens seen so far. The order follows
// Hugging Face's processors and warpers: repetition penalty (over the whole history), presence and
// frequency penalties (over the generated part), temperature, top-k, top-p (on the top-k
// renormalised), min-p. Greedy (temperature 0 or top_k 1) takes the argmax of the penalised logits.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // history: the prompt then the generated tokens; the first prompt_length are the prompt.
  int32_t next(const torch::Tensor& logits_row, const std::vector<int32_t>& history, std::size_t prompt_length);
  // As above, with the whole history counted as generated (presence / frequency penalties).
  int32_t next(const torch::Tensor& logits_row, const std::vector<int32_t>& history);

  // The pieces of next(), public for tests: the penalised logits (float32, CPU) ...
  torch::Tensor penalized(const torch::Tensor& logits_row, const std::vector<int32_t>& history,
                          std::size_t prompt_length) const;
  // ... and the distribution sampled from (temperature and filters applied, renormalised).
  torch::Tensor distribution(const torch::Tensor& penalized_logits) const;
  bool greedy() const { return params_.temperature <= 0.0 || params_.top_k == 1; }

 private:
  // Tokens kept, most likely first: their probabilities (not renormalised) and vocabulary ids.
  std::pair<torch::Tensor, torch::Tensor> kept(const torch::Tensor& penalized_logits) const;

  SamplingParams params_;
  std::mt19937_64 rng_;
};

// Called after each new token of row `row`; return false to stop that row ("stop").
using TokenCallback = std::function<bool(std::size_t row, int32_t token)>;

// Generates for each prompt. Prompts of different lengths are left-padded into one batch; rows
// that finish leave the batch. Greedy results equal those of each prompt generated alone.
std::vector<Generation> generate(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const SamplingParams& params, const TokenCallback& on_token = {});

}  // namespace lathe

LATHE_API_END
