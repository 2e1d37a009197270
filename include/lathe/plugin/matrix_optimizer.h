#pragma once
// The optimizer behind the built-in `muon` and `galore`: one update rule per parameter group.
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <vector>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

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

}  // namespace lathe

LATHE_API_END
