// lathe rlhf's objectives (alignment.h): the per-sequence log-probabilities, the reference, and the
// losses and metrics of dpo, cpo / simpo, orpo, kto and rm as ms-swift computes them.
#include "lathe/train/alignment.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "lathe/common/format.h"
#include "lathe/model/classifier.h"
#include "lathe/plugin/preference_loss.h"
#include "lathe/train/grpo.h"
#include "lathe/plugin/token_losses.h"

namespace lathe {
namespace {

namespace F = torch::nn::functional;

torch::Tensor packed_ids(const std::vector<TokenSequence>& sequences, std::vector<int64_t>& lengths) {
  std::vector<int64_t> ids;
  for (const auto& sequence : sequences) {
    ids.insert(ids.end(), sequence.input_ids.begin(), sequence.input_ids.end());
    lengths.push_back(static_cast<int64_t>(sequence.input_ids.size()));
  }
  return torch::tensor(ids, torch::kLong).unsqueeze(0);
}

// Which row positions predict a trained token (position t predicts labels[t + 1] of the same
// sequence), what they predict, and whose they are.
struct TrainedPositions {
  std::vector<int64_t> positions, targets, sequence;
};

TrainedPositions trained_positions(const std::vector<TokenSequence>& sequences) {
  TrainedPositions trained;
  int64_t offset = 0;
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const auto& labels = sequences[s].labels;
    for (std::size_t t = 0; t + 1 < labels.size(); ++t) {
      if (labels[t + 1] == kIgnoreIndex) continue;
      trained.positions.push_back(offset + static_cast<int64_t>(t));
      trained.targets.push_back(labels[t + 1]);
      trained.sequence.push_back(static_cast<int64_t>(s));
    }
    offset += static_cast<int64_t>(labels.size());
  }
  return trained;
}

}  // namespace

SequenceScores score_sequences(CausalLM& model, const std::vector<TokenSequence>& sequences) {
  std::vector<int64_t> lengths;
  const auto ids = packed_ids(sequences, lengths);
  const auto hidden = model->forward({ids, packed_position_ids(lengths), {}, nullptr, lengths}).squeeze(0);
  const auto trained = trained_positions(sequences);
  const auto count = static_cast<int64_t>(sequences.size());
  SequenceScores scores;
  scores.token_sequence = torch::tensor(trained.sequence, torch::kLong);
  const auto rows = hidden.index_select(0, torch::tensor(trained.positions, torch::kLong));
  const auto head = model->output_weight();
  scores.token_logps = -chunked_token_cross_entropy(rows, head, torch::tensor(trained.targets, torch::kLong));
  scores.logps = torch::zeros({count}, scores.token_logps.options()).index_add(0, scores.token_sequence, scores.token_logps);
  scores.tokens = torch::zeros({count}, torch::kFloat32)
                      .index_add(0, scores.token_sequence, torch::ones({rows.size(0)}, torch::kFloat32));
  {
    // The mean over the vocabulary of a row's logits is the row times the head's mean row.
    torch::NoGradGuard no_grad;
    const auto mean_row = head.to(torch::kFloat32).mean(0);
    const auto token_means = torch::mv(rows.detach().to(torch::kFloat32), mean_row);
    scores.mean_logits = torch::zeros({count}, torch::kFloat32).index_add(0, scores.token_sequence, token_means);
  }
  return scores;
}

SequenceScores reference_scores(const AlignmentReference& reference, CausalLM& policy,
                                const std::vector<TokenSequence>& sequences) {
  torch::NoGradGuard no_grad;
  if (reference.kind == AlignmentReference::Kind::frozen_model) {
    auto frozen = reference.model;
    return score_sequences(frozen, sequences);
  }
  AdaptersBypassed bypass;
  return score_sequences(policy, sequences);
}

torch::Tensor sequence_rewards(CausalLM& model, const std::vector<TokenSequence>& sequences) {
  if (model->config().num_labels != 1) {
    fail("rm scores with a one-label sequence classifier (the model has {})",
         model->is_classifier() ? fmt::format("{} labels", *model->config().num_labels) : "an output head over the vocabulary");
  }
  std::vector<std::span<const int32_t>> ids;
  for (const auto& sequence : sequences) ids.push_back(sequence.input_ids);
  return classifier_logits(model, ids).squeeze(-1);
}

torch::Tensor reward_model_losses(const torch::Tensor& chosen, const torch::Tensor& rejected, const torch::Tensor& margins) {
  return -F::logsigmoid(chosen - rejected - margins);
}

namespace {

// Sequence s of `examples` laid out as alignment.h says: every example's first segment, then
// every example's second.
std::vector<TokenSequence> split_segments(const std::vector<const Example*>& examples, std::size_t segment) {
  std::vector<TokenSequence> sequences;
  for (const auto* example : examples) {
    if (example->segment_lengths.size() != 2) {
      fail("an alignment example holds two sequences end to end (got {})", example->segment_lengths.size());
    }
    const auto start = segment == 0 ? 0 : static_cast<std::size_t>(example->segment_lengths[0]);
    const auto length = static_cast<std::size_t>(example->segment_lengths[segment]);
    sequences.push_back({std::span<const int32_t>(example->input_ids).subspan(start, length),
                         std::span<const int32_t>(example->labels).subspan(start, length)});
  }
  return sequences;
}

std::vector<TokenSequence> both_segments(const std::vector<const Example*>& examples) {
  auto sequences = split_segments(examples, 0);
  auto second = split_segments(examples, 1);
  sequences.insert(sequences.end(), second.begin(), second.end());
  return sequences;
}

double sum_of(const torch::Tensor& values) { return values.defined() ? values.sum().item<double>() : 0.0; }

// A mean of `values` over `count` with nothing to average treated as 0 (a side with no trained
// token contributes no NaN).
torch::Tensor safe_mean(const torch::Tensor& sum, const torch::Tensor& count) { return sum / count.clamp_min(1); }

// The chosen / rejected halves of a [2B] tensor.
std::pair<torch::Tensor, torch::Tensor> halves(const torch::Tensor& values) {
  const auto pairs = values.size(0) / 2;
  return {values.slice(0, 0, pairs), values.slice(0, pairs)};
}

// The policy's scores of the pairs with everything both pairwise objectives log.
struct PairScores {
  SequenceScores scores;
  torch::Tensor chosen, rejected;  // summed log-probabilities [B]
  torch::Tensor chosen_tokens, rejected_tokens;
  torch::Tensor nll;  // the chosen tokens' mean NLL
  int64_t pairs = 0;
};

PairScores score_pairs(CausalLM& model, const std::vector<const Example*>& examples) {
  PairScores pair;
  pair.pairs = static_cast<int64_t>(examples.size());
  pair.scores = score_sequences(model, both_segments(examples));
  std::tie(pair.chosen, pair.rejected) = halves(pair.scores.logps);
  std::tie(pair.chosen_tokens, pair.rejected_tokens) = halves(pair.scores.tokens);
  const auto chosen_token = pair.scores.token_sequence < pair.pairs;
  pair.nll = -safe_mean(pair.scores.token_logps.masked_select(chosen_token).sum(), pair.chosen_tokens.sum());
  return pair;
}

void add_pair_logging(MetricTotals& metrics, const PairScores& pair) {
  const auto count = static_cast<double>(pair.pairs);
  metrics.add("logps/chosen", sum_of(pair.chosen.detach()), count);
  metrics.add("logps/rejected", sum_of(pair.rejected.detach()), count);
  const auto [chosen_logits, rejected_logits] = halves(pair.scores.mean_logits);
  metrics.add("logits/chosen", sum_of(chosen_logits), sum_of(pair.chosen_tokens));
  metrics.add("logits/rejected", sum_of(rejected_logits), sum_of(pair.rejected_tokens));
}

void add_rewards(MetricTotals& metrics, const torch::Tensor& chosen_rewards, const torch::Tensor& rejected_rewards) {
  const auto count = static_cast<double>(chosen_rewards.size(0));
  metrics.add("rewards/chosen", sum_of(chosen_rewards), count);
  metrics.add("rewards/rejected", sum_of(rejected_rewards), count);
  metrics.add("rewards/accuracies", sum_of((chosen_rewards > rejected_rewards).to(torch::kFloat32)), count);
  metrics.add("rewards/margins", sum_of(chosen_rewards - rejected_rewards), count);
}

// LD-DPO: each side's log-probability counts its first min(chosen, rejected) trained tokens fully
// and the rest times ld_alpha, so that the longer answer gains nothing from its length.
std::pair<torch::Tensor, torch::Tensor> length_desensitised(const PairScores& pair, double ld_alpha) {
  const auto sequence = pair.scores.token_sequence;
  // The ordinal of each token within its sequence: tokens come in row order, sequence by sequence.
  const auto starts = torch::cumsum(pair.scores.tokens, 0) - pair.scores.tokens;
  const auto ordinal = torch::arange(sequence.size(0), torch::kFloat32) - starts.index_select(0, sequence);
  const auto shared = torch::minimum(pair.chosen_tokens, pair.rejected_tokens);
  const auto limit = torch::cat({shared, shared}).index_select(0, sequence);
  const auto weights = torch::where(ordinal < limit, torch::ones_like(ordinal), torch::full_like(ordinal, ld_alpha));
  const auto logps = torch::zeros({2 * pair.pairs}, pair.scores.token_logps.options())
                         .index_add(0, sequence, pair.scores.token_logps * weights.to(pair.scores.token_logps.scalar_type()));
  return halves(logps);
}

class DpoObjective : public TrainingObjective {
 public:
  DpoObjective(const Arguments& arguments, AlignmentReference reference)
      : reference_(std::move(reference)), beta_(dpo_beta(arguments)), rpo_alpha_(arguments.rpo_alpha),
        ld_alpha_(arguments.ld_alpha) {
    names_ = arguments.loss_type.empty() ? std::vector<std::string>{"sigmoid"} : arguments.loss_type;
    weights_ = arguments.loss_weights.empty() ? std::vector<double>(names_.size(), 1.0) : arguments.loss_weights;
    if (weights_.size() != names_.size()) {
      fail("--loss_weights: one weight per --loss_type entry ({} losses, {} weights)", names_.size(), weights_.size());
    }
    for (const auto& name : names_) {
      losses_.push_back(preference_loss_registry().create(name, arguments));
      origins_.push_back(preference_loss_registry().get(name).origin);
    }
    logs_nll_ = rpo_alpha_.has_value() || std::find(names_.begin(), names_.end(), "sft") != names_.end();
    warn_of_ignored_smoothing(arguments.label_smoothing);
    any_means_ = std::any_of(names_.begin(), names_.end(), preference_loss_uses_means);
  }

  std::string name() const override { return fmt::format("dpo ({})", fmt::join(names_, ", ")); }

  torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t examples_in_step,
                     MetricTotals& metrics) override {
    auto pair = score_pairs(model, examples);
    const auto reference = reference_scores(reference_, model, both_segments(examples));
    const auto [reference_chosen, reference_rejected] = halves(reference.logps);
    auto [chosen, rejected] = ld_alpha_ ? length_desensitised(pair, *ld_alpha_) : std::pair{pair.chosen, pair.rejected};
    torch::Tensor total, chosen_rewards, rejected_rewards;
    for (std::size_t k = 0; k < losses_.size(); ++k) {
      PreferenceLogps logps{chosen, rejected, reference_chosen, reference_rejected, pair.nll};
      if (preference_loss_uses_means(names_[k])) {
        logps = {safe_mean(chosen, pair.chosen_tokens), safe_mean(rejected, pair.rejected_tokens),
                 safe_mean(reference_chosen, pair.chosen_tokens), safe_mean(reference_rejected, pair.rejected_tokens),
                 pair.nll};
      }
      auto per_pair = call_loss(k, logps, pair.pairs) * weights_[k];
      total = total.defined() ? total + per_pair : per_pair;
      // ms-swift's rewards: beta times each loss's log-ratios, summed with the loss weights.
      auto chosen_reward = (beta_ * weights_[k]) * (logps.policy_chosen - logps.reference_chosen).detach();
      auto rejected_reward = (beta_ * weights_[k]) * (logps.policy_rejected - logps.reference_rejected).detach();
      chosen_rewards = chosen_rewards.defined() ? chosen_rewards + chosen_reward : chosen_reward;
      rejected_rewards = rejected_rewards.defined() ? rejected_rewards + rejected_reward : rejected_reward;
    }
    if (rpo_alpha_) total = total + *rpo_alpha_ * pair.nll;
    add_rewards(metrics, chosen_rewards, rejected_rewards);
    add_pair_logging(metrics, pair);
    if (logs_nll_) metrics.add("nll_loss", pair.nll.item<double>() * static_cast<double>(pair.pairs), static_cast<double>(pair.pairs));
    if (any_means_) {
      metrics.add("logps_mean/chosen", sum_of(safe_mean(pair.chosen, pair.chosen_tokens).detach()), static_cast<double>(pair.pairs));
      metrics.add("logps_mean/rejected", sum_of(safe_mean(pair.rejected, pair.rejected_tokens).detach()), static_cast<double>(pair.pairs));
    }
    return total.sum() / static_cast<double>(std::max<int64_t>(1, examples_in_step));
  }

 private:
  // As ms-swift warns: these built-ins have no label-smoothed form.
  void warn_of_ignored_smoothing(double smoothing) const {
    static const std::set<std::string> unsmoothed{"hinge", "ipo", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"};
    for (const auto& name : names_) {
      if (smoothing > 0 && unsmoothed.contains(name)) {
        fmt::print(stderr, "lathe: --label_smoothing {} has no effect on the {} loss\n", smoothing, name);
      }
    }
  }

  torch::Tensor call_loss(std::size_t k, const PreferenceLogps& logps, int64_t pairs) {
    torch::Tensor per_pair;
    try {
      per_pair = losses_[k](logps);
    } catch (const std::exception& error) {
      fail("preference loss '{}' ({}) failed: {}", names_[k], origins_[k], error.what());
    }
    if (!per_pair.defined() || per_pair.dim() != 1 || per_pair.size(0) != pairs) {
      fail("preference loss '{}' ({}) must return one loss per pair, [{}]", names_[k], origins_[k], pairs);
    }
    return per_pair.to(torch::kFloat32);
  }

  AlignmentReference reference_;
  double beta_;
  std::optional<double> rpo_alpha_, ld_alpha_;
  std::vector<std::string> names_, origins_;
  std::vector<double> weights_;
  std::vector<PreferenceLoss> losses_;
  bool logs_nll_ = false, any_means_ = false;
};

// CPO and SimPO (ms-swift runs simpo as cpo with loss_type simpo): no reference; the policy's
// log-probabilities are means for ipo and simpo, sums otherwise; plus cpo_alpha times the NLL.
class CpoObjective : public TrainingObjective {
 public:
  explicit CpoObjective(const Arguments& arguments)
      : beta_(arguments.beta.value_or(arguments.rlhf_type == "simpo" ? 2.0 : 0.1)),
        smoothing_(arguments.label_smoothing), gamma_(arguments.simpo_gamma), cpo_alpha_(arguments.cpo_alpha),
        type_(arguments.rlhf_type) {
    if (arguments.loss_type.size() > 1) fail("--loss_type: {} takes one loss (a list mixes dpo's)", type_);
    variant_ = !arguments.loss_type.empty() ? arguments.loss_type.front() : (type_ == "simpo" ? "simpo" : "sigmoid");
    if (variant_ != "sigmoid" && variant_ != "hinge" && variant_ != "ipo" && variant_ != "simpo") {
      fail("--loss_type {}: {} takes sigmoid, hinge, ipo or simpo", variant_, type_);
    }
  }

  std::string name() const override { return fmt::format("{} ({})", type_, variant_); }

  torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t examples_in_step,
                     MetricTotals& metrics) override {
    auto pair = score_pairs(model, examples);
    const bool means = variant_ == "ipo" || variant_ == "simpo";
    const auto chosen = means ? safe_mean(pair.chosen, pair.chosen_tokens) : pair.chosen;
    const auto rejected = means ? safe_mean(pair.rejected, pair.rejected_tokens) : pair.rejected;
    const auto losses = cpo_losses(variant_, chosen, rejected, beta_, smoothing_, gamma_);
    add_rewards(metrics, beta_ * chosen.detach(), beta_ * rejected.detach());
    add_pair_logging(metrics, pair);
    metrics.add("nll_loss", pair.nll.item<double>() * static_cast<double>(pair.pairs), static_cast<double>(pair.pairs));
    const auto share = static_cast<double>(pair.pairs) / static_cast<double>(std::max<int64_t>(1, examples_in_step));
    auto total = losses.sum() / static_cast<double>(std::max<int64_t>(1, examples_in_step));
    if (cpo_alpha_ != 0) total = total + cpo_alpha_ * share * pair.nll;
    return total;
  }

 private:
  double beta_, smoothing_, gamma_, cpo_alpha_;
  std::string type_, variant_;
};

// ORPO: the chosen NLL minus beta (the paper's lambda) times log sigma of the log odds ratio of the
// mean log-probabilities.
class OrpoObjective : public TrainingObjective {
 public:
  explicit OrpoObjective(const Arguments& arguments) : beta_(arguments.beta.value_or(0.1)) {
    if (!arguments.loss_type.empty()) fail("--loss_type: orpo has one loss (got {})", fmt::join(arguments.loss_type, " "));
  }

  std::string name() const override { return "orpo"; }

  torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t examples_in_step,
                     MetricTotals& metrics) override {
    auto pair = score_pairs(model, examples);
    const auto chosen = safe_mean(pair.chosen, pair.chosen_tokens), rejected = safe_mean(pair.rejected, pair.rejected_tokens);
    const auto [log_odds, ratio] = orpo_odds_ratio(chosen, rejected);
    add_rewards(metrics, beta_ * chosen.detach(), beta_ * rejected.detach());
    add_pair_logging(metrics, pair);
    const auto count = static_cast<double>(pair.pairs);
    metrics.add("nll_loss", pair.nll.item<double>() * count, count);
    metrics.add("log_odds_ratio", sum_of(ratio.detach()), count);
    metrics.add("log_odds_chosen", sum_of(log_odds.detach()), count);
    const auto step = static_cast<double>(std::max<int64_t>(1, examples_in_step));
    return (count / step) * pair.nll - beta_ * ratio.sum() / step;
  }

 private:
  double beta_;
};

// KTO: each completion's log-ratio against the batch's KL estimate from the mismatched
// completions, desirable ones pushed above it and undesirable ones below.
class KtoObjective : public TrainingObjective {
 public:
  KtoObjective(const Arguments& arguments, AlignmentReference reference)
      : reference_(std::move(reference)), beta_(dpo_beta(arguments)),
        desirable_weight_(arguments.desirable_weight), undesirable_weight_(arguments.undesirable_weight) {
    if (arguments.loss_type.size() > 1) fail("--loss_type: kto takes one loss (kto or apo_zero_unpaired)");
    variant_ = arguments.loss_type.empty() ? "kto" : arguments.loss_type.front();
    if (variant_ != "kto" && variant_ != "apo_zero_unpaired") {
      fail("--loss_type {}: kto takes kto or apo_zero_unpaired", variant_);
    }
  }

  std::string name() const override { return fmt::format("kto ({})", variant_); }

  torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t examples_in_step,
                     MetricTotals& metrics) override {
    const auto completions = split_segments(examples, 0);
    auto policy = score_sequences(model, completions);
    const auto reference = reference_scores(reference_, model, completions);
    const auto ratios = policy.logps - reference.logps;
    torch::Tensor kl = torch::zeros({}, torch::kFloat32);  // apo_zero_unpaired compares with no KL
    if (variant_ == "kto") {
      const auto mismatched = split_segments(examples, 1);
      SequenceScores policy_kl;
      {
        torch::NoGradGuard no_grad;
        policy_kl = score_sequences(model, mismatched);
      }
      const auto reference_kl = reference_scores(reference_, model, mismatched);
      kl = kto_kl(policy_kl.logps, reference_kl.logps);
    }
    std::vector<int64_t> desirable, undesirable;
    for (std::size_t i = 0; i < examples.size(); ++i) {
      (examples[i]->desirable.value_or(true) ? desirable : undesirable).push_back(static_cast<int64_t>(i));
    }
    const auto pick = [](const torch::Tensor& values, const std::vector<int64_t>& rows) {
      return values.index_select(0, torch::tensor(rows, torch::kLong));
    };
    const auto chosen = pick(ratios, desirable), rejected = pick(ratios, undesirable);
    const auto [chosen_losses, rejected_losses] = kto_losses(variant_, chosen, rejected, kl, beta_);
    log_metrics(metrics, policy, chosen, rejected, desirable, undesirable, kl);
    const auto total = desirable_weight_ * chosen_losses.sum() + undesirable_weight_ * rejected_losses.sum();
    return total / static_cast<double>(std::max<int64_t>(1, examples_in_step));
  }

 private:
  void log_metrics(MetricTotals& metrics, const SequenceScores& policy, const torch::Tensor& chosen,
                   const torch::Tensor& rejected, const std::vector<int64_t>& desirable,
                   const std::vector<int64_t>& undesirable, const torch::Tensor& kl) {
    const auto pick = [](const torch::Tensor& values, const std::vector<int64_t>& rows) {
      return values.index_select(0, torch::tensor(rows, torch::kLong));
    };
    const auto chosen_count = static_cast<double>(desirable.size()), rejected_count = static_cast<double>(undesirable.size());
    metrics.add("kl", kl.item<double>());
    metrics.add("rewards/chosen", sum_of(beta_ * chosen.detach()), chosen_count);
    metrics.add("rewards/rejected", sum_of(beta_ * rejected.detach()), rejected_count);
    // ms-swift's margins: the mean chosen reward minus the mean rejected one, over the same rows.
    if (chosen_count > 0 && rejected_count > 0) {
      metrics.add("rewards/margins", sum_of(beta_ * chosen.detach()) / chosen_count - sum_of(beta_ * rejected.detach()) / rejected_count);
    }
    metrics.add("logps/chosen", sum_of(pick(policy.logps, desirable).detach()), chosen_count);
    metrics.add("logps/rejected", sum_of(pick(policy.logps, undesirable).detach()), rejected_count);
    metrics.add("logits/chosen", sum_of(pick(policy.mean_logits, desirable)), sum_of(pick(policy.tokens, desirable)));
    metrics.add("logits/rejected", sum_of(pick(policy.mean_logits, undesirable)), sum_of(pick(policy.tokens, undesirable)));
  }

  AlignmentReference reference_;
  double beta_, desirable_weight_, undesirable_weight_;
  std::string variant_;
};

// A reward model: the classifier's score of the chosen sequence pushed above the rejected one's by
// the row's margin; with --center_rewards_coefficient also the mean squared sum of the two, which
// keeps the rewards centred on 0.
class RewardModelObjective : public TrainingObjective {
 public:
  explicit RewardModelObjective(const Arguments& arguments) : center_(arguments.center_rewards_coefficient) {
    if (!arguments.loss_type.empty()) fail("--loss_type: rm has one loss (got {})", fmt::join(arguments.loss_type, " "));
  }

  std::string name() const override { return "rm"; }

  torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t examples_in_step,
                     MetricTotals& metrics) override {
    const auto [chosen, rejected] = halves(sequence_rewards(model, both_segments(examples)));
    std::vector<float> margins;
    for (const auto* example : examples) margins.push_back(static_cast<float>(example->margin));
    auto total = reward_model_losses(chosen, rejected, torch::tensor(margins, torch::kFloat32)).sum();
    const auto count = static_cast<double>(examples.size());
    if (center_) {
      const auto centring = *center_ * (chosen + rejected).pow(2);
      metrics.add("center_rewards_loss", sum_of(centring.detach()), count);
      total = total + centring.sum();
    }
    add_rewards(metrics, chosen.detach(), rejected.detach());
    return total / static_cast<double>(std::max<int64_t>(1, examples_in_step));
  }

 private:
  std::optional<double> center_;
};

}  // namespace

torch::Tensor cpo_losses(const std::string& variant, const torch::Tensor& chosen, const torch::Tensor& rejected, double beta,
                         double label_smoothing, double simpo_gamma) {
  auto x = chosen - rejected;
  if (variant == "simpo") x = x - simpo_gamma / beta;
  if (variant == "sigmoid" || variant == "simpo") {
    return -F::logsigmoid(beta * x) * (1 - label_smoothing) - F::logsigmoid(-beta * x) * label_smoothing;
  }
  if (variant == "hinge") return torch::relu(1 - beta * x);
  if (variant == "ipo") return (x - 1 / (2 * beta)).pow(2);
  fail("cpo loss {:?}: expected sigmoid, hinge, ipo or simpo", variant);
}

OddsRatio orpo_odds_ratio(const torch::Tensor& chosen_means, const torch::Tensor& rejected_means) {
  // log(1 - p) needs p < 1: a side with no trained token (mean 0) is held just below it.
  const auto log_one_minus = [](const torch::Tensor& logp) { return torch::log1p(-torch::exp(logp.clamp_max(-1e-6))); };
  OddsRatio odds;
  odds.log_odds = (chosen_means - rejected_means) - (log_one_minus(chosen_means) - log_one_minus(rejected_means));
  odds.log_sigmoid = F::logsigmoid(odds.log_odds);
  return odds;
}

torch::Tensor kto_kl(const torch::Tensor& policy_kl, const torch::Tensor& reference_kl) {
  return (policy_kl - reference_kl).mean().clamp_min(0).detach().to(torch::kFloat32);
}

KtoLosses kto_losses(const std::string& variant, const torch::Tensor& desirable_ratios,
                     const torch::Tensor& undesirable_ratios, const torch::Tensor& kl, double beta) {
  if (variant == "kto") {
    return {1 - torch::sigmoid(beta * (desirable_ratios - kl)), 1 - torch::sigmoid(beta * (kl - undesirable_ratios))};
  }
  if (variant == "apo_zero_unpaired") {
    return {1 - torch::sigmoid(beta * desirable_ratios), torch::sigmoid(beta * undesirable_ratios)};
  }
  fail("kto loss {:?}: expected kto or apo_zero_unpaired", variant);
}

bool alignment_uses_reference(const Arguments& arguments) {
  if (arguments.rlhf_type == "grpo") return grpo_beta(arguments) != 0;
  return arguments.rlhf_type == "dpo" || arguments.rlhf_type == "kto";
}

std::shared_ptr<TrainingObjective> make_alignment_objective(const Arguments& arguments, AlignmentReference reference) {
  const auto& type = arguments.rlhf_type;
  if (!alignment_uses_reference(arguments) && !arguments.ref_model.empty()) {
    fail("--ref_model: {} compares no reference model (it is reference-free)", type);
  }
  if (type == "dpo") return std::make_shared<DpoObjective>(arguments, std::move(reference));
  if (type == "cpo" || type == "simpo") return std::make_shared<CpoObjective>(arguments);
  if (type == "orpo") return std::make_shared<OrpoObjective>(arguments);
  if (type == "kto") return std::make_shared<KtoObjective>(arguments, std::move(reference));
  if (type == "rm") return std::make_shared<RewardModelObjective>(arguments);
  fail("--rlhf_type {}: not an objective of lathe rlhf (dpo, cpo, simpo, orpo, kto, rm)", type);
}

namespace {

// Where an example's trained response starts: its first trained label.
std::size_t response_start(const Example& example) {
  const auto found = std::find_if(example.labels.begin(), example.labels.end(),
                                  [](int32_t label) { return label != kIgnoreIndex; });
  return static_cast<std::size_t>(found - example.labels.begin());
}

}  // namespace

void attach_kl_completions(std::vector<Example>& examples, int64_t chunk) {
  if (chunk < 2) {
    fail("kto pairs every row with another row's answer within a global batch (per_device_train_batch_size x "
         "gradient_accumulation_steps), which must hold at least 2 rows (it holds {})",
         chunk);
  }
  std::vector<Example> originals = examples;
  for (std::size_t begin = 0; begin < examples.size(); begin += static_cast<std::size_t>(chunk)) {
    const auto end = std::min(examples.size(), begin + static_cast<std::size_t>(chunk));
    for (std::size_t i = begin; i < end; ++i) {
      const auto& own = originals[i];
      const auto& other = originals[i == begin ? end - 1 : i - 1];
      const auto prompt_end = response_start(own), other_start = response_start(other);
      auto& example = examples[i];
      example.segment_lengths = {own.size(), static_cast<int64_t>(prompt_end + (other.input_ids.size() - other_start))};
      example.input_ids.insert(example.input_ids.end(), own.input_ids.begin(), own.input_ids.begin() + static_cast<std::ptrdiff_t>(prompt_end));
      example.input_ids.insert(example.input_ids.end(), other.input_ids.begin() + static_cast<std::ptrdiff_t>(other_start), other.input_ids.end());
      example.labels.insert(example.labels.end(), prompt_end, kIgnoreIndex);
      example.labels.insert(example.labels.end(), other.labels.begin() + static_cast<std::ptrdiff_t>(other_start), other.labels.end());
    }
  }
}

}  // namespace lathe
