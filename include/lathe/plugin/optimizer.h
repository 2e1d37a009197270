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

// The optimizer a run uses: --optimizer when set to other than "default", else galore with
// --use_galore, lorap with --lorap_lr_ratio > 0, else default.
std::string optimizer_name(const Arguments& arguments);

// How MatrixOptimizer updates one parameter group. All rules apply decoupled weight decay first.
enum class UpdateRule {
  adamw,   // Adam moments of the gradient (torch's AdamW)
  muon,    // Nesterov momentum orthogonalised by Newton-Schulz, scaled by max(1, rows/cols)^0.5
  galore,  // Adam moments of the gradient projected to rank r, the update projected back * scale
};

struct RuleGroup {
  std::vector<torch::Tensor> parameters;
  UpdateRule rule = UpdateRule::adamw;
  double lr = 1e-4, weight_decay = 0.0;
};

struct MatrixOptimizerOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double muon_momentum = 0.95;
  int64_t newton_schulz_steps = 5;
  int64_t galore_rank = 128, galore_update_proj_gap = 50;
  double galore_scale = 1.0;
};

// The optimizer of `muon` and `galore`: one rule per parameter group. Groups carry AdamWOptions
// so that schedules set their learning rates as for AdamW. save/load write every state tensor
// (moments, momentum, GaLore projection, step count) by group and parameter index, so a
// checkpoint resumes exactly with the same parameter grouping.
class MatrixOptimizer : public torch::optim::Optimizer {
 public:
  MatrixOptimizer(std::vector<RuleGroup> groups, MatrixOptimizerOptions options);
  torch::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  struct ParameterState {
    int64_t step = 0;
    torch::Tensor exp_avg, exp_avg_sq, momentum, projection;
  };
  torch::Tensor adam_direction(ParameterState& state, const torch::Tensor& gradient, double beta1, double beta2,
                               double eps) const;
  torch::Tensor muon_direction(ParameterState& state, const torch::Tensor& gradient) const;
  torch::Tensor galore_direction(ParameterState& state, const torch::Tensor& gradient, double beta1, double beta2,
                                 double eps) const;

  std::vector<UpdateRule> rules_;                    // parallel to param_groups()
  std::vector<std::vector<ParameterState>> states_;  // [group][parameter]
  MatrixOptimizerOptions options_;
};

// Muon's quintic Newton-Schulz iteration (coefficients 3.4445, -4.7750, 2.0315) on G / ||G||_F,
// run on the wide orientation: approximately U V^T of G = U S V^T.
torch::Tensor newton_schulz_orthogonalize(const torch::Tensor& matrix, int64_t steps = 5);

using OptimizerFactory =
    std::function<OptimizerSetup(const Arguments& arguments, CausalLMImpl& model, int64_t total_steps)>;
Registry<OptimizerFactory>& optimizer_registry();

}  // namespace lathe
