#include "lathe/infer/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <future>
#include <map>
#include <numeric>

#include "lathe/infer/engine.h"

namespace lathe {

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed.value_or(std::random_device{}())) {}

torch::Tensor Sampler::penalized(const torch::Tensor& logits_row, const std::vector<int32_t>& history,
                                 std::size_t prompt_length) const {
  auto logits = logits_row.to(torch::kCPU, torch::kFloat32).contiguous().clone();
  float* values = logits.data_ptr<float>();
  const auto vocab = logits.numel();
  auto in_vocab = [vocab](int32_t token) { return token >= 0 && token < vocab; };
  if (params_.repetition_penalty != 1.0) {
    std::vector<int32_t> seen(history);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (auto token : seen) {
      if (!in_vocab(token)) continue;
      float& value = values[token];
      value = value > 0 ? static_cast<float>(value / params_.repetition_penalty)
                        : static_cast<float>(value * params_.repetition_penalty);
    }
  }
  if (params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0) {
    std::map<int32_t, int64_t> counts;
    for (std::size_t i = std::min(prompt_length, history.size()); i < history.size(); ++i) ++counts[history[i]];
    for (const auto& [token, count] : counts) {
      if (!in_vocab(token)) continue;
      values[token] -= static_cast<float>(params_.presence_penalty + params_.frequency_penalty * count);
    }
  }
  return logits;
}

std::pair<torch::Tensor, torch::Tensor> Sampler::kept(const torch::Tensor& penalized_logits) const {
  const auto scaled = penalized_logits / params_.temperature;
  const int64_t vocabulary = scaled.size(0);
  // Sorting a 151,936-token row for every sampled token cost more than a small model's whole step:
  // without top-p or min-p no order is needed (every token, in vocabulary order), and top-k alone
  // needs only the k likeliest.
  if (params_.top_p >= 1.0 && params_.min_p <= 0.0) {
    if (params_.top_k <= 0 || params_.top_k >= vocabulary) {
      return {torch::softmax(scaled, 0).contiguous(), torch::arange(vocabulary, torch::kLong)};
    }
    auto [values, order] = scaled.topk(params_.top_k);
    return {torch::softmax(values, 0).contiguous(), order};
  }
  auto [sorted, order] = scaled.sort(/*dim=*/0, /*descending=*/true);
  auto probabilities = torch::softmax(sorted, 0);
  int64_t keep = sorted.size(0);
  if (params_.top_k > 0) keep = std::min(keep, params_.top_k);
  if (params_.top_p < 1.0) {
    // Smallest prefix of the top-k (renormalised) whose mass reaches top_p; at least one token.
    auto head = probabilities.slice(0, 0, keep);
    const int64_t below = ((head / head.sum()).cumsum(0) < params_.top_p).sum().item<int64_t>();
    keep = std::min(keep, below + 1);
  }
  if (params_.min_p > 0.0) {
    const double threshold = params_.min_p * probabilities[0].item<double>();
    keep = std::min(keep, std::max<int64_t>(1, (probabilities >= threshold).sum().item<int64_t>()));
  }
  return {probabilities.slice(0, 0, keep).contiguous(), order.slice(0, 0, keep)};
}

torch::Tensor Sampler::distribution(const torch::Tensor& penalized_logits) const {
  auto result = torch::zeros_like(penalized_logits, torch::kFloat32);
  if (greedy()) {
    result[penalized_logits.argmax().item<int64_t>()] = 1.0F;
    return result;
  }
  auto [probabilities, ids] = kept(penalized_logits);
  return result.index_put_({ids}, probabilities / probabilities.sum());
}

int32_t Sampler::next(const torch::Tensor& logits_row, const std::vector<int32_t>& history,
                      std::size_t prompt_length) {
  const auto logits = penalized(logits_row, history, prompt_length);
  if (greedy()) return static_cast<int32_t>(logits.argmax().item<int64_t>());
  auto [probabilities, ids] = kept(logits);
  const float* p = probabilities.data_ptr<float>();
  const int64_t count = probabilities.size(0);
  const double total = std::accumulate(p, p + count, 0.0);
  double draw = std::uniform_real_distribution<double>(0.0, total)(rng_);
  int64_t chosen = count - 1;
  for (int64_t i = 0; i < count; ++i) {
    draw -= p[i];
    if (draw < 0) {
      chosen = i;
      break;
    }
  }
  return static_cast<int32_t>(ids[chosen].item<int64_t>());
}

int32_t Sampler::next(const torch::Tensor& logits_row, const std::vector<int32_t>& history) {
  return next(logits_row, history, 0);
}

std::vector<Generation> generate(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const SamplingParams& params, const TokenCallback& on_token) {
  if (prompts.empty()) return {};
  EngineOptions options;
  options.max_batch_size = static_cast<int64_t>(prompts.size());
  options.fit_max_new_tokens = true;
  GenerationEngine engine(model, options);
  std::vector<GenerationRequest> requests;
  for (std::size_t row = 0; row < prompts.size(); ++row) {
    SamplingParams row_params = params;
    if (params.seed) row_params.seed = *params.seed + row;  // distinct but reproducible per row
    StreamCallback stream;
    if (on_token) stream = [&on_token, row](const TokenLogprob& token) { return on_token(row, token.token); };
    requests.push_back({prompts[row], row_params, stream});
  }
  std::vector<Generation> results;
  for (auto& future : engine.submit_all(std::move(requests))) {
    results.push_back(future.get());
    if (results.back().finish_reason == "abort") results.back().finish_reason = "stop";  // the callback said so
  }
  return results;
}

}  // namespace lathe
