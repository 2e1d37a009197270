// An optimizer plugin registered as "custom": SGD with momentum and its own step-decay schedule
// (the rate is multiplied by gamma every step_size optimizer steps), instead of the schedule
// --lr_scheduler_type names.
//   lathe sft ... --external_plugins examples/plugins/optimizer/custom_optimizer.cpp --optimizer custom \
//       --plugin_args '{"custom": {"momentum": 0.9, "step_size": 2, "gamma": 0.5}}'
// The learning rate logged at global step s (1-based) is learning_rate * gamma^floor((s - 1) / step_size).
#include <lathe/plugin.h>
#include <lathe/plugin/optimizer.h>
#include <lathe/plugin/schedules.h>

#include <torch/torch.h>

#include <cmath>

namespace {

class StepDecay : public lathe::LRScheduler {
 public:
  StepDecay(int64_t step_size, double gamma) : step_size_(std::max<int64_t>(1, step_size)), gamma_(gamma) {}
  double factor(int64_t step) const override { return std::pow(gamma_, static_cast<double>(step / step_size_)); }

 private:
  int64_t step_size_;
  double gamma_;
};

lathe::OptimizerSetup make_sgd(const lathe::PluginContext& context, lathe::CausalLMImpl& model, int64_t total_steps) {
  const auto& arguments = context.arguments;
  auto groups = lathe::trainable_parameter_groups(model);
  auto options = torch::optim::SGDOptions(arguments.effective_learning_rate()).momentum(context.setting("momentum", 0.9));
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  // Weight decay on matrices only, as for the default AdamW.
  if (!groups.decay.empty()) {
    param_groups.emplace_back(groups.decay, std::make_unique<torch::optim::SGDOptions>(
                                                torch::optim::SGDOptions(options).weight_decay(arguments.weight_decay)));
  }
  if (!groups.no_decay.empty()) {
    param_groups.emplace_back(groups.no_decay, std::make_unique<torch::optim::SGDOptions>(options));
  }
  lathe::OptimizerSetup setup;
  setup.optimizer = std::make_unique<torch::optim::SGD>(std::move(param_groups), options);
  setup.scheduler = std::make_shared<StepDecay>(context.setting("step_size", std::max<int64_t>(1, total_steps / 3)),
                                                context.setting("gamma", 0.5));
  return setup;
}

}  // namespace

LATHE_PLUGIN() {
  lathe::optimizer_registry().add("custom", "SGD with momentum and a step-decay schedule (settings: momentum, "
                                            "step_size, gamma)", make_sgd);
}
