// DPO's loss variants (preference_loss.h), each a function of the policy's and the reference's
// log-probabilities, as ms-swift's dpo_loss computes them; the registry with every built-in is at
// the bottom of the file.
#include "lathe/plugin/preference_loss.h"

#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "lathe/common/format.h"

namespace lathe {
namespace {

namespace F = torch::nn::functional;

struct Ratios {
  torch::Tensor chosen, rejected;  // policy minus reference, per response
  torch::Tensor margin;            // chosen minus rejected: DPO's z
};

Ratios ratios(const PreferenceLogps& logps) {
  Ratios r;
  r.chosen = logps.policy_chosen - logps.reference_chosen;
  r.rejected = logps.policy_rejected - logps.reference_rejected;
  r.margin = (logps.policy_chosen - logps.policy_rejected) - (logps.reference_chosen - logps.reference_rejected);
  return r;
}

// -(1 - eps) log sigma(x) - eps log sigma(-x): the label-smoothed logistic loss.
torch::Tensor smoothed_logistic(const torch::Tensor& x, double smoothing) {
  return -F::logsigmoid(x) * (1 - smoothing) - F::logsigmoid(-x) * smoothing;
}

struct Settings {
  double beta, smoothing, discopop_tau;
  explicit Settings(const PluginContext& context)
      : beta(dpo_beta(context.arguments)),
        smoothing(context.arguments.label_smoothing),
        discopop_tau(context.arguments.discopop_tau) {}
};

using Formula = std::function<torch::Tensor(const PreferenceLogps&, const Settings&)>;

PreferenceLossFactory from_formula(Formula formula) {
  return [formula](const PluginContext& context) -> PreferenceLoss {
    const Settings settings(context);
    return [formula, settings](const PreferenceLogps& logps) { return formula(logps, settings); };
  };
}

torch::Tensor sigmoid_loss(const PreferenceLogps& logps, const Settings& s) {
  return smoothed_logistic(s.beta * ratios(logps).margin, s.smoothing);
}

torch::Tensor robust_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto x = s.beta * ratios(logps).margin;
  return (-F::logsigmoid(x) * (1 - s.smoothing) + F::logsigmoid(-x) * s.smoothing) / (1 - 2 * s.smoothing);
}

// EXO's reverse KL between the model's and the smoothed labels' pair distributions; with no
// smoothing given it takes 1e-3, as ms-swift does.
torch::Tensor exo_pair_loss(const PreferenceLogps& logps, const Settings& s) {
  const double eps = s.smoothing == 0 ? 1e-3 : s.smoothing;
  const auto x = s.beta * ratios(logps).margin;
  return torch::sigmoid(x) * (F::logsigmoid(x) - std::log(1 - eps)) + torch::sigmoid(-x) * (F::logsigmoid(-x) - std::log(eps));
}

torch::Tensor hinge_loss(const PreferenceLogps& logps, const Settings& s) {
  return torch::relu(1 - s.beta * ratios(logps).margin);
}

torch::Tensor ipo_loss(const PreferenceLogps& logps, const Settings& s) {
  return (ratios(logps).margin - 1 / (2 * s.beta)).pow(2);
}

torch::Tensor sppo_hard_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto r = ratios(logps);
  return (r.chosen - 0.5 / s.beta).pow(2) + (r.rejected + 0.5 / s.beta).pow(2);
}

torch::Tensor nca_pair_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto r = ratios(logps);
  const auto chosen = s.beta * r.chosen, rejected = s.beta * r.rejected;
  return -F::logsigmoid(chosen) - 0.5 * F::logsigmoid(-chosen) - 0.5 * F::logsigmoid(-rejected);
}

// AOT: the logistic loss on the batch's sorted policy margins minus its sorted reference margins.
torch::Tensor aot_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto policy = std::get<0>(torch::sort(logps.policy_chosen - logps.policy_rejected, 0));
  const auto reference = std::get<0>(torch::sort(logps.reference_chosen - logps.reference_rejected, 0));
  return smoothed_logistic(s.beta * (policy - reference), s.smoothing);
}

// AOT for unpaired data: the sorted chosen ratios minus the sorted rejected ones.
torch::Tensor aot_unpaired_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto r = ratios(logps);
  const auto chosen = std::get<0>(torch::sort(r.chosen, 0));
  const auto rejected = std::get<0>(torch::sort(r.rejected, 0));
  return smoothed_logistic(s.beta * (chosen - rejected), s.smoothing);
}

torch::Tensor apo_zero_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto r = ratios(logps);
  return (1 - torch::sigmoid(s.beta * r.chosen)) + torch::sigmoid(s.beta * r.rejected);
}

torch::Tensor apo_down_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto r = ratios(logps);
  return torch::sigmoid(s.beta * r.chosen) + (1 - torch::sigmoid(s.beta * (r.chosen - r.rejected)));
}

torch::Tensor discopop_loss(const PreferenceLogps& logps, const Settings& s) {
  const auto x = s.beta * ratios(logps).margin;
  const auto modulation = torch::sigmoid(x / s.discopop_tau);
  return -F::logsigmoid(x) * (1 - modulation) + torch::exp(-x) * modulation;
}

torch::Tensor sft_loss(const PreferenceLogps& logps, const Settings&) {
  return logps.nll.expand({logps.policy_chosen.size(0)});
}

// BCO's pairwise loss: the rewards measured against delta, the running mean of every batch's mean
// reward so far (the mean over batches, each weighing one, as TRL's RunningMoments sees a scalar).
PreferenceLossFactory bco_pair() {
  return [](const PluginContext& context) -> PreferenceLoss {
    const Settings s(context);
    struct RunningMean {
      double mean = 0;
      int64_t count = 0;
    };
    auto running = std::make_shared<RunningMean>();
    return [s, running](const PreferenceLogps& logps) {
      const auto r = ratios(logps);
      const auto chosen = s.beta * r.chosen, rejected = s.beta * r.rejected;
      const double batch_mean = torch::cat({chosen, rejected}).mean().item<double>();
      running->count += 1;
      running->mean += (batch_mean - running->mean) / static_cast<double>(running->count);
      return -F::logsigmoid(chosen - running->mean) - F::logsigmoid(-(rejected - running->mean));
    };
  };
}

void add_builtin_preference_losses(Registry<PreferenceLossFactory>& registry) {
  registry.add("sigmoid", "DPO: -log sigmoid(beta z), label-smoothed by --label_smoothing", from_formula(sigmoid_loss));
  registry.add("robust", "robust DPO: unbiased under --label_smoothing flipped labels", from_formula(robust_loss));
  registry.add("exo_pair", "EXO: reverse KL to the smoothed labels (--label_smoothing, 1e-3 when 0)", from_formula(exo_pair_loss));
  registry.add("hinge", "SLiC: relu(1 - beta z)", from_formula(hinge_loss));
  registry.add("ipo", "IPO: (z - 1/(2 beta))^2 on mean log-probabilities", from_formula(ipo_loss));
  registry.add("bco_pair", "BCO: each side's reward against a running mean", bco_pair());
  registry.add("sppo_hard", "SPPO: chosen ratio to 1/(2 beta), rejected to -1/(2 beta)", from_formula(sppo_hard_loss));
  registry.add("nca_pair", "NCA: absolute likelihoods of both sides", from_formula(nca_pair_loss));
  registry.add("aot", "AOT: sorted policy margins against sorted reference margins", from_formula(aot_loss));
  registry.add("aot_unpaired", "AOT unpaired: sorted chosen ratios against sorted rejected ratios", from_formula(aot_unpaired_loss));
  registry.add("aot_pair", "TRL 0.2x's name for aot_unpaired", from_formula(aot_unpaired_loss));
  registry.add("apo_zero", "APO-zero: raise chosen, lower rejected likelihood", from_formula(apo_zero_loss));
  registry.add("apo_down", "APO-down: lower both, rejected more", from_formula(apo_down_loss));
  registry.add("discopop", "DiscoPOP: logistic and exponential losses blended by sigmoid(beta z / --discopop_tau)",
               from_formula(discopop_loss));
  registry.add("sft", "the chosen side's NLL alone (for mixes such as MPO)", from_formula(sft_loss));
}

}  // namespace

double dpo_beta(const Arguments& arguments) { return arguments.beta.value_or(0.1); }

bool preference_loss_uses_means(const std::string& name) { return name == "ipo"; }

Registry<PreferenceLossFactory>& preference_loss_registry() {
  static Registry<PreferenceLossFactory>& registry = *[] {
    auto* built = new Registry<PreferenceLossFactory>("preference loss");
    add_builtin_preference_losses(*built);
    return built;
  }();
  return registry;
}

}  // namespace lathe
