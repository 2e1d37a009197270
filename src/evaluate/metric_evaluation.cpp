#include "lathe/evaluate/metric_evaluation.h"

#include <torch/torch.h>

#include <algorithm>

#include "lathe/common/format.h"

namespace lathe {

struct MetricEvaluation::Entry {
  std::string name, origin;
  std::shared_ptr<Metric> metric;
  EvalPrediction prediction;

  // Runs `body`, naming this metric in any error it throws.
  template <class Body>
  auto guarded(const std::string& when, Body&& body) {
    try {
      return body();
    } catch (const std::exception& error) {
      fail("metric '{}' ({}) failed{}{}: {}", name, origin, when.empty() ? "" : " ", when, error.what());
    }
  }
};

MetricEvaluation::MetricEvaluation(const Arguments& arguments, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    const auto& registered = metric_registry().get(name);
    entries_.push_back(std::make_shared<Entry>(Entry{name, registered.origin, registered.factory(PluginContext(arguments, plugin_settings(arguments, name))), {}}));
  }
}

bool MetricEvaluation::any_generation() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const auto& entry) { return entry->metric->needs_generation(); });
}

bool MetricEvaluation::any_token_metric() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const auto& entry) { return !entry->metric->needs_generation(); });
}

void MetricEvaluation::add_batch(CausalLMImpl& model, const torch::Tensor& hidden, const torch::Tensor& labels,
                                 const std::string& when) {
  const auto length = hidden.size(1);
  for (auto& entry : entries_) {
    if (entry->metric->needs_generation()) continue;
    std::vector<torch::Tensor> rows;
    for (int64_t row = 0; row < hidden.size(0); ++row) {
      std::vector<torch::Tensor> pieces;
      for (int64_t start = 0; start < length; start += kEvaluationLogitChunk) {
        const auto size = std::min(kEvaluationLogitChunk, length - start);
        const auto logits = model.logits(hidden.slice(0, row, row + 1).narrow(1, start, size)).to(torch::kFloat32);
        const auto chunk_labels = labels.slice(0, row, row + 1).narrow(1, start, size).to(logits.device());
        auto piece = entry->guarded(when, [&] { return entry->metric->preprocess_logits(logits, chunk_labels); });
        if (!piece.defined()) break;  // the metric keeps nothing from the logits
        pieces.push_back(piece.to(torch::kCPU));
      }
      if (pieces.empty()) break;
      rows.push_back(torch::cat(pieces, 1));
    }
    if (rows.size() != static_cast<std::size_t>(hidden.size(0))) continue;
    entry->prediction.predictions.push_back(torch::cat(rows, 0));
    entry->prediction.labels.push_back(labels.to(torch::kCPU));
  }
}

void MetricEvaluation::set_generated(std::vector<std::string> generated, std::vector<std::string> references) {
  for (auto& entry : entries_) {
    if (!entry->metric->needs_generation()) continue;
    entry->prediction.generated = generated;
    entry->prediction.references = references;
  }
}

std::vector<std::pair<std::string, std::map<std::string, double>>> MetricEvaluation::compute(const std::string& when) {
  std::vector<std::pair<std::string, std::map<std::string, double>>> results;
  for (auto& entry : entries_) {
    results.emplace_back(entry->name, entry->guarded(when, [&] { return entry->metric->compute(entry->prediction); }));
    entry->prediction = EvalPrediction{};
  }
  return results;
}

}  // namespace lathe
