#include "lathe/infer/engine.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "lathe/common/format.h"

namespace lathe {
namespace {

struct Request {
  std::vector<int32_t> prompt;
  SamplingParams params;
  StreamCallback on_token;
  std::promise<Generation> promise;
};

// A request being decoded: its own sampler (and RNG), the tokens so far and its result.
struct Sequence {
  explicit Sequence(Request request_)
      : request(std::move(request_)), sampler(request.params), history(request.prompt) {}
  Request request;
  Sampler sampler;
  std::vector<int32_t> history;  // prompt, then generated tokens; the last one is fed next
  Generation result;
  bool delivered = false;

  bool finished() const { return !result.finish_reason.empty(); }
  bool is_stop_token(int32_t token) const {
    const auto& stops = request.params.stop_token_ids;
    return std::find(stops.begin(), stops.end(), token) != stops.end();
  }
  void fail(const std::exception_ptr& error) {
    if (delivered) return;
    delivered = true;
    request.promise.set_exception(error);
  }
};

void check_params(const SamplingParams& p, int64_t vocab, bool can_decode) {
  if (p.max_new_tokens < 0) fail("max_new_tokens must be >= 0 (got {})", p.max_new_tokens);
  if (!(p.temperature >= 0.0)) fail("temperature must be >= 0 (got {})", p.temperature);
  if (p.top_k < 0) fail("top_k must be >= 0 (got {})", p.top_k);
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) fail("top_p must be in (0, 1] (got {})", p.top_p);
  if (!(p.min_p >= 0.0 && p.min_p <= 1.0)) fail("min_p must be in [0, 1] (got {})", p.min_p);
  if (!(p.repetition_penalty > 0.0)) fail("repetition_penalty must be > 0 (got {})", p.repetition_penalty);
  if (p.n < 1) fail("n must be >= 1 (got {})", p.n);
  if (p.top_logprobs < 0 || p.top_logprobs > vocab) {
    fail("top_logprobs must be in [0, {}] (got {})", vocab, p.top_logprobs);
  }
  for (const auto& stop : p.stop) {
    if (stop.empty()) fail("stop strings must not be empty");
  }
  if (!p.stop.empty() && !can_decode) fail("stop strings need a decoder (EngineOptions::decode)");
}

void check_prompt(const std::vector<int32_t>& prompt, int64_t vocab) {
  if (prompt.empty()) fail("the prompt is empty: generation needs at least one token");
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      fail("prompt token {} at position {} is outside the vocabulary [0, {})", prompt[i], i, vocab);
    }
  }
}

// Widens a bool [rows, keys] padding mask to `width` keys by adding padding on the left.
torch::Tensor left_pad_columns(const torch::Tensor& padding, int64_t width) {
  const auto missing = width - padding.size(1);
  if (missing == 0) return padding;
  return torch::cat({torch::zeros({padding.size(0), missing}, padding.options()), padding}, 1);
}

}  // namespace

struct GenerationEngine::State {
  State(CausalLM model_, EngineOptions options_)
      : model(std::move(model_)), options(std::move(options_)), device(model->parameters().front().device()) {}

  CausalLM model;
  EngineOptions options;
  torch::Device device;

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<Request> queue;  // under mutex
  bool stopping = false;      // under mutex
  std::atomic<int64_t> active{0};

  // Decoding thread only. Rows are left-padded: every row's next token goes in the last column.
  std::vector<std::unique_ptr<Sequence>> batch;
  KVCache cache;
  torch::Tensor padding;  // bool [rows, keys], true for real tokens
  std::thread thread;

  void run();
  void admit(std::vector<Request> newcomers);
  void step();
  void advance(Sequence& sequence, const torch::Tensor& logits_row) const;
  void deliver(Sequence& sequence) const;
  void drop_finished(std::vector<std::unique_ptr<Sequence>>& rows, KVCache& rows_cache, torch::Tensor& rows_padding) const;
  void join_batch(std::vector<std::unique_ptr<Sequence>> rows, const KVCache& rows_cache, const torch::Tensor& rows_padding);
  void clear_batch();
  void abort_everything();
};

void GenerationEngine::State::run() {
  torch::NoGradGuard no_grad;  // grad mode is per thread
  while (true) {
    std::vector<Request> newcomers;
    {
      std::unique_lock lock(mutex);
      wake.wait(lock, [&] { return stopping || !queue.empty() || !batch.empty(); });
      if (stopping) break;
      while (!queue.empty() && static_cast<int64_t>(batch.size() + newcomers.size()) < options.max_batch_size) {
        newcomers.push_back(std::move(queue.front()));
        queue.pop_front();
      }
    }
    if (!newcomers.empty()) admit(std::move(newcomers));
    if (!batch.empty()) {
      try {
        step();
      } catch (...) {
        for (auto& sequence : batch) sequence->fail(std::current_exception());
        clear_batch();
      }
    }
    active = static_cast<int64_t>(batch.size());
  }
  abort_everything();
}

// Prefills the newcomers together (left-padded among themselves), picks their first tokens and
// merges their caches into the running batch.
void GenerationEngine::State::admit(std::vector<Request> newcomers) {
  std::vector<std::unique_ptr<Sequence>> rows;
  for (auto& request : newcomers) rows.push_back(std::make_unique<Sequence>(std::move(request)));
  try {
    int64_t width = 0;
    for (const auto& row : rows) width = std::max<int64_t>(width, static_cast<int64_t>(row->history.size()));
    const auto count = static_cast<int64_t>(rows.size());
    auto ids = torch::zeros({count, width}, torch::kLong);
    auto row_padding = torch::zeros({count, width}, torch::kBool);
    for (int64_t r = 0; r < count; ++r) {
      const auto& prompt = rows[r]->history;
      const auto offset = width - static_cast<int64_t>(prompt.size());
      auto* out = ids[r].data_ptr<int64_t>();
      for (std::size_t i = 0; i < prompt.size(); ++i) out[offset + static_cast<int64_t>(i)] = prompt[i];
      row_padding[r].slice(0, offset, width).fill_(true);
    }
    row_padding = row_padding.to(device);
    KVCache row_cache;
    ForwardInputs inputs{ids.to(device), padding_position_ids(row_padding), causal_padding_mask(row_padding, width),
                         &row_cache};
    auto hidden = model->forward(inputs);
    auto logits = model->logits(hidden.select(1, width - 1)).to(torch::kCPU, torch::kFloat32);
    for (int64_t r = 0; r < count; ++r) advance(*rows[r], logits[r]);
    drop_finished(rows, row_cache, row_padding);
    join_batch(std::move(rows), row_cache, row_padding);
  } catch (...) {
    for (auto& row : rows) row->fail(std::current_exception());
  }
}

// One decoding step of the whole batch: feeds every row's last token.
void GenerationEngine::State::step() {
  const auto count = static_cast<int64_t>(batch.size());
  std::vector<int64_t> tokens, positions;
  for (const auto& row : batch) {
    tokens.push_back(row->history.back());
    positions.push_back(static_cast<int64_t>(row->history.size()) - 1);
  }
  padding = torch::cat({padding, torch::ones({count, 1}, padding.options())}, 1);
  ForwardInputs inputs{torch::tensor(tokens, torch::kLong).view({count, 1}).to(device),
                       torch::tensor(positions, torch::kLong).view({count, 1}).to(device),
                       causal_padding_mask(padding, 1), &cache};
  auto hidden = model->forward(inputs);
  auto logits = model->logits(hidden.select(1, 0)).to(torch::kCPU, torch::kFloat32);
  for (int64_t r = 0; r < count; ++r) advance(*batch[r], logits[r]);
  drop_finished(batch, cache, padding);
  if (batch.empty()) clear_batch();
}

namespace {

// The decoded end of `ids`, at least `bytes` long when the whole text is. A stop string can only be
// completed by the newest token, so each step decodes a window of the last tokens instead of the
// whole answer (which made long answers with stop strings quadratic). The window doubles while its
// tokens decode to too little text (special tokens may decode to nothing).
std::string decoded_tail(const std::function<std::string(const std::vector<int32_t>&)>& decode,
                         const std::vector<int32_t>& ids, std::size_t bytes) {
  for (std::size_t tokens = std::max<std::size_t>(bytes, 1);; tokens *= 2) {
    if (tokens >= ids.size()) return decode(ids);
    auto text = decode(std::vector<int32_t>(ids.end() - static_cast<std::ptrdiff_t>(tokens), ids.end()));
    if (text.size() >= bytes) return text;
  }
}

}  // namespace

void GenerationEngine::State::advance(Sequence& sequence, const torch::Tensor& logits_row) const {
  const auto& params = sequence.request.params;
  auto& result = sequence.result;
  const auto token = sequence.sampler.next(logits_row, sequence.history, sequence.request.prompt.size());
  sequence.history.push_back(token);
  result.ids.push_back(token);

  TokenLogprob entry{token, 0.0F, {}};
  if (params.logprobs || params.top_logprobs > 0) {
    const auto log_probabilities = torch::log_softmax(logits_row, 0);
    entry.logprob = log_probabilities[token].item<float>();
    if (params.top_logprobs > 0) {
      auto [values, ids] = log_probabilities.topk(params.top_logprobs);
      for (int64_t i = 0; i < values.size(0); ++i) {
        entry.top.emplace_back(static_cast<int32_t>(ids[i].item<int64_t>()), values[i].item<float>());
      }
    }
    if (params.logprobs) result.logprobs.push_back(entry);
  }

  if (sequence.is_stop_token(token)) result.finish_reason = "stop";
  if (sequence.request.on_token) {
    bool wants_more = false;
    try {
      wants_more = sequence.request.on_token(entry);
    } catch (...) {
      wants_more = false;  // a callback that throws is a client gone away
    }
    if (!wants_more && !sequence.finished()) result.finish_reason = "abort";
  }
  if (!sequence.finished() && !params.stop.empty()) {
    std::size_t longest = 0;
    for (const auto& stop : params.stop) longest = std::max(longest, stop.size());
    // 4 more bytes than the longest stop string: the window may start inside a character (up to 3
    // bytes that decode as one replacement character) or lose a leading space to the decoder.
    const auto text = decoded_tail(options.decode, result.ids, longest + 4);
    std::size_t earliest = std::string::npos;
    for (const auto& stop : params.stop) {
      const auto at = text.find(stop);
      if (at < earliest) {
        earliest = at;
        result.stop_string = stop;
      }
    }
    if (earliest != std::string::npos) result.finish_reason = "stop";
  }
  if (!sequence.finished() && static_cast<int64_t>(result.ids.size()) >= params.max_new_tokens) {
    result.finish_reason = "length";
  }
}

void GenerationEngine::State::deliver(Sequence& sequence) const {
  if (sequence.delivered) return;
  try {
    auto& result = sequence.result;
    if (options.decode) {
      auto ids = result.ids;
      if (!ids.empty() && sequence.is_stop_token(ids.back())) ids.pop_back();
      result.text = options.decode(ids);
      if (!result.stop_string.empty()) result.text.erase(std::min(result.text.find(result.stop_string), result.text.size()));
    }
    sequence.delivered = true;
    sequence.request.promise.set_value(std::move(result));
  } catch (...) {
    sequence.fail(std::current_exception());
  }
}

// Delivers the finished rows and removes them (and the key columns no remaining row uses).
void GenerationEngine::State::drop_finished(std::vector<std::unique_ptr<Sequence>>& rows, KVCache& rows_cache,
                                            torch::Tensor& rows_padding) const {
  std::vector<int64_t> keep;
  std::vector<std::unique_ptr<Sequence>> remaining;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows[r]->finished()) {
      deliver(*rows[r]);
    } else {
      keep.push_back(static_cast<int64_t>(r));
      remaining.push_back(std::move(rows[r]));
    }
  }
  const bool changed = remaining.size() != rows.size();
  rows = std::move(remaining);
  if (!changed || rows.empty()) return;
  const auto index = torch::tensor(keep, torch::kLong).to(device);
  rows_cache.select_rows(index);
  rows_padding = rows_padding.index_select(0, index);
  const auto leading_padding = rows_padding.any(0).to(torch::kInt64).argmax().item<int64_t>();
  if (leading_padding > 0) {
    rows_cache.drop_front(leading_padding);
    rows_padding = rows_padding.slice(1, leading_padding);
  }
}

void GenerationEngine::State::join_batch(std::vector<std::unique_ptr<Sequence>> rows, const KVCache& rows_cache,
                                         const torch::Tensor& rows_padding) {
  if (rows.empty()) return;
  if (batch.empty()) {
    cache = rows_cache;
    padding = rows_padding;
  } else {
    const auto width = std::max(padding.size(1), rows_padding.size(1));
    cache.append_rows(rows_cache);
    padding = torch::cat({left_pad_columns(padding, width), left_pad_columns(rows_padding, width)}, 0);
  }
  for (auto& row : rows) batch.push_back(std::move(row));
}

void GenerationEngine::State::clear_batch() {
  batch.clear();
  cache.clear();
  padding = torch::Tensor();
}

void GenerationEngine::State::abort_everything() {
  for (auto& sequence : batch) {
    sequence->result.finish_reason = "abort";
    deliver(*sequence);
  }
  clear_batch();
  active = 0;
  std::lock_guard lock(mutex);
  for (auto& request : queue) {
    Generation aborted;
    aborted.finish_reason = "abort";
    request.promise.set_value(std::move(aborted));
  }
  queue.clear();
}

GenerationEngine::GenerationEngine(CausalLM model, EngineOptions options)
    : state_(std::make_unique<State>(std::move(model), std::move(options))) {
  if (state_->options.max_batch_size < 1) fail("max_batch_size must be >= 1 (got {})", state_->options.max_batch_size);
  state_->thread = std::thread([state = state_.get()] { state->run(); });
}

GenerationEngine::~GenerationEngine() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
}

namespace {

// Validates a request against the model and fits its max_new_tokens; throws what the engine refuses.
void prepare(GenerationRequest& request, const ModelConfig& config, const EngineOptions& options) {
  auto& params = request.params;
  check_prompt(request.prompt, config.vocab_size);
  check_params(params, config.vocab_size, static_cast<bool>(options.decode));
  const auto limit = config.max_position_embeddings;
  const auto prompt_length = static_cast<int64_t>(request.prompt.size());
  if (limit > 0 && options.fit_max_new_tokens) {
    if (prompt_length >= limit) {
      fail("the prompt of {} tokens leaves no room under the model's max_position_embeddings ({})", prompt_length, limit);
    }
    params.max_new_tokens = std::min(params.max_new_tokens, limit - prompt_length);
  } else if (limit > 0 && prompt_length + params.max_new_tokens > limit) {
    fail("the prompt of {} tokens plus max_new_tokens {} exceeds the model's max_position_embeddings ({})",
         prompt_length, params.max_new_tokens, limit);
  }
}

}  // namespace

std::future<Generation> GenerationEngine::submit(std::vector<int32_t> prompt, SamplingParams params,
                                                 StreamCallback on_token) {
  std::vector<GenerationRequest> one;
  one.push_back({std::move(prompt), std::move(params), std::move(on_token)});
  return std::move(submit_all(std::move(one)).front());
}

std::vector<std::future<Generation>> GenerationEngine::submit_all(std::vector<GenerationRequest> requests) {
  std::vector<std::future<Generation>> futures;
  std::vector<Request> accepted;
  for (auto& request : requests) {
    std::promise<Generation> promise;
    futures.push_back(promise.get_future());
    try {
      prepare(request, state_->model->config(), state_->options);
    } catch (...) {
      promise.set_exception(std::current_exception());
      continue;
    }
    if (request.params.max_new_tokens == 0) {
      Generation empty;
      empty.finish_reason = "length";
      promise.set_value(std::move(empty));
      continue;
    }
    accepted.push_back(
        Request{std::move(request.prompt), std::move(request.params), std::move(request.on_token), std::move(promise)});
  }
  if (accepted.empty()) return futures;
  {
    std::lock_guard lock(state_->mutex);
    for (auto& request : accepted) state_->queue.push_back(std::move(request));
  }
  state_->wake.notify_one();
  return futures;
}

std::vector<Generation> GenerationEngine::generate_all(const std::vector<std::vector<int32_t>>& prompts,
                                                       const SamplingParams& params) {
  std::vector<GenerationRequest> requests;
  for (const auto& prompt : prompts) {
    for (int64_t sample = 0; sample < std::max<int64_t>(1, params.n); ++sample) {
      SamplingParams one = params;
      one.n = 1;
      if (params.seed) one.seed = *params.seed + static_cast<uint64_t>(sample);
      requests.push_back({prompt, one});
    }
  }
  std::vector<Generation> results;
  results.reserve(requests.size());
  for (auto& future : submit_all(std::move(requests))) results.push_back(future.get());
  return results;
}

int64_t GenerationEngine::max_batch_size() const { return state_->options.max_batch_size; }

int64_t GenerationEngine::active_sequences() const { return state_->active.load(); }

int64_t GenerationEngine::waiting_requests() const {
  std::lock_guard lock(state_->mutex);
  return static_cast<int64_t>(state_->queue.size());
}

}  // namespace lathe
