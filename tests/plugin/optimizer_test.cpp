// Learning-rate schedules against values computed by hand from transformers' formulas, and the
// default optimizer's parameter groups.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lathe/common/error.h"
#include "lathe/plugin/optimizer.h"
#include "lathe/plugin/schedules.h"

#include "support/tiny_config.h"

namespace lathe {
namespace {

TEST(Schedules, CosineWithWarmup) {
  auto schedule = make_scheduler("cosine", 2, 10, 0.1);
  EXPECT_DOUBLE_EQ(schedule->factor(0), 0.0);
  EXPECT_DOUBLE_EQ(schedule->factor(1), 0.5);
  EXPECT_DOUBLE_EQ(schedule->factor(2), 1.0);
  EXPECT_NEAR(schedule->factor(6), 0.5, 1e-12);  // halfway through the 8 decay steps
  EXPECT_NEAR(schedule->factor(4), 0.5 * (1 + std::cos(std::numbers::pi * 0.25)), 1e-12);
  EXPECT_NEAR(schedule->factor(10), 0.0, 1e-12);
}

TEST(Schedules, Linear) {
  auto schedule = make_scheduler("linear", 0, 4, 0.1);
  EXPECT_DOUBLE_EQ(schedule->factor(0), 1.0);
  EXPECT_DOUBLE_EQ(schedule->factor(1), 0.75);
  EXPECT_DOUBLE_EQ(schedule->factor(3), 0.25);
}

TEST(Schedules, ConstantAndConstantWithWarmup) {
  auto constant = make_scheduler("constant", 5, 10, 0.1);
  EXPECT_DOUBLE_EQ(constant->factor(0), 1.0);
  auto warm = make_scheduler("constant_with_warmup", 4, 10, 0.1);
  EXPECT_DOUBLE_EQ(warm->factor(1), 0.25);
  EXPECT_DOUBLE_EQ(warm->factor(7), 1.0);
}

TEST(Schedules, CosineWithMinLr) {
  auto schedule = make_scheduler("cosine_with_min_lr", 0, 10, 0.1);
  EXPECT_DOUBLE_EQ(schedule->factor(0), 1.0);
  EXPECT_NEAR(schedule->factor(5), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(schedule->factor(10), 0.1, 1e-12);
}

TEST(Schedules, UnknownNameIsAnError) { EXPECT_THROW(make_scheduler("sawtooth", 0, 10, 0.1), Error); }

TEST(Schedules, WarmupStepsWinOverRatio) {
  Arguments arguments;
  arguments.warmup_ratio = 0.1;
  EXPECT_EQ(warmup_steps_for(arguments, 95), 10);  // ceil(9.5)
  arguments.warmup_steps = 3;
  EXPECT_EQ(warmup_steps_for(arguments, 95), 3);
}

TEST(Schedules, ApplySetsEachGroupFromItsOwnPeak) {
  auto a = torch::zeros({2}, torch::requires_grad()), b = torch::zeros({2}, torch::requires_grad());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{a}, std::make_unique<torch::optim::AdamWOptions>(1e-3));
  groups.emplace_back(std::vector<torch::Tensor>{b}, std::make_unique<torch::optim::AdamWOptions>(4e-3));
  torch::optim::AdamW optimizer(std::move(groups));
  auto schedule = make_scheduler("linear", 0, 4, 0.1);
  schedule->remember_base_rates(optimizer);
  schedule->apply(optimizer, 2);
  EXPECT_DOUBLE_EQ(optimizer.param_groups()[0].options().get_lr(), 0.5e-3);
  EXPECT_DOUBLE_EQ(optimizer.param_groups()[1].options().get_lr(), 2e-3);
}

TEST(DefaultOptimizer, NoDecayOnBiasesAndNorms) {
  CausalLM model(testing::tiny_config({.attention_bias = true}));
  auto groups = trainable_parameter_groups(*model);
  for (const auto& name : groups.no_decay_names) {
    EXPECT_TRUE(name.find("norm") != std::string::npos || name.ends_with(".bias")) << name;
  }
  for (const auto& name : groups.decay_names) {
    EXPECT_TRUE(name.find("norm") == std::string::npos && !name.ends_with(".bias")) << name;
  }
  EXPECT_FALSE(groups.no_decay.empty());
  EXPECT_FALSE(groups.decay.empty());
  Arguments arguments;
  arguments.weight_decay = 0.1;
  auto setup = optimizer_registry().create("default", arguments, *model, 10);
  ASSERT_EQ(setup.optimizer->param_groups().size(), 2u);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(setup.optimizer->param_groups()[1].options()).weight_decay(), 0.0);
}

}  // namespace
}  // namespace lathe
