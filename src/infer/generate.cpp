#include "lathe/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "common/format.h"

namespace lathe {

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed.value_or(std::random_device{}())) {}

static void apply_repetition_penalty(torch::Tensor& logits, const std::vector<int32_t>& history,
                                     double penalty) {
  if (penalty == 1.0 || history.empty()) return;
  std::vector<int64_t> seen(history.begin(), history.end());
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  auto index = torch::tensor(seen, torch::kLong);
  auto values = logits.index_select(0, index);
  values = torch::where(values > 0, values / penalty, values * penalty);
  logits.index_copy_(0, index, values);
}

int32_t Sampler::next(const torch::Tensor& logits_row, const std::vector<int32_t>& history) {
  auto logits = logits_row.to(torch::kFloat32).clone();
  apply_repetition_penalty(logits, history, params_.repetition_penalty);
  if (params_.temperature <= 0.0 || params_.top_k == 1) return static_cast<int32_t>(logits.argmax().item<int64_t>());

  logits = logits / params_.temperature;
  auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/true);
  auto probabilities = torch::softmax(sorted, 0);
  int64_t keep = sorted.size(0);
  if (params_.top_k > 0) keep = std::min(keep, params_.top_k);
  if (params_.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    auto cumulative = probabilities.cumsum(0);
    const int64_t below = (cumulative < params_.top_p).sum().item<int64_t>();
    keep = std::min(keep, below + 1);
  }
  auto kept = probabilities.slice(0, 0, keep).contiguous();
  const float* p = kept.data_ptr<float>();
  const double total = std::accumulate(p, p + keep, 0.0);
  double draw = std::uniform_real_distribution<double>(0.0, total)(rng_);
  int64_t chosen = keep - 1;
  for (int64_t i = 0; i < keep; ++i) {
    draw -= p[i];
    if (draw < 0) {
      chosen = i;
      break;
    }
  }
  return static_cast<int32_t>(order[chosen].item<int64_t>());
}

namespace {

// One batch of rows being decoded together. Rows are left-padded, so every row's next token is
// at the last column; `padding` marks real tokens of the keys seen so far.
struct Batch {
  std::vector<std::size_t> rows;  // original prompt index of each live row
  torch::Tensor padding;          // bool [live, keys]
  torch::Tensor next_position;    // int64 [live]
};

torch::Tensor left_padded(const std::vector<std::vector<int32_t>>& prompts, int64_t width,
                          torch::Tensor& padding) {
  const auto count = static_cast<int64_t>(prompts.size());
  auto ids = torch::zeros({count, width}, torch::kLong);
  padding = torch::zeros({count, width}, torch::kBool);
  for (int64_t r = 0; r < count; ++r) {
    const auto& prompt = prompts[r];
    const auto offset = width - static_cast<int64_t>(prompt.size());
    auto row = ids[r];
    for (std::size_t i = 0; i < prompt.size(); ++i) row[offset + i] = static_cast<int64_t>(prompt[i]);
    padding[r].slice(0, offset, width).fill_(true);
  }
  return ids;
}

}  // namespace

std::vector<Generation> generate(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const SamplingParams& params, const TokenCallback& on_token) {
  torch::NoGradGuard no_grad;
  std::vector<Generation> results(prompts.size());
  if (prompts.empty()) return results;
  int64_t width = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) fail("prompt {} is empty: generation needs at least one token", i);
    width = std::max<int64_t>(width, static_cast<int64_t>(prompts[i].size()));
  }
  const auto limit = model->config().max_position_embeddings;
  if (limit > 0 && width >= limit) {
    fail("prompt of {} tokens does not fit the model's max_position_embeddings ({})", width, limit);
  }

  Batch batch;
  batch.rows.resize(prompts.size());
  std::iota(batch.rows.begin(), batch.rows.end(), std::size_t{0});
  auto input_ids = left_padded(prompts, width, batch.padding);
  auto positions = (batch.padding.to(torch::kLong).cumsum(1) - 1).clamp_min(0);
  batch.next_position = positions.select(1, width - 1) + 1;

  std::vector<Sampler> samplers;
  std::vector<std::vector<int32_t>> histories(prompts);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    SamplingParams row_params = params;
    if (params.seed) row_params.seed = *params.seed + i;  // distinct but reproducible per row
    samplers.emplace_back(row_params);
  }

  KVCache cache;
  ForwardInputs inputs{input_ids, positions, causal_padding_mask(batch.padding, width), &cache};
  for (int64_t step = 0; step < params.max_new_tokens && !batch.rows.empty(); ++step) {
    auto hidden = model->forward(inputs);
    auto logits = model->logits(hidden.select(1, hidden.size(1) - 1)).to(torch::kFloat32);

    std::vector<int64_t> next_tokens, keep;
    for (std::size_t live = 0; live < batch.rows.size(); ++live) {
      const std::size_t row = batch.rows[live];
      const int32_t token = samplers[row].next(logits[static_cast<int64_t>(live)], histories[row]);
      histories[row].push_back(token);
      results[row].ids.push_back(token);
      const bool is_stop = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(),
                                     token) != params.stop_token_ids.end();
      const bool wants_more = on_token ? on_token(row, token) : true;
      if (is_stop || !wants_more) {
        results[row].finish_reason = "stop";
      } else {
        keep.push_back(static_cast<int64_t>(live));
        next_tokens.push_back(token);
      }
    }
    if (keep.size() != batch.rows.size()) {
      auto rows = torch::tensor(keep, torch::kLong);
      cache.select_rows(rows);
      batch.padding = batch.padding.index_select(0, rows);
      batch.next_position = batch.next_position.index_select(0, rows);
      std::vector<std::size_t> remaining;
      for (auto live : keep) remaining.push_back(batch.rows[static_cast<std::size_t>(live)]);
      batch.rows = std::move(remaining);
      if (batch.rows.empty()) break;
    }
    const auto live_count = static_cast<int64_t>(batch.rows.size());
    batch.padding = torch::cat({batch.padding, torch::ones({live_count, 1}, torch::kBool)}, 1);
    inputs.input_ids = torch::tensor(next_tokens, torch::kLong).view({live_count, 1});
    inputs.position_ids = batch.next_position.view({live_count, 1});
    inputs.attention_mask = causal_padding_mask(batch.padding, 1);
    batch.next_position = batch.next_position + 1;
  }
  for (auto& result : results) {
    if (result.finish_reason.empty()) result.finish_reason = "length";
  }
  return results;
}

}  // namespace lathe
