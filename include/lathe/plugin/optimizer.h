#pragma once
// Optimizer plugins (`--optimizer name`, docs/plugins.md): a factory returns the optimizer and,
// optionally, its own learning-rate schedule (none: the one --lr_scheduler_type names).
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

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

struct OptimizerSetup {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;  // nullptr: use --lr_scheduler_type
};

using OptimizerFactory =
    std::function<OptimizerSetup(const PluginContext& context, CausalLMImpl& model, int64_t total_steps)>;
Registry<OptimizerFactory>& optimizer_registry();

}  // namespace lathe

LATHE_API_END
