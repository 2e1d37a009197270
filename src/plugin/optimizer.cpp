// Optimizers and learning-rate schedules (plugins.md §5). The registry is at the bottom.
#include "lathe/plugin/optimizer.h"

#include <torch/optim/adamw.h>

#include <cmath>
#include <numbers>

#include "common/format.h"

namespace lathe {

void LRScheduler::remember_base_rates(torch::optim::Optimizer& optimizer) {
  base_rates_.clear();
  for (auto& group : optimizer.param_groups()) base_rates_.push_back(group.options().get_lr());
}

void LRScheduler::apply(torch::optim::Optimizer& optimizer, int64_t step) const {
  const double multiplier = factor(step);
  auto& groups = optimizer.param_groups();
  for (std::size_t g = 0; g < groups.size() && g < base_rates_.size(); ++g) {
    groups[g].options().set_lr(base_rates_[g] * multiplier);
  }
}

namespace {

class FunctionScheduler : public LRScheduler {
 public:
  explicit FunctionScheduler(std::function<double(int64_t)> function) : function_(std::move(function)) {}
  double factor(int64_t step) const override { return function_(step); }

 private:
  std::function<double(int64_t)> function_;
};

// As transformers' schedules: linear warm-up from 0, then the decay over the remaining steps.
double warmup(int64_t step, int64_t warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
}
double progress(int64_t step, int64_t warmup_steps, int64_t total_steps) {
  return static_cast<double>(step - warmup_steps) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
}

}  // namespace

std::shared_ptr<LRScheduler> make_scheduler(const std::string& type, int64_t warmup_steps, int64_t total_steps,
                                            double min_lr_rate) {
  auto schedule = [&](std::function<double(double)> decay) {
    return std::make_shared<FunctionScheduler>([=](int64_t step) {
      if (step < warmup_steps) return warmup(step, warmup_steps);
      return decay(std::clamp(progress(step, warmup_steps, total_steps), 0.0, 1.0));
    });
  };
  if (type == "cosine") return schedule([](double p) { return 0.5 * (1.0 + std::cos(std::numbers::pi * p)); });
  if (type == "linear") return schedule([](double p) { return 1.0 - p; });
  if (type == "constant") return std::make_shared<FunctionScheduler>([](int64_t) { return 1.0; });
  if (type == "constant_with_warmup") return schedule([](double) { return 1.0; });
  if (type == "cosine_with_min_lr") {
    return schedule([min_lr_rate](double p) {
      return min_lr_rate + (1.0 - min_lr_rate) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    });
  }
  fail("--lr_scheduler_type: unknown schedule '{}' (expected cosine, linear, constant, "
       "constant_with_warmup or cosine_with_min_lr)", type);
}

int64_t warmup_steps_for(const Arguments& arguments, int64_t total_steps) {
  if (arguments.warmup_steps > 0) return arguments.warmup_steps;
  return static_cast<int64_t>(std::ceil(arguments.warmup_ratio * static_cast<double>(total_steps)));
}

static bool is_no_decay(const std::string& name, const torch::Tensor& parameter) {
  return parameter.dim() < 2 || name.find("norm") != std::string::npos || name.ends_with(".bias");
}

ParameterGroups trainable_parameter_groups(CausalLMImpl& model) {
  ParameterGroups groups;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    if (is_no_decay(item.key(), item.value())) {
      groups.no_decay.push_back(item.value());
      groups.no_decay_names.push_back(item.key());
    } else {
      groups.decay.push_back(item.value());
      groups.decay_names.push_back(item.key());
    }
  }
  return groups;
}

static OptimizerSetup make_adamw(const Arguments& arguments, CausalLMImpl& model, int64_t) {
  auto groups = trainable_parameter_groups(model);
  if (groups.decay.empty() && groups.no_decay.empty()) fail("the model has no trainable parameters");
  auto options = torch::optim::AdamWOptions(arguments.effective_learning_rate())
                     .betas({arguments.adam_beta1, arguments.adam_beta2})
                     .eps(arguments.adam_epsilon)
                     .weight_decay(arguments.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  if (!groups.decay.empty()) {
    param_groups.emplace_back(groups.decay, std::make_unique<torch::optim::AdamWOptions>(options));
  }
  if (!groups.no_decay.empty()) {
    auto no_decay = options;
    no_decay.weight_decay(0.0);
    param_groups.emplace_back(groups.no_decay, std::make_unique<torch::optim::AdamWOptions>(no_decay));
  }
  return {std::make_unique<torch::optim::AdamW>(std::move(param_groups), options), nullptr};
}

Registry<OptimizerFactory>& optimizer_registry() {
  static Registry<OptimizerFactory> registry = [] {
    Registry<OptimizerFactory> built_ins("optimizer");
    built_ins.add("default", "AdamW with decoupled weight decay (none on biases and norm weights)", make_adamw);
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
