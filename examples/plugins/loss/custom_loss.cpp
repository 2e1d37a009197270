// A loss plugin registered as "custom_loss": cross entropy with label smoothing-like focus on the
// hard tokens (a focal loss, gamma 2), without ever materialising the logits.
//   lathe sft ... --external_plugins examples/plugins/loss/custom_loss.cpp --loss_type custom_loss \
//       --plugin_args '{"custom_loss": {"focal_gamma": 2}}'
#include <lathe/plugin.h>
#include <lathe/plugin/loss.h>
#include <lathe/plugin/token_losses.h>

namespace {

lathe::LossFunction make_focal_loss(const lathe::PluginContext& context) {
  const double gamma = context.setting("focal_gamma", 2.0);
  return [gamma](lathe::ModelOutputs& outputs, const torch::Tensor& labels, const torch::Tensor&,
                 std::optional<int64_t> num_items_in_batch) {
    auto shifted = lathe::shift_tokens(outputs.hidden(), labels, torch::Tensor());
    auto cross_entropy = lathe::chunked_token_cross_entropy(shifted.hidden, outputs.head_weight(), shifted.targets);
    // p = exp(-ce) is the probability of the right token; (1 - p)^gamma weighs the hard ones up.
    auto focal = (1 - torch::exp(-cross_entropy)).pow(gamma) * cross_entropy;
    const auto count = num_items_in_batch.value_or(std::max<int64_t>(1, focal.size(0)));
    return focal.sum() / static_cast<double>(count);
  };
}

}  // namespace

LATHE_PLUGIN() {
  lathe::loss_registry().add("custom_loss", "focal cross entropy (settings: focal_gamma, default 2)",
                             make_focal_loss);
}
