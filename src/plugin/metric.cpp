// Metric plugins (docs/plugins.md): `acc` over argmax token ids, `nlg` (ROUGE and BLEU) over
// generated text. The registry is at the bottom.
#include "lathe/plugin/metric.h"
#include "lathe/plugin/nlg.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lathe/common/format.h"

namespace lathe {
namespace {

// Token accuracy of next-token predictions: prediction t is compared with label t+1.
class AccuracyMetric : public Metric {
 public:
  explicit AccuracyMetric(std::string strategy) : strategy_(std::move(strategy)) {
    if (strategy_ != "token" && strategy_ != "seq") fail("--acc_strategy: '{}' (expected token or seq)", strategy_);
  }

  std::map<std::string, double> compute(const EvalPrediction& prediction) override {
    int64_t correct_tokens = 0, label_tokens = 0, correct_rows = 0, labelled_rows = 0;
    for (std::size_t batch = 0; batch < prediction.predictions.size(); ++batch) {
      auto predicted = prediction.predictions[batch].to(torch::kCPU, torch::kLong);
      auto labels = prediction.labels.at(batch).to(torch::kCPU, torch::kLong);
      if (predicted.dim() == 1) predicted = predicted.unsqueeze(0), labels = labels.unsqueeze(0);
      predicted = predicted.narrow(-1, 0, predicted.size(-1) - 1);
      labels = labels.narrow(-1, 1, labels.size(-1) - 1);
      const auto mask = labels.ne(-100);
      const auto matches = predicted.eq(labels).logical_and(mask);
      correct_tokens += matches.sum().item<int64_t>();
      label_tokens += mask.sum().item<int64_t>();
      const auto row_labels = mask.sum(-1), row_matches = matches.sum(-1);
      const auto has_labels = row_labels.gt(0);
      labelled_rows += has_labels.sum().item<int64_t>();
      correct_rows += row_matches.eq(row_labels).logical_and(has_labels).sum().item<int64_t>();
    }
    auto ratio = [](int64_t part, int64_t whole) { return whole == 0 ? 0.0 : static_cast<double>(part) / whole; };
    if (strategy_ == "seq") return {{"seq_acc", ratio(correct_rows, labelled_rows)}};
    return {{"token_acc", ratio(correct_tokens, label_tokens)}};
  }

 private:
  std::string strategy_;
};

// Means of ROUGE-1/2/L and BLEU-4 over the samples, times 100.
class NlgMetric : public Metric {
 public:
  bool needs_generation() const override { return true; }
  torch::Tensor preprocess_logits(const torch::Tensor&, const torch::Tensor&) override { return {}; }

  std::map<std::string, double> compute(const EvalPrediction& prediction) override {
    if (prediction.generated.size() != prediction.references.size()) {
      fail("nlg metric: {} responses for {} references", prediction.generated.size(), prediction.references.size());
    }
    std::map<std::string, double> sums{{"rouge-1", 0}, {"rouge-2", 0}, {"rouge-l", 0}, {"bleu-4", 0}};
    for (std::size_t i = 0; i < prediction.generated.size(); ++i) {
      const auto hypothesis = nlg_tokens(prediction.generated[i]), reference = nlg_tokens(prediction.references[i]);
      sums["rouge-1"] += rouge_n(hypothesis, reference, 1);
      sums["rouge-2"] += rouge_n(hypothesis, reference, 2);
      sums["rouge-l"] += rouge_l(hypothesis, reference);
      sums["bleu-4"] += sentence_bleu4(hypothesis, reference);
    }
    const double count = std::max<double>(1.0, static_cast<double>(prediction.generated.size()));
    for (auto& [name, sum] : sums) sum = sum / count * 100.0;
    return sums;
  }
};

bool is_cjk(utf8proc_int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2FA1F) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x3000 && c <= 0x30FF) || (c >= 0xFF00 && c <= 0xFFEF);
}

bool is_space(utf8proc_int32_t c) {
  const auto category = utf8proc_category(c);
  return c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || category == UTF8PROC_CATEGORY_ZS;
}

using NgramCounts = std::map<std::vector<std::string>, int64_t>;

NgramCounts ngram_counts(const std::vector<std::string>& tokens, int n) {
  NgramCounts counts;
  for (std::size_t i = 0; i + n <= tokens.size(); ++i) ++counts[{tokens.begin() + i, tokens.begin() + i + n}];
  return counts;
}

// Hypothesis n-grams also in the reference, each counted at most as often as the reference has it.
int64_t clipped_matches(const NgramCounts& hypothesis, const NgramCounts& reference) {
  int64_t matches = 0;
  for (const auto& [ngram, count] : hypothesis) {
    if (auto found = reference.find(ngram); found != reference.end()) matches += std::min(count, found->second);
  }
  return matches;
}

int64_t ngram_total(std::size_t length, int n) { return std::max<int64_t>(0, static_cast<int64_t>(length) - n + 1); }

// F1 = 2PR/(P+R) written with counts: 2 * overlap / (hypothesis count + reference count).
double f1(int64_t overlap, int64_t hypothesis_count, int64_t reference_count) {
  if (overlap == 0) return 0.0;
  return 2.0 * static_cast<double>(overlap) / static_cast<double>(hypothesis_count + reference_count);
}

}  // namespace

std::vector<std::string> nlg_tokens(std::string_view text) {
  std::vector<std::string> tokens;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) tokens.push_back(std::move(word)), word.clear();
  };
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  for (std::size_t at = 0; at < text.size();) {
    utf8proc_int32_t c = 0;
    auto length = utf8proc_iterate(bytes + at, static_cast<utf8proc_ssize_t>(text.size() - at), &c);
    if (length <= 0) length = 1, c = 0xFFFD;  // invalid byte: keep it inside the current word
    const std::string_view piece = text.substr(at, static_cast<std::size_t>(length));
    at += static_cast<std::size_t>(length);
    if (is_space(c)) {
      flush();
    } else if (is_cjk(c)) {
      flush();
      tokens.emplace_back(piece);
    } else {
      word += piece;
    }
  }
  flush();
  return tokens;
}

double rouge_n(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference, int n) {
  return f1(clipped_matches(ngram_counts(hypothesis, n), ngram_counts(reference, n)), ngram_total(hypothesis.size(), n),
            ngram_total(reference.size(), n));
}

double rouge_l(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference) {
  // One row of the LCS table at a time.
  std::vector<int64_t> previous(reference.size() + 1, 0), current(reference.size() + 1, 0);
  for (const auto& token : hypothesis) {
    for (std::size_t j = 1; j <= reference.size(); ++j) {
      current[j] = token == reference[j - 1] ? previous[j - 1] + 1 : std::max(previous[j], current[j - 1]);
    }
    std::swap(previous, current);
  }
  return f1(previous.back(), static_cast<int64_t>(hypothesis.size()), static_cast<int64_t>(reference.size()));
}

double sentence_bleu4(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference) {
  if (hypothesis.empty()) return 0.0;
  double log_precision_sum = 0.0;
  int unmatched_orders = 0;
  for (int n = 1; n <= 4; ++n) {
    const auto matches = clipped_matches(ngram_counts(hypothesis, n), ngram_counts(reference, n));
    // As NLTK: the denominator is at least 1 even when the hypothesis is shorter than n.
    const auto total = std::max<int64_t>(1, ngram_total(hypothesis.size(), n));
    if (n == 1 && matches == 0) return 0.0;  // no unigram in common: BLEU is 0 whatever the smoothing
    double precision = static_cast<double>(matches) / static_cast<double>(total);
    if (matches == 0) precision = 1.0 / (std::pow(2.0, ++unmatched_orders) * static_cast<double>(total));
    log_precision_sum += 0.25 * std::log(precision);
  }
  const double hypothesis_length = static_cast<double>(hypothesis.size());
  const double reference_length = static_cast<double>(reference.size());
  const double brevity = hypothesis_length > reference_length ? 1.0 : std::exp(1.0 - reference_length / hypothesis_length);
  return brevity * std::exp(log_precision_sum);
}

Registry<MetricFactory>& metric_registry() {
  static Registry<MetricFactory> registry = [] {
    Registry<MetricFactory> built_ins("metric");
    built_ins.add("acc", "next-token accuracy ignoring -100 (--acc_strategy token: token_acc, seq: seq_acc)",
                  [](const PluginContext& context) { return std::make_shared<AccuracyMetric>(context.arguments.acc_strategy); });
    built_ins.add("nlg", "ROUGE-1/2/L F1 and BLEU-4 (NIST smoothing) of generated text, x100",
                  [](const PluginContext&) { return std::make_shared<NlgMetric>(); });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
