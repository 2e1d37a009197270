// The sampler's filters and penalties on fixed logits, against distributions computed by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "lathe/infer/generate.h"

namespace lathe::testing {
namespace {

// Logits whose softmax is exactly these probabilities.
torch::Tensor logits_of(const std::vector<double>& probabilities) {
  std::vector<float> logits;
  for (double p : probabilities) logits.push_back(static_cast<float>(std::log(p)));
  return torch::tensor(logits);
}

const std::vector<double> kProbabilities = {0.2, 0.5, 0.05, 0.15, 0.1};

void expect_distribution(const torch::Tensor& actual, const std::vector<double>& expected) {
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size()));
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(actual[static_cast<int64_t>(i)].item<double>(), expected[i], 1e-6) << "token " << i;
  }
}

torch::Tensor distribution(const SamplingParams& params) {
  Sampler sampler(params);
  return sampler.distribution(sampler.penalized(logits_of(kProbabilities), {}, 0));
}

SamplingParams sampled() {
  SamplingParams params;
  params.temperature = 1.0;
  return params;
}

TEST(Sampler, TemperatureOneKeepsTheModelsDistribution) {
  expect_distribution(distribution(sampled()), kProbabilities);
}

TEST(Sampler, TemperatureScalesTheLogits) {
  auto params = sampled();
  params.temperature = 2.0;  // softmax(log p / 2) is proportional to sqrt(p)
  std::vector<double> expected;
  double total = 0;
  for (double p : kProbabilities) total += std::sqrt(p);
  for (double p : kProbabilities) expected.push_back(std::sqrt(p) / total);
  expect_distribution(distribution(params), expected);
}

TEST(Sampler, TopKKeepsTheKLikeliest) {
  auto params = sampled();
  params.top_k = 2;
  expect_distribution(distribution(params), {0.2 / 0.7, 0.5 / 0.7, 0, 0, 0});
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  auto params = sampled();
  params.top_p = 0.8;  // 0.5, 0.7 (< 0.8), 0.85: three tokens
  expect_distribution(distribution(params), {0.2 / 0.85, 0.5 / 0.85, 0, 0.15 / 0.85, 0});
}

TEST(Sampler, TopPIsTakenOnTheTopKRenormalised) {
  auto params = sampled();
  params.top_k = 3;
  params.top_p = 0.8;  // top 3 renormalised: 0.588, 0.824: two tokens (three without renormalising)
  expect_distribution(distribution(params), {0.2 / 0.7, 0.5 / 0.7, 0, 0, 0});
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheLikeliest) {
  auto params = sampled();
  params.min_p = 0.25;  // threshold 0.125: keeps 0.5, 0.2, 0.15
  expect_distribution(distribution(params), {0.2 / 0.85, 0.5 / 0.85, 0, 0.15 / 0.85, 0});
  params.min_p = 1.0;  // only the likeliest
  expect_distribution(distribution(params), {0, 1, 0, 0, 0});
}

TEST(Sampler, PenaltiesFollowHuggingFaceAndOpenAI) {
  SamplingParams params;
  params.repetition_penalty = 2.0;  // whole history: tokens 0, 1, 2, 3
  params.presence_penalty = 0.5;    // generated part only: tokens 2 (twice) and 3
  params.frequency_penalty = 0.25;
  Sampler sampler(params);
  const auto logits = torch::tensor({1.0F, -1.0F, 2.0F, 0.5F, 0.0F});
  const std::vector<int32_t> history = {0, 1, 2, 2, 3};
  const auto penalized = sampler.penalized(logits, history, /*prompt_length=*/2);
  // 0: 1/2; 1: -1*2; 2: 2/2 - 0.5 - 2*0.25; 3: 0.5/2 - 0.5 - 0.25; 4 untouched.
  expect_distribution(penalized, {0.5, -2.0, 0.0, -0.5, 0.0});
  EXPECT_EQ(sampler.next(logits, history, 2), 0);  // greedy picks the penalised argmax
  EXPECT_EQ(Sampler(SamplingParams{}).next(logits, history, 2), 2);
}

TEST(Sampler, DrawsFollowTheFilteredDistribution) {
  auto params = sampled();
  params.min_p = 0.25;
  params.seed = 9;
  Sampler sampler(params);
  const auto logits = logits_of(kProbabilities);
  std::vector<int> counts(kProbabilities.size(), 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++counts[static_cast<std::size_t>(sampler.next(logits, {}))];
  EXPECT_EQ(counts[2], 0);
  EXPECT_EQ(counts[4], 0);
  EXPECT_NEAR(counts[0] / double(draws), 0.2 / 0.85, 0.015);
  EXPECT_NEAR(counts[1] / double(draws), 0.5 / 0.85, 0.015);
  EXPECT_NEAR(counts[3] / double(draws), 0.15 / 0.85, 0.015);
}

}  // namespace
}  // namespace lathe::testing
