#pragma once
// Optimizer plugins (`--optimizer name`, plugins.md §5): a factory returns the optimizer and,
// optionally, its own learning-rate schedule (none: the one --lr_scheduler_type names).
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lathe/arguments.h"
#include "lathe/model.h"
#include "lathe/registry.h"

namespace lathe {

// A learning-rate schedule: the multiplier of each parameter group's peak rate before optimizer
// step `step` (0-based). apply() writes the rates into the optimizer.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  virtual double factor(int64_t step) const = 0;
  void remember_base_rates(torch::optim::Optimizer& optimizer);
  void apply(torch::optim::Optimizer& optimizer, int64_t step) const;
  const std::vector<double>& base_rates() const { return base_rates_; }

 private:
  std::vector<double> base_rates_;
};

// The schedules of --lr_scheduler_type: cosine, linear, constant, constant_with_warmup,
// cosine_with_min_lr (min rate 10% of the peak unless plugin_args {"min_lr_rate": r}).
std::shared_ptr<LRScheduler> make_scheduler(const std::string& type, int64_t warmup_steps, int64_t total_steps,
                                            double min_lr_rate = 0.1);
// Warm-up steps from --warmup_steps, else --warmup_ratio of the total.
int64_t warmup_steps_for(const Arguments& arguments, int64_t total_steps);

struct OptimizerSetup {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;  // nullptr: use --lr_scheduler_type
};

// Trainable parameters split as Hugging Face's Trainer does: weight decay on matrices, none on
// biases and norm weights.
struct ParameterGroups {
  std::vector<torch::Tensor> decay, no_decay;
  std::vector<std::string> decay_names, no_decay_names;
};
ParameterGroups trainable_parameter_groups(CausalLMImpl& model);

using OptimizerFactory =
    std::function<OptimizerSetup(const Arguments& arguments, CausalLMImpl& model, int64_t total_steps)>;
Registry<OptimizerFactory>& optimizer_registry();

}  // namespace lathe
