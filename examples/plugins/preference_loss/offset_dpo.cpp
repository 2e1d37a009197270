// A preference-loss plugin registered as "offset_dpo": DPO's sigmoid loss asked to clear a margin,
// -log sigma(beta * z - offset), where z is the policy's log-ratio of chosen over rejected minus the
// reference's (ODPO's fixed-offset form). With offset 0 it is the sigmoid loss.
//   lathe rlhf --rlhf_type dpo ... --external_plugins examples/plugins/preference_loss/offset_dpo.cpp \
//       --loss_type offset_dpo --plugin_args '{"offset_dpo": {"offset": 0.5}}'
#include <lathe/plugin.h>
#include <lathe/plugin/preference_loss.h>

#include <torch/torch.h>

namespace {

lathe::PreferenceLoss make_offset_dpo(const lathe::PluginContext& context) {
  const double beta = lathe::dpo_beta(context.arguments);
  const double offset = context.setting("offset", 0.5);
  return [beta, offset](const lathe::PreferenceLogps& logps) {
    const auto z = (logps.policy_chosen - logps.policy_rejected) - (logps.reference_chosen - logps.reference_rejected);
    return -torch::nn::functional::logsigmoid(beta * z - offset);
  };
}

}  // namespace

LATHE_PLUGIN() {
  lathe::preference_loss_registry().add("offset_dpo", "DPO's sigmoid loss with a target margin (settings: offset, default 0.5)",
                                        make_offset_dpo);
}
