#pragma once
// Preference-loss plugins (`lathe rlhf --rlhf_type dpo --loss_type name`, docs/plugins.md): DPO's
// variants. A variant turns the log-probabilities of a batch of (chosen, rejected) pairs under the
// policy and the reference into one loss per pair; the trainer averages them over the pairs of the
// optimizer step, mixes several variants by --loss_weights and adds --rpo_alpha times the NLL.
// The formulas follow ms-swift's (TRL 0.2x's) dpo_loss.
#include <torch/types.h>

#include <functional>

#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// One batch of pairs, all [pairs] float tensors. The log-probabilities are sums over each
// response's trained tokens (means for ipo: preference_loss_uses_means); the reference ones carry
// no gradient. nll is the chosen tokens' mean negative log-likelihood, a scalar.
struct PreferenceLogps {
  torch::Tensor policy_chosen, policy_rejected;
  torch::Tensor reference_chosen, reference_rejected;
  torch::Tensor nll;
};

// Returns the loss of every pair, [pairs]. May keep state across calls (bco_pair's running mean).
using PreferenceLoss = std::function<torch::Tensor(const PreferenceLogps& logps)>;
// Made once per run from the arguments (beta, label_smoothing, discopop_tau) and the plugin's
// own --plugin_args settings.
using PreferenceLossFactory = std::function<PreferenceLoss(const PluginContext& context)>;

// Built: sigmoid, robust, exo_pair, hinge, ipo, bco_pair, sppo_hard, nca_pair, aot, aot_unpaired
// (also as aot_pair), apo_zero, apo_down, discopop, sft.
Registry<PreferenceLossFactory>& preference_loss_registry();

// DPO's beta: --beta, or 0.1.
double dpo_beta(const Arguments& arguments);

// Whether a variant compares mean rather than summed log-probabilities (ipo, as ms-swift normalises
// the sequences' sums by their token counts for it).
bool preference_loss_uses_means(const std::string& name);

}  // namespace lathe

LATHE_API_END
