#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "tuner/dropout.h"

namespace lathe {
namespace {

constexpr double kP = 0.05;
constexpr int64_t kRows = 512, kColumns = 1024;  // 524,288 draws: one standard error of the kept share is 0.0003

TEST(InvertedDropout, KeepsOneMinusPOfTheInputsScaledAndZeroesTheRest) {
  torch::manual_seed(1);
  const auto x = torch::full({kRows, kColumns}, 3.0);
  const auto y = inverted_dropout(x, kP);
  const auto kept = y != 0;
  const double kept_share = kept.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(kept_share, 1 - kP, 0.0015);
  const float scaled = static_cast<float>(3.0 / (1 - kP));
  EXPECT_TRUE(y.masked_select(kept).eq(scaled).all().item<bool>());
  // Neighbouring elements are dropped independently: both of a pair with probability p^2.
  const auto pairs = (~kept).reshape({-1, 2});
  const double both_dropped = pairs.all(1).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(both_dropped, kP * kP, 5e-4);
  // ... and rows and columns alike.
  const auto per_column = (~kept).to(torch::kFloat64).mean(0);
  EXPECT_LT((per_column - kP).abs().max().item<double>(), 6 * std::sqrt(kP * (1 - kP) / kRows));
}

TEST(InvertedDropout, FollowsTorchsSeed) {
  const auto x = torch::ones({64, 64});
  torch::manual_seed(7);
  const auto first = inverted_dropout(x, 0.5);
  const auto second = inverted_dropout(x, 0.5);
  torch::manual_seed(7);
  EXPECT_TRUE(inverted_dropout(x, 0.5).equal(first));
  EXPECT_TRUE(inverted_dropout(x, 0.5).equal(second));
  EXPECT_FALSE(first.equal(second));
  torch::manual_seed(8);
  EXPECT_FALSE(inverted_dropout(x, 0.5).equal(first));
}

TEST(InvertedDropout, GradientIsTheMaskAndDtypeIsKept) {
  torch::manual_seed(2);
  const auto x = torch::ones({32, 48}, torch::requires_grad());
  const auto y = inverted_dropout(x, 0.25);
  y.sum().backward();
  EXPECT_TRUE(x.grad().equal(y.detach()));
  const auto half_precision = inverted_dropout(torch::ones({8, 8}, torch::kBFloat16), 0.25);
  EXPECT_EQ(half_precision.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(inverted_dropout(x.detach(), 0.0).equal(x.detach()));
}

// The projection of the dropped-out input equals dropout then torch::linear from the same draw,
// values and both gradients, without keeping the mask (it is drawn again in backward).
TEST(DropoutThenLinear, EqualsDropoutThenLinearFromTheSameDraw) {
  torch::manual_seed(9);
  const auto x = torch::randn({3, 37, 64}, torch::kFloat64).requires_grad_(true);
  const auto weight = torch::randn({8, 64}, torch::kFloat64).requires_grad_(true);
  const auto upstream = torch::randn({3, 37, 8}, torch::kFloat64);
  auto gradients_of = [&](auto compute) {
    x.mutable_grad() = torch::Tensor();
    weight.mutable_grad() = torch::Tensor();
    torch::manual_seed(4);
    const auto y = compute();
    y.backward(upstream);
    return std::vector<torch::Tensor>{y.detach(), x.grad().clone(), weight.grad().clone()};
  };
  const auto fused = gradients_of([&] { return dropout_then_linear(x, weight, 0.3); });
  const auto plain = gradients_of([&] { return torch::linear(inverted_dropout(x, 0.3), weight); });
  for (size_t i = 0; i < fused.size(); ++i) EXPECT_TRUE(torch::allclose(fused[i], plain[i], 1e-12, 1e-12)) << i;
  EXPECT_GT((fused[1] == 0).to(torch::kFloat64).mean().item<double>(), 0.2);  // the mask reached x's gradient
  // Without dropout it is the plain product.
  EXPECT_TRUE(dropout_then_linear(x, weight, 0.0).equal(torch::linear(x, weight)));
}

}  // namespace
}  // namespace lathe
