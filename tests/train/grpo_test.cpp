// grpo's formulas against hand-computed numbers: advantages of each estimator and
// scaling, ms-swift's clamped k3 KL, the clipped surrogate, and each loss_type's aggregation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "lathe/common/error.h"
#include "lathe/train/grpo.h"

namespace lathe {
namespace {

torch::Tensor values(std::vector<double> list) { return torch::tensor(list, torch::kDouble); }

void expect_values(const torch::Tensor& actual, const std::vector<double>& expected, double tolerance) {
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size()));
  for (std::size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(actual[static_cast<int64_t>(i)].item<double>(), expected[i], tolerance) << "at " << i;
}

TEST(GrpoAdvantages, MatchTheHandComputedNumbers) {
  // Group std 0.577350 (unbiased): 0.5 / (0.577350 + 1e-4) = 0.865875.
  expect_values(group_advantages(values({1, 0, 0, 1}), 4, "grpo", "group"), {0.865875, -0.865875, -0.865875, 0.865875}, 1e-6);
  expect_values(group_advantages(values({1, 0, 0, 0}), 4, "grpo", "group"), {1.499700, -0.499900, -0.499900, -0.499900}, 1e-6);
  expect_values(group_advantages(values({0.5, 0.5, 0.5, 0.5}), 4, "grpo", "group"), {0, 0, 0, 0}, 0);
  expect_values(group_advantages(values({1, 0, 0, 0}), 4, "rloo", "none"), {1, -1.0 / 3, -1.0 / 3, -1.0 / 3}, 1e-12);
  // Two groups: each centred on its own mean; batch scaling divides by the std of all eight.
  const auto rewards = values({1, 0, 0, 1, 3, 3, 2, 4});
  const double batch_std = rewards.std().item<double>();
  expect_values(group_advantages(rewards, 4, "grpo", "batch"),
                {0.5 / (batch_std + 1e-4), -0.5 / (batch_std + 1e-4), -0.5 / (batch_std + 1e-4), 0.5 / (batch_std + 1e-4),
                 0, 0, -1 / (batch_std + 1e-4), 1 / (batch_std + 1e-4)},
                1e-9);
  // reinforce_plus_plus divides the centred values by their own std over the batch.
  const auto centred = values({0.5, -0.5, -0.5, 0.5, 0, 0, -1, 1});
  const double centred_std = centred.std().item<double>();
  const auto plus = group_advantages(rewards, 4, "reinforce_plus_plus", "batch");
  for (int64_t i = 0; i < 8; ++i) EXPECT_NEAR(plus[i].item<double>(), centred[i].item<double>() / (centred_std + 1e-4), 1e-9);
  EXPECT_THROW(group_advantages(values({1, 0, 0}), 2, "grpo", "group"), Error);
}

TEST(GrpoKl, IsMsSwiftsClampedK3) {
  const auto logps = values({0, 0, 0, 0, 0});
  expect_values(k3_kl(values({0.1, -0.1, 0.5, 30, -30}), logps),
                {0.005171, 0.004837, 0.148721, 10.0, 10.0}, 1e-6);  // d = -20: 19, clamped
}

// Tokens of one completion per entry, each with its own ratio (through old_logps) and advantage.
GrpoTokens single_tokens(const std::vector<double>& ratios, const std::vector<double>& advantages) {
  GrpoTokens tokens;
  const auto count = static_cast<int64_t>(ratios.size());
  tokens.logps = torch::zeros({count}, torch::kFloat32).requires_grad_(true);
  tokens.old_logps = -torch::log(torch::tensor(ratios, torch::kFloat32));
  tokens.advantages = torch::tensor(advantages, torch::kFloat32);
  tokens.mask = torch::ones({count}, torch::kFloat32);
  tokens.sequence = torch::arange(count, torch::kLong);
  tokens.sequences = count;
  return tokens;
}

TEST(GrpoLoss, ClipsAsPpoDoes) {
  GrpoLossSettings settings;
  settings.beta = 0;
  settings.loss_type = "bnpo";  // the mean over tokens: each token's own loss shows as a third
  for (const auto& [ratio, advantage, expected] : std::vector<std::tuple<double, double, double>>{
           {1.3, 1, -1.2}, {0.7, -1, 0.8}, {1.3, -1, 1.3}}) {
    const auto result = grpo_loss(single_tokens({ratio}, {advantage}), settings);
    EXPECT_NEAR(result.loss.item<double>(), expected, 1e-5) << ratio << " " << advantage;
  }
  const auto all = grpo_loss(single_tokens({1.3, 0.7, 1.3}, {1, -1, -1}), settings);
  EXPECT_NEAR(all.clip_high, 1.0 / 3, 1e-6);
  EXPECT_NEAR(all.clip_low, 1.0 / 3, 1e-6);
  EXPECT_NEAR(all.clip_region, 2.0 / 3, 1e-6);
  settings.delta = 1.1;  // the unclipped side bounded too
  EXPECT_NEAR(grpo_loss(single_tokens({1.3}, {-1}), settings).loss.item<double>(), 1.2, 1e-5);
}

TEST(GrpoLoss, OnPolicyIsMinusTheAdvantagePlusBetaKl) {
  auto tokens = single_tokens({1.0}, {0.7});
  tokens.reference_logps = torch::tensor({0.1F});  // d = ref - logp = 0.1
  GrpoLossSettings settings;
  const auto result = grpo_loss(tokens, settings);
  EXPECT_NEAR(result.loss.item<double>(), -0.7 + 0.000207, 1e-6);
  ASSERT_TRUE(result.kl);
  EXPECT_NEAR(*result.kl, 0.005171, 1e-6);
  // The gradient of -rho A with rho = exp(logp - old): -A at rho = 1 (plus beta times k3's).
  result.loss.backward();
  EXPECT_NEAR(tokens.logps.grad()[0].item<double>(), -0.7 + 0.04 * (1 - std::exp(0.1)), 1e-6);
}

// Hand-computed: on-policy, beta 0, completions of 2, 3, 4 and 1 tokens with advantages
// a, -a, -a, a.
TEST(GrpoLoss, EachLossTypeAggregatesAsMsSwift) {
  const double a = 0.8;
  GrpoTokens tokens;
  const std::vector<int64_t> lengths{2, 3, 4, 1};
  const std::vector<double> advantage{a, -a, -a, a};
  std::vector<int64_t> owner;
  std::vector<float> per_token;
  for (std::size_t s = 0; s < lengths.size(); ++s)
    for (int64_t t = 0; t < lengths[s]; ++t) owner.push_back(static_cast<int64_t>(s)), per_token.push_back(static_cast<float>(advantage[s]));
  tokens.logps = torch::zeros({10}, torch::kFloat32).requires_grad_(true);
  tokens.old_logps = tokens.logps.detach();
  tokens.advantages = torch::tensor(per_token);
  tokens.mask = torch::ones({10});
  tokens.sequence = torch::tensor(owner, torch::kLong);
  tokens.sequences = 4;
  GrpoLossSettings settings;
  settings.beta = 0;
  settings.max_completion_length = 8;
  settings.window_tokens = 10;
  const auto loss_of = [&](const std::string& type, int64_t micro_batches = 1) {
    settings.loss_type = type;
    settings.micro_batches = micro_batches;
    return grpo_loss(tokens, settings).loss.item<double>();
  };
  EXPECT_NEAR(loss_of("grpo"), 0.0, 1e-7);
  EXPECT_NEAR(loss_of("bnpo"), 0.4 * a, 1e-6);
  EXPECT_NEAR(loss_of("dr_grpo"), 0.125 * a, 1e-6);
  EXPECT_NEAR(loss_of("dapo"), 0.4 * a, 1e-6);
  // Accumulation: the per-micro-batch means are divided by the step's micro-batches; dapo's
  // normaliser is the whole rollout batch's tokens already.
  EXPECT_NEAR(loss_of("bnpo", 2), 0.2 * a, 1e-6);
  EXPECT_NEAR(loss_of("dapo", 2), 0.4 * a, 1e-6);
  EXPECT_THROW(loss_of("ppo"), Error);
}

TEST(GrpoLoss, SequenceLevelRatiosAreTheMeanLogRatio) {
  GrpoTokens tokens;
  tokens.logps = torch::zeros({3}, torch::kFloat32).requires_grad_(true);
  tokens.old_logps = torch::tensor({-0.2F, 0.0F, -0.1F});  // log ratios 0.2, 0, 0.1: mean 0.1
  tokens.advantages = torch::full({3}, -1.0F);
  tokens.mask = torch::ones({3});
  tokens.sequence = torch::zeros({3}, torch::kLong);
  tokens.sequences = 1;
  GrpoLossSettings settings;
  settings.beta = 0;
  settings.importance_sampling_level = "sequence";
  // Every token carries exp(0.1) = 1.105171, inside the clip range: the loss is that times 1.
  EXPECT_NEAR(grpo_loss(tokens, settings).loss.item<double>(), std::exp(0.1), 1e-6);
  settings.importance_sampling_level = "sequence_token";
  EXPECT_NEAR(grpo_loss(tokens, settings).loss.item<double>(), std::exp(0.1), 1e-6);
}

}  // namespace
}  // namespace lathe
