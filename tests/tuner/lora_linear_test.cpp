// LoRA and DoRA on a single Linear layer, against hand-written float64 formulas and finite
// differences.
#include "tuner_test_support.h"

namespace lathe::testing {
namespace {

struct LinearCase {
  Linear linear{nullptr};
  std::shared_ptr<LoraAdapter> adapter;
  torch::Tensor x, weights;  // input [2, 3, in] and the loss weights [2, 3, out]
};

LinearCase make_case(const LoraConfig& config, torch::Dtype dtype = torch::kFloat64) {
  torch::manual_seed(11);
  LinearCase c;
  c.linear = Linear(6, 5, /*bias=*/true, torch::TensorOptions(dtype));
  c.linear->weight.set_requires_grad(false);
  c.linear->bias.set_requires_grad(false);
  c.adapter = std::make_shared<LoraAdapter>(*c.linear, config);
  {
    torch::NoGradGuard no_grad;
    c.adapter->lora_A.copy_(torch::randn_like(c.adapter->lora_A) * 0.5);
    c.adapter->lora_B.copy_(torch::randn_like(c.adapter->lora_B) * 0.5);
    if (config.use_dora) c.adapter->lora_magnitude_vector.copy_(torch::rand_like(c.adapter->lora_magnitude_vector) + 0.5);
  }
  c.linear->set_adapter(kLoraAdapterName, c.adapter);
  c.x = torch::randn({2, 3, 6}, torch::kFloat64).to(dtype);
  c.weights = torch::randn({2, 3, 5}, torch::kFloat64);
  return c;
}

LoraConfig plain_config(bool dora) {
  LoraConfig config;
  config.r = 3;
  config.lora_alpha = 6;
  config.lora_dropout = 0;
  config.use_dora = dora;
  return config;
}

// DoRA as the paper and PEFT define it, with the row norm passed in (so a caller can hold it fixed,
// which is what "detached from the gradient" means).
torch::Tensor dora_reference(const LinearCase& c, const torch::Tensor& A, const torch::Tensor& B,
                             const torch::Tensor& m, const torch::Tensor& norm, double s) {
  const auto W = c.linear->weight.to(torch::kFloat64);
  const auto adapted = W + s * B.mm(A);
  return torch::matmul(c.x.to(torch::kFloat64), (adapted * (m / norm).unsqueeze(1)).t()) + c.linear->bias;
}

torch::Tensor row_norm(const LinearCase& c, const torch::Tensor& A, const torch::Tensor& B, double s) {
  return (c.linear->weight.to(torch::kFloat64) + s * B.mm(A)).norm(2, {1});
}

double loss_of(const torch::Tensor& output, const torch::Tensor& weights) {
  return (output.to(torch::kFloat64) * weights).sum().item<double>();
}

TEST(LoraLinear, OutputIsBasePlusScaledLowRankProduct) {
  const auto config = plain_config(false);
  auto c = make_case(config);
  const auto expected = torch::matmul(c.x, c.linear->weight.t()) + c.linear->bias +
                        2.0 * torch::matmul(c.x, c.adapter->lora_B.mm(c.adapter->lora_A).t());  // 6 / 3
  EXPECT_TRUE(torch::allclose(c.linear(c.x), expected, 1e-12, 1e-12));
}

TEST(LoraLinear, RsLoraScalesByAlphaOverSquareRootOfRank) {
  auto config = plain_config(false);
  config.r = 4;
  config.lora_alpha = 8;
  EXPECT_DOUBLE_EQ(config.scaling(), 2.0);
  config.use_rslora = true;
  EXPECT_DOUBLE_EQ(config.scaling(), 4.0);  // 8 / sqrt(4)
  auto c = make_case(config);
  const auto delta = c.linear(c.x) - c.linear->base_forward(c.x);
  const auto expected = 4.0 * torch::matmul(c.x, c.adapter->lora_B.mm(c.adapter->lora_A).t());
  EXPECT_TRUE(torch::allclose(delta, expected, 1e-12, 1e-12));
}

TEST(LoraLinear, ZeroBLeavesTheOutputUnchanged) {
  auto c = make_case(plain_config(false), torch::kFloat32);
  torch::NoGradGuard no_grad;
  c.adapter->lora_B.zero_();
  EXPECT_TRUE(torch::equal(c.linear(c.x), c.linear->base_forward(c.x)));
}

TEST(LoraLinear, GradientsOfAAndBMatchFiniteDifferences) {
  auto c = make_case(plain_config(false));
  const auto loss = (c.linear(c.x) * c.weights).sum();
  loss.backward();
  const auto f = [&] { return loss_of(c.linear(c.x), c.weights); };
  for (auto* parameter : {&c.adapter->lora_A, &c.adapter->lora_B}) {
    const auto grad = parameter->grad().view({-1});
    for (int64_t i = 0; i < parameter->numel(); ++i)
      EXPECT_NEAR(grad[i].item<double>(), finite_difference(*parameter, i, 1e-6, f), 1e-7) << "element " << i;
  }
}

TEST(DoraLinear, OutputIsMagnitudeTimesNormalisedAdaptedWeight) {
  auto config = plain_config(true);
  auto c = make_case(config);
  const auto& a = *c.adapter;
  const auto expected = dora_reference(c, a.lora_A, a.lora_B, a.lora_magnitude_vector,
                                       row_norm(c, a.lora_A, a.lora_B, 2.0), 2.0);
  EXPECT_TRUE(torch::allclose(c.linear(c.x), expected, 1e-12, 1e-12));
}

TEST(DoraLinear, GradientsMatchFiniteDifferencesWithTheNormDetached) {
  auto c = make_case(plain_config(true));
  auto& a = *c.adapter;
  const auto loss = (c.linear(c.x) * c.weights).sum();
  loss.backward();

  // The norm is a constant of the gradient: hold it at its current value.
  const auto frozen_norm = row_norm(c, a.lora_A, a.lora_B, 2.0).detach();
  const auto with_frozen_norm = [&] {
    return loss_of(dora_reference(c, a.lora_A, a.lora_B, a.lora_magnitude_vector, frozen_norm, 2.0), c.weights);
  };
  for (auto* parameter : {&a.lora_A, &a.lora_B, &a.lora_magnitude_vector}) {
    const auto grad = parameter->grad().view({-1});
    for (int64_t i = 0; i < parameter->numel(); ++i)
      EXPECT_NEAR(grad[i].item<double>(), finite_difference(*parameter, i, 1e-6, with_frozen_norm), 1e-7)
          << "element " << i << " of a tensor of shape " << parameter->sizes();
  }
  // The magnitude does not enter the norm, so its gradient is also the layer's true derivative.
  const auto layer = [&] { return loss_of(c.linear(c.x), c.weights); };
  const auto m_grad = a.lora_magnitude_vector.grad().view({-1});
  for (int64_t i = 0; i < a.lora_magnitude_vector.numel(); ++i)
    EXPECT_NEAR(m_grad[i].item<double>(), finite_difference(a.lora_magnitude_vector, i, 1e-6, layer), 1e-7);
  // ... whereas A's gradient differs from the derivative through the norm: the norm is detached.
  double largest_gap = 0;
  const auto a_grad = a.lora_A.grad().view({-1});
  for (int64_t i = 0; i < a.lora_A.numel(); ++i)
    largest_gap = std::max(largest_gap, std::abs(a_grad[i].item<double>() - finite_difference(a.lora_A, i, 1e-6, layer)));
  EXPECT_GT(largest_gap, 1e-3);
}

TEST(DoraLinear, BiasIsAddedOnceWhenDropoutIsActive) {
  // In training with dropout, PEFT recomputes x W^T on the dropped-out input; with p -> 0 the
  // result must still equal the eval-mode formula (bias not rescaled by m / ||.||).
  auto config = plain_config(true);
  config.lora_dropout = 1e-12;
  auto c = make_case(config);
  c.linear->eval();
  const auto eval_output = c.linear(c.x);
  c.linear->train();
  EXPECT_TRUE(torch::allclose(c.linear(c.x), eval_output, 1e-9, 1e-9));
}

TEST(LoraLinear, DropoutActsOnlyInTrainingMode) {
  auto config = plain_config(false);
  config.lora_dropout = 0.5;
  auto c = make_case(config);
  const auto expected = c.linear->base_forward(c.x) +
                        2.0 * torch::matmul(c.x, c.adapter->lora_B.mm(c.adapter->lora_A).t());
  c.linear->eval();
  EXPECT_TRUE(torch::allclose(c.linear(c.x), expected, 1e-12, 1e-12));
  c.linear->train();
  EXPECT_FALSE(torch::allclose(c.linear(c.x), expected, 1e-6, 1e-6));
}

TEST(LoraLinear, BFloat16BaseKeepsFloat32AdapterAndBaseDtypeOutput) {
  auto c = make_case(plain_config(true), torch::kBFloat16);
  EXPECT_EQ(c.adapter->lora_A.scalar_type(), torch::kFloat32);
  EXPECT_EQ(c.adapter->lora_B.scalar_type(), torch::kFloat32);
  EXPECT_EQ(c.adapter->lora_magnitude_vector.scalar_type(), torch::kFloat32);
  const auto output = c.linear(c.x);
  EXPECT_EQ(output.scalar_type(), torch::kBFloat16);
  const auto& a = *c.adapter;
  const auto reference = dora_reference(c, a.lora_A.to(torch::kFloat64), a.lora_B.to(torch::kFloat64),
                                        a.lora_magnitude_vector.to(torch::kFloat64),
                                        row_norm(c, a.lora_A.to(torch::kFloat64), a.lora_B.to(torch::kFloat64), 2.0), 2.0);
  EXPECT_TRUE(torch::allclose(output.to(torch::kFloat64), reference, 2e-2, 2e-2));
}

}  // namespace
}  // namespace lathe::testing
