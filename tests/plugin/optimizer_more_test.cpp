// lorap, muon and galore: one step of each matrix rule against the update written out here, the
// LoRA+ learning rates, the automatic choice of optimizer, and a save/load resume.
#include <gtest/gtest.h>

#include <torch/serialize.h>

#include <sstream>

#include "lathe/plugin/optimizer.h"
#include "lathe/tuner/lora.h"
#include "lathe/plugin/schedules.h"
#include "lathe/plugin/matrix_optimizer.h"

#include "support/tiny_config.h"

namespace lathe {
namespace {

torch::Tensor with_gradient(torch::Tensor value, const torch::Tensor& gradient) {
  value = value.clone().set_requires_grad(true);
  value.mutable_grad() = gradient.clone();
  return value;
}

TEST(Muon, OneStepIsOrthogonalisedNesterovMomentum) {
  torch::manual_seed(0);
  const auto weight = torch::randn({3, 2}, torch::kFloat64), gradient = torch::randn({3, 2}, torch::kFloat64);
  auto parameter = with_gradient(weight, gradient);
  MatrixOptimizer optimizer({{{parameter}, UpdateRule::muon, 0.1, 0.0}}, {});
  optimizer.step();

  // momentum = 0.95*0 + 0.05 G; Nesterov update = G + 0.95 (momentum - G) = 0.0975 G.
  auto x = (0.0975 * gradient).t();  // tall [3,2]: iterate on the wide [2,3] transpose
  x = x / (x.norm() + 1e-7);
  for (int i = 0; i < 5; ++i) {
    auto a = x.matmul(x.t());
    x = 3.4445 * x - 4.7750 * a.matmul(x) + 2.0315 * a.matmul(a).matmul(x);
  }
  const auto expected = weight - 0.1 * std::sqrt(3.0 / 2.0) * x.t();  // scale max(1, 3/2)^0.5
  EXPECT_TRUE(torch::allclose(parameter, expected, 1e-6, 1e-9)) << parameter << expected;

  // Newton-Schulz approximates U V^T: every singular value lands near 1 (Muon's iteration keeps
  // them within about [0.7, 1.2]).
  const auto singular_values = at::linalg_svdvals(newton_schulz_orthogonalize(gradient));
  EXPECT_GT(singular_values.min().item<double>(), 0.6);
  EXPECT_LT(singular_values.max().item<double>(), 1.25);
}

// One GaLore step over a fresh state: Adam's first step is m̂/sqrt(v̂) = sign of the projected
// gradient (to within eps), projected back and scaled.
void expect_galore_step(int64_t rows, int64_t columns) {
  torch::manual_seed(1);
  const auto weight = torch::randn({rows, columns}, torch::kFloat64);
  const auto gradient = torch::randn({rows, columns}, torch::kFloat64);
  auto parameter = with_gradient(weight, gradient);
  MatrixOptimizerOptions options;
  options.galore_rank = 1;
  options.galore_scale = 0.5;
  MatrixOptimizer optimizer({{{parameter}, UpdateRule::galore, 0.01, 0.0}}, options);
  optimizer.step();

  auto [u, s, vh] = at::linalg_svd(gradient, false);
  torch::Tensor expected_update;
  if (rows >= columns) {  // project on the right by the top right singular vector v [1, n]
    const auto v = vh.narrow(0, 0, 1);
    expected_update = torch::sign(gradient.matmul(v.t())).matmul(v);
  } else {  // project on the left by the top left singular vector u [m, 1]
    const auto left = u.narrow(1, 0, 1);
    expected_update = left.matmul(torch::sign(left.t().matmul(gradient)));
  }
  const auto expected = weight - 0.01 * 0.5 * expected_update;
  EXPECT_TRUE(torch::allclose(parameter, expected, 1e-6, 1e-8)) << parameter << expected;
}

TEST(Galore, OneStepTallMatrix) { expect_galore_step(4, 2); }
TEST(Galore, OneStepWideMatrix) { expect_galore_step(2, 5); }

TEST(MatrixOptimizer, AdamwRuleMatchesTorchAdamW) {
  torch::manual_seed(2);
  const auto weight = torch::randn({3, 3}, torch::kFloat64);
  auto mine = with_gradient(weight, torch::ones({3, 3}, torch::kFloat64));
  auto theirs = with_gradient(weight, torch::ones({3, 3}, torch::kFloat64));
  MatrixOptimizer optimizer({{{mine}, UpdateRule::adamw, 0.1, 0.01}}, {0.9, 0.95, 1e-8});
  torch::optim::AdamW reference({theirs}, torch::optim::AdamWOptions(0.1).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.01));
  for (int step = 0; step < 3; ++step) {
    mine.mutable_grad() = torch::full({3, 3}, step + 1.0, torch::kFloat64);
    theirs.mutable_grad() = torch::full({3, 3}, step + 1.0, torch::kFloat64);
    optimizer.step();
    reference.step();
  }
  EXPECT_TRUE(torch::allclose(mine, theirs, 1e-9, 1e-12));
}

TEST(MatrixOptimizer, SaveAndLoadResumeExactly) {
  torch::manual_seed(3);
  const auto weight = torch::randn({4, 3}, torch::kFloat64);
  auto gradient_at = [](int step) { return torch::arange(12, torch::kFloat64).reshape({4, 3}).sin() * (step + 1); };
  auto run = [&](torch::Tensor& parameter, MatrixOptimizer& optimizer, int step) {
    parameter.mutable_grad() = gradient_at(step);
    optimizer.step();
  };
  MatrixOptimizerOptions options;
  options.galore_rank = 2;
  auto straight = with_gradient(weight, gradient_at(0));
  MatrixOptimizer straight_optimizer({{{straight}, UpdateRule::galore, 0.01, 0.1}}, options);
  for (int step = 0; step < 3; ++step) run(straight, straight_optimizer, step);

  auto resumed = with_gradient(weight, gradient_at(0));
  std::stringstream saved;
  {
    MatrixOptimizer first({{{resumed}, UpdateRule::galore, 0.01, 0.1}}, options);
    run(resumed, first, 0);
    run(resumed, first, 1);
    torch::save(first, saved);
  }
  MatrixOptimizer second({{{resumed}, UpdateRule::galore, 0.01, 0.1}}, options);
  torch::load(second, saved);
  run(resumed, second, 2);
  EXPECT_TRUE(torch::allclose(resumed, straight, 1e-12, 1e-12));
}

using testing::tiny_config;

TEST(Lorap, LoraBMatricesGetTheRatioTimesTheRate) {
  CausalLM model(tiny_config());
  LoraConfig lora;
  lora.target_modules = {"q_proj", "v_proj"};
  apply_lora(model, lora, 1);
  Arguments arguments;
  arguments.learning_rate = 1e-4;
  arguments.lorap_lr_ratio = 8;
  ASSERT_EQ(optimizer_name(arguments), "lorap");
  auto setup = optimizer_registry().create(optimizer_name(arguments), arguments, *model, 10);
  std::map<const void*, double> rate_of;
  for (auto& group : setup.optimizer->param_groups()) {
    for (auto& parameter : group.params()) rate_of[parameter.unsafeGetTensorImpl()] = group.options().get_lr();
  }
  int b_matrices = 0;
  for (const auto& [name, parameter] : lora_parameters(model)) {
    const double expected = name.ends_with(".lora_B") ? 8e-4 : 1e-4;
    b_matrices += name.ends_with(".lora_B");
    EXPECT_DOUBLE_EQ(rate_of.at(parameter.unsafeGetTensorImpl()), expected) << name;
  }
  EXPECT_EQ(b_matrices, 2);
  EXPECT_EQ(rate_of.size(), lora_parameters(model).size());
}

TEST(OptimizerName, ChosenFromTheArguments) {
  Arguments arguments;
  EXPECT_EQ(optimizer_name(arguments), "default");
  arguments.use_galore = true;
  EXPECT_EQ(optimizer_name(arguments), "galore");
  arguments.optimizer = "muon";
  EXPECT_EQ(optimizer_name(arguments), "muon");
}

TEST(Muon, HiddenMatricesOnlyAndTrainerCompatible) {
  CausalLM model(tiny_config());
  Arguments arguments;
  auto setup = optimizer_registry().create("muon", arguments, *model, 10);
  auto input = torch::randint(0, 32, {1, 5});
  auto loss = model->logits(model->forward(ForwardInputs{input})).pow(2).mean();
  loss.backward();
  const auto embedding_before = model->named_parameters()["model.embed_tokens.weight"].clone();
  setup.optimizer->step();
  setup.optimizer->zero_grad();
  EXPECT_FALSE(torch::equal(embedding_before, model->named_parameters()["model.embed_tokens.weight"]));
  std::stringstream saved;
  torch::save(*setup.optimizer, saved);
  torch::load(*setup.optimizer, saved);
}

}  // namespace
}  // namespace lathe
