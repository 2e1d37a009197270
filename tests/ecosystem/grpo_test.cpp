// lathe rlhf --rlhf_type grpo against ms-swift's own code (hf_oracle.py grpo): group_advantages against
// swift.rl_core.advantage.compute_advantages; k3_kl and grpo_loss (the loss, its gradient with respect
// to the log-probabilities, the clip and KL metrics) against GRPOTrainer._compute_loss_and_metrics
// followed by Trainer.training_step's division by the accumulation steps; the built-in reward
// functions against swift.rewards.orm's classes; and a training run's logged advantages and reward
// metrics against compute_advantages and compute_reward_metrics on the run's own reward table.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/files.h"
#include "lathe/plugin/orm.h"
#include "lathe/train/grpo.h"

namespace lathe::testing {
namespace {
using nlohmann::json;

// ms-swift computes in float32; so do Lathe's loss and the oracle's rewards.
constexpr double kTolerance = 2e-6;
constexpr double kNoReward = std::numeric_limits<double>::quiet_NaN();

void expect_near(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, kTolerance * std::max(1.0, std::abs(expected))) << what;
}

void expect_values(const torch::Tensor& actual, const json& expected, const std::string& what) {
  const auto flat = actual.detach().to(torch::kDouble).contiguous().reshape(-1);
  ASSERT_EQ(flat.numel(), static_cast<int64_t>(expected.size())) << what;
  for (int64_t i = 0; i < flat.numel(); ++i) expect_near(flat[i].item<double>(), expected[i].get<double>(), what + " [" + std::to_string(i) + "]");
}

json nullable(double value) { return std::isnan(value) ? json(nullptr) : json(value); }

// ---- advantages ----

struct AdvantageCase {
  std::vector<std::vector<double>> rewards_per_func;  // NaN: the function gave no reward
  std::vector<double> weights;
  int64_t group;
  std::string estimator, scale;

  json oracle() const {
    json table = json::array();
    for (const auto& row : rewards_per_func) {
      json values = json::array();
      for (const double value : row) values.push_back(nullable(value));
      table.push_back(values);
    }
    std::vector<std::string> names;
    for (std::size_t f = 0; f < weights.size(); ++f) names.push_back("f" + std::to_string(f));
    return {{"kind", "advantages"}, {"rewards_per_func", table}, {"reward_weights", weights}, {"num_generations", group},
            {"advantage_estimator", estimator}, {"scale_rewards", scale}, {"names", names}};
  }
};

// Three groups of four: spread values with a NaN, a tie, and one group whose every reward is equal.
std::vector<std::vector<double>> reward_table() {
  return {{1.0, 0.5}, {0.0, kNoReward}, {0.0, 0.25}, {1.0, 0.5},
          {0.3, 0.1}, {0.3, 0.1}, {0.3, 0.1}, {0.3, 0.1},
          {-1.0, kNoReward}, {2.5, 0.0}, {0.7, -0.4}, {kNoReward, kNoReward}};
}

std::vector<AdvantageCase> advantage_cases() {
  std::vector<AdvantageCase> cases;
  for (const char* estimator : {"grpo", "rloo", "reinforce_plus_plus"}) {
    for (const char* scale : {"group", "batch", "none"}) {
      cases.push_back({reward_table(), {0.7, 2.0}, 4, estimator, scale});
      cases.push_back({reward_table(), {1.0, 1.0}, 2, estimator, scale});
      cases.push_back({{{1.0}, {0.0}, {0.0}}, {1.0}, 1, estimator, scale});  // groups of one
    }
  }
  return cases;
}

// ---- the loss ----

// One micro-batch of completions: per-token log-probabilities in rows of different lengths.
struct LossCase {
  std::vector<std::vector<float>> logps, old_logps, reference_logps;  // old, reference: empty when absent
  std::vector<float> advantages;
  std::vector<bool> truncated;
  bool overlong_filter = true;
  GrpoLossSettings settings;

  json oracle() const {
    return {{"kind", "loss"}, {"logps", logps}, {"old_logps", old_logps}, {"ref_logps", reference_logps},
            {"advantages", advantages}, {"truncated", truncated}, {"overlong_filter", overlong_filter},
            {"window_tokens", settings.window_tokens}, {"gradient_accumulation_steps", settings.micro_batches},
            {"beta", settings.beta}, {"importance_sampling_level", settings.importance_sampling_level},
            {"loss_type", settings.loss_type}, {"epsilon", settings.epsilon}, {"epsilon_high", settings.epsilon_high},
            {"max_completion_length", settings.max_completion_length},
            {"delta", settings.delta ? json(*settings.delta) : json(nullptr)}};
  }

  std::string label() const {
    return settings.loss_type + "/" + settings.importance_sampling_level + " beta " + std::to_string(settings.beta) +
           (settings.delta ? " delta " + std::to_string(*settings.delta) : "") + (old_logps.empty() ? " on-policy" : "") +
           " accumulation " + std::to_string(settings.micro_batches);
  }

  // The flat row-order tokens Lathe's objective builds, the overlong-filtered rows masked out.
  GrpoTokens tokens() const {
    std::vector<float> flat, old, reference, advantage, mask;
    std::vector<int64_t> sequence;
    for (std::size_t s = 0; s < logps.size(); ++s) {
      for (std::size_t t = 0; t < logps[s].size(); ++t) {
        flat.push_back(logps[s][t]);
        if (!old_logps.empty()) old.push_back(old_logps[s][t]);
        if (!reference_logps.empty()) reference.push_back(reference_logps[s][t]);
        advantage.push_back(advantages[s]);
        mask.push_back(overlong_filter && truncated[s] ? 0.0F : 1.0F);
        sequence.push_back(static_cast<int64_t>(s));
      }
    }
    GrpoTokens tokens;
    tokens.logps = torch::tensor(flat, torch::kFloat32).requires_grad_(true);
    tokens.old_logps = old.empty() ? tokens.logps.detach() : torch::tensor(old, torch::kFloat32);
    if (!reference.empty()) tokens.reference_logps = torch::tensor(reference, torch::kFloat32);
    tokens.advantages = torch::tensor(advantage, torch::kFloat32);
    tokens.mask = torch::tensor(mask, torch::kFloat32);
    tokens.sequence = torch::tensor(sequence, torch::kLong);
    tokens.sequences = static_cast<int64_t>(logps.size());
    return tokens;
  }
};

std::vector<float> floats(const torch::Tensor& tensor) {
  const auto flat = tensor.detach().to(torch::kFloat32).contiguous();
  return {flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel()};
}

// Four completions of lengths 5, 3, 6 and 4; the third is cut off (masked under overlong_filter).
// Old log-probabilities differ from the policy's by enough that both clips happen, and a few
// reference values lie far enough away that the k3 clamps act.
LossCase random_batch(GrpoLossSettings settings, bool off_policy = true, bool reference = true) {
  LossCase c;
  for (const int64_t length : {5, 3, 6, 4}) {
    const auto logps = -torch::rand({length}) * 3 - 0.05;
    c.logps.push_back(floats(logps));
    if (off_policy) c.old_logps.push_back(floats(logps + torch::randn({length}) * 0.3));
    if (reference) c.reference_logps.push_back(floats(logps + torch::randn({length}) * 0.5));
  }
  if (reference) {
    c.reference_logps[0][1] = c.logps[0][1] + 25;   // past the +20 clamp
    c.reference_logps[1][0] = c.logps[1][0] - 25;   // past the -20 clamp
    c.reference_logps[3][2] = c.logps[3][2] + 3;    // k3 past the 10 clamp
    c.reference_logps[3][3] = c.logps[3][3] - 1.5;
  }
  c.advantages = {0.8F, -1.2F, 0.5F, -0.3F};
  c.truncated = {false, false, true, false};
  settings.window_tokens = 18 + 11;  // this micro-batch's tokens and those of another one
  settings.max_completion_length = 8;
  c.settings = settings;
  return c;
}

GrpoLossSettings loss_settings(const std::string& loss_type, const std::string& level, int64_t accumulation = 2) {
  GrpoLossSettings s;
  s.loss_type = loss_type;
  s.importance_sampling_level = level;
  s.epsilon = 0.2;
  // cispo's epsilon_high bounds the ratio itself (ms-swift clamps coef_1 at it).
  s.epsilon_high = loss_type == "cispo" ? 1.1 : 0.28;
  s.beta = 0.04;
  s.micro_batches = accumulation;
  return s;
}

std::vector<LossCase> loss_cases() {
  std::vector<LossCase> cases;
  for (const char* loss_type : {"grpo", "bnpo", "dr_grpo", "dapo", "cispo"}) {
    for (const char* level : {"token", "sequence", "sequence_token"}) cases.push_back(random_batch(loss_settings(loss_type, level)));
  }
  auto two_sided = loss_settings("grpo", "token");
  two_sided.delta = 1.5;
  cases.push_back(random_batch(two_sided));
  two_sided.loss_type = "dapo";
  two_sided.importance_sampling_level = "sequence";
  cases.push_back(random_batch(two_sided));
  auto no_kl = loss_settings("bnpo", "token");
  no_kl.beta = 0;
  cases.push_back(random_batch(no_kl, true, false));
  cases.push_back(random_batch(loss_settings("grpo", "token"), false));  // on-policy: old = logps detached
  cases.push_back(random_batch(loss_settings("cispo", "token"), false));
  cases.push_back(random_batch(loss_settings("dapo", "token", 1)));
  cases.push_back(random_batch(loss_settings("dr_grpo", "sequence_token", 4)));
  auto symmetric = loss_settings("bnpo", "sequence");
  symmetric.epsilon_high = symmetric.epsilon;
  cases.push_back(random_batch(symmetric));
  auto unfiltered = random_batch(loss_settings("grpo", "token"));
  unfiltered.overlong_filter = false;  // the cut-off completion takes part
  cases.push_back(unfiltered);
  return cases;
}

void expect_loss_equal(const LossCase& c, const json& expected) {
  const auto label = c.label();
  auto tokens = c.tokens();
  const auto result = grpo_loss(tokens, c.settings);
  expect_near(result.loss.item<double>(), expected["loss"].get<double>(), label + ": loss");
  if (result.loss.requires_grad()) result.loss.backward();
  const auto grad = tokens.logps.grad().defined() ? tokens.logps.grad() : torch::zeros_like(tokens.logps);
  expect_values(grad, expected["grad"], label + ": d loss / d logps");
  const auto& clipping = expected["clipping"];
  if (c.settings.loss_type == "cispo") {
    expect_near(result.clip_high, clipping["cispo_clip_ratio"].get<double>(), label + ": cispo_clip_ratio");
  } else {
    // One process: ms-swift's low_min and high_max are the means themselves.
    expect_near(result.clip_low, clipping["low_clip_mean"].get<double>(), label + ": clip_ratio/low_mean");
    expect_near(result.clip_low, clipping["low_clip_min"].get<double>(), label + ": clip_ratio/low_min");
    expect_near(result.clip_high, clipping["high_clip_mean"].get<double>(), label + ": clip_ratio/high_mean");
    expect_near(result.clip_high, clipping["high_clip_max"].get<double>(), label + ": clip_ratio/high_max");
    expect_near(result.clip_region, clipping["region_clip_mean"].get<double>(), label + ": clip_ratio/region_mean");
  }
  ASSERT_EQ(result.kl.has_value(), expected.contains("kl")) << label << ": a kl metric on one side only";
  if (result.kl) expect_near(*result.kl, expected["kl"].get<double>(), label + ": kl");
}

// ---- reward functions ----

struct RewardCase {
  std::string completion, solution;
  std::optional<int64_t> tokens;
};

// ms-swift's resolution of the length settings (rlhf_trainers/arguments.py, arguments/rlhf_args.py):
// cosine_max_len and soft_max_length default to max_completion_length, as Lathe's 0 does.
json swift_reward_arguments(const Arguments& a) {
  return {{"cosine_min_len_value_wrong", a.cosine_min_len_value_wrong},
          {"cosine_max_len_value_wrong", a.cosine_max_len_value_wrong},
          {"cosine_min_len_value_correct", a.cosine_min_len_value_correct},
          {"cosine_max_len_value_correct", a.cosine_max_len_value_correct},
          {"cosine_max_len", a.cosine_max_len > 0 ? a.cosine_max_len : a.max_completion_length},
          {"repetition_n_grams", a.repetition_n_grams},
          {"repetition_max_penalty", a.repetition_max_penalty},
          {"soft_max_length", a.soft_max_length > 0 ? a.soft_max_length : a.max_completion_length},
          {"soft_cache_length", a.soft_cache_length}};
}

struct OrmCase {
  std::string name;
  Arguments arguments;
  std::vector<RewardCase> inputs;

  json oracle() const {
    json completions = json::array(), solutions = json::array(), lengths = json::array();
    for (const auto& input : inputs) {
      completions.push_back(input.completion);
      solutions.push_back(input.solution);
      lengths.push_back(input.tokens.value_or(0));
    }
    return {{"kind", "orm"}, {"name", name}, {"args", swift_reward_arguments(arguments)}, {"completions", completions},
            {"solution", solutions}, {"token_lengths", lengths}};
  }

  std::vector<double> lathe() const {
    std::vector<RewardInput> rows;
    for (const auto& input : inputs) rows.push_back({input.completion, {{"solution", input.solution}}, input.tokens});
    return orm_registry().create(name, arguments)->score(rows);
  }
};

std::vector<RewardCase> texts(const std::vector<std::string>& completions) {
  std::vector<RewardCase> inputs;
  for (const auto& completion : completions) inputs.push_back({completion, "", std::nullopt});
  return inputs;
}

// Completions whose answer is plainly right or wrong (CosineReward's accuracy is a literal stand-in
// while math_verify is missing), at the given token lengths.
std::vector<RewardCase> answered(const std::vector<int64_t>& lengths) {
  std::vector<RewardCase> inputs;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const bool right = i % 2 == 0;
    inputs.push_back({right ? "<think>2 + 2</think><answer>4</answer>" : "<think>guess</think><answer>5</answer>", "4", lengths[i]});
  }
  return inputs;
}

std::vector<RewardCase> lengths_only(const std::vector<int64_t>& lengths) {
  std::vector<RewardCase> inputs;
  for (const auto length : lengths) inputs.push_back({"some words", "", length});
  return inputs;
}

Arguments reward_arguments(const std::function<void(Arguments&)>& set) {
  Arguments arguments;
  set(arguments);
  return arguments;
}

// Each test's reward cases by name, so that one run of the oracle serves them all.
std::map<std::string, std::vector<OrmCase>> orm_cases() {
  std::map<std::string, std::vector<OrmCase>> cases;
  const Arguments defaults;
  cases["format"] = {{"format", defaults, texts({
      "<think>a</think><answer>b</answer>", "<think>\nreason\n</think>\n<answer>\n42\n</answer>",
      "<think></think><answer></answer>", "<think>a</think>  \t\n<answer>b</answer>",
      "<think>a</think><answer>1</answer><answer>2</answer>", "<think>思考</think><answer>答案</answer>",
      "<think>a</think><answer>b</answer></answer>", " <think>a</think><answer>b</answer>",
      "<think>a</think><answer>b</answer>\n", "<think>a</think> so <answer>b</answer>", "<think>a<answer>b</answer>",
      "<THINK>a</THINK><answer>b</answer>", "<answer>b</answer>", "", "<think>a</think><answer>b</answer> x"})}};
  cases["format_unicode_space"] = {{"format", defaults, texts({
      "<think>a</think>\u00a0<answer>b</answer>", "<think>a</think>\u3000<answer>b</answer>",
      "<think>a</think>\u2028<answer>b</answer>"})}};
  cases["react_format"] = {{"react_format", defaults, texts({
      "<think>plan</think>\nAction: search\nAction Input: {\"q\": 1}", "<think>p</think>Action: a Action Input: b",
      "<think>p</think>\n\nAction: a\nAction Input: b\nObservation: c", "Thought: plan\nAction: search\nAction Input: {}",
      "Thought: done\nFinal Answer: 4", "<think>p</think>\nFinal Answer: 4", "Action: a\nAction Input: b", ""})}};
  const auto words = texts({"the cat sat on the mat the cat sat on the mat", "a b c d e f", "A a A a a A",
                            "go go go go go", "", "one two", "x\ty\nx\ty  x\ty", "the cat the cat the cat"});
  for (const auto& [n, penalty] : std::vector<std::pair<int64_t, double>>{{3, -1.0}, {1, -0.5}, {2, -2.0}}) {
    cases["repetition"].push_back({"repetition", reward_arguments([&](Arguments& a) {
                                     a.repetition_n_grams = n;
                                     a.repetition_max_penalty = penalty;
                                   }),
                                   words});
  }
  cases["repetition_unicode"] = {{"repetition", reward_arguments([](Arguments& a) { a.repetition_n_grams = 1; }),
                                  texts({"Über über Über über", "a\u00a0b a\u00a0c", "ΣΟΦΙΑ σοφια", "x\u3000y x\u3000z"})}};
  const auto cosine = [](int64_t max_len, int64_t max_completion) {
    return reward_arguments([=](Arguments& a) {
      a.cosine_max_len = max_len;
      a.max_completion_length = max_completion;
      a.cosine_min_len_value_wrong = -0.7;
      a.cosine_max_len_value_correct = 0.4;
    });
  };
  cases["cosine"] = {{"cosine", cosine(20, 64), answered({0, 0, 1, 1, 7, 7, 10, 13, 19, 20, 20})},
                     {"cosine", cosine(0, 16), answered({0, 3, 8, 8, 16, 15})}};
  cases["cosine_past_max"] = {{"cosine", cosine(20, 64), answered({25, 25, 30, 30, 40, 40})}};
  const auto soft = [](int64_t max_len, int64_t cache, int64_t max_completion) {
    return reward_arguments([=](Arguments& a) {
      a.soft_max_length = max_len;
      a.soft_cache_length = cache;
      a.max_completion_length = max_completion;
    });
  };
  cases["soft_overlong"] = {{"soft_overlong", soft(20, 8, 64), lengths_only({0, 5, 12, 13, 16, 19, 20})},
                            {"soft_overlong", soft(0, 3, 10), lengths_only({1, 7, 8, 9, 10})}};
  cases["soft_overlong_past_max"] = {{"soft_overlong", soft(20, 8, 64), lengths_only({21, 24, 28, 40})}};
  cases["accuracy"] = {{"accuracy", defaults, {{"<answer>4</answer>", "4", {}}, {"<answer>5</answer>", "4", {}},
                                               {"The answer is \\boxed{\\frac{1}{2}}", "0.5", {}},
                                               {"<answer>\\frac{3}{4}</answer>", "\\frac{3}{4}", {}},
                                               {"<answer>1,000</answer>", "1000", {}}, {"no answer", "7", {}}}}};
  return cases;
}

// The suite's cases and, in the same order, what ms-swift made of them.
struct OracleCases {
  std::vector<AdvantageCase> advantages;
  std::vector<LossCase> losses, low_delta;
  std::map<std::string, std::vector<OrmCase>> orms;
  std::vector<float> k3_policy, k3_reference;
  json results = json::array();
};

// All oracle cases of the suite, run in one Python process (importing ms-swift takes seconds).
class GrpoOracle : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torch::manual_seed(23);
    cases_ = new OracleCases{advantage_cases(), loss_cases(), {}, orm_cases(), {}, {}};
    // delta below 1 + epsilon_high: ms-swift counts the high clips on the ratio already bounded by delta.
    auto low_delta = loss_settings("grpo", "token");
    low_delta.delta = 1.1;
    cases_->low_delta.push_back(random_batch(low_delta));
    low_delta.loss_type = "bnpo";
    low_delta.importance_sampling_level = "sequence";
    cases_->low_delta.push_back(random_batch(low_delta));
    for (const double d : {-30.0, -20.5, -20.0, -19.5, -12.0, -11.0, -2.0, -0.3, 0.0, 0.1, 1.0, 2.5, 2.6, 3.0, 19.5, 20.0, 21.0, 30.0}) {
      cases_->k3_policy.push_back(-1.5F);
      cases_->k3_reference.push_back(static_cast<float>(-1.5 + d));
    }
    json oracle = json::array();
    for (const auto& c : cases_->advantages) oracle.push_back(c.oracle());
    for (const auto& c : cases_->losses) oracle.push_back(c.oracle());
    for (const auto& c : cases_->low_delta) oracle.push_back(c.oracle());
    for (const auto& [group, list] : cases_->orms)
      for (const auto& c : list) oracle.push_back(c.oracle());
    oracle.push_back({{"kind", "k3"}, {"logps", cases_->k3_policy}, {"ref_logps", cases_->k3_reference}});
    TempDir dir("grpo-oracle");
    write_file_atomic(dir / "cases.json", oracle.dump());
    if (run_oracle({{"grpo", "--cases", (dir / "cases.json").string(), "--out", (dir / "out.json").string()}}, dir.path()))
      cases_->results = json::parse(read_file(dir / "out.json"));
  }
  static void TearDownTestSuite() {
    delete cases_;
    cases_ = nullptr;
  }
  void SetUp() override {
    if (cases_->results.empty()) GTEST_FAIL() << "the oracle did not run";
  }

  // ms-swift's results for each kind of case, in the order SetUpTestSuite wrote them.
  static const json& advantage_result(std::size_t i) { return cases_->results.at(i); }
  static const json& loss_result(std::size_t i) { return advantage_result(cases_->advantages.size() + i); }
  static const json& low_delta_result(std::size_t i) { return loss_result(cases_->losses.size() + i); }
  static const json& k3_result() { return cases_->results.back(); }
  static const json& orm_result(const std::string& group, std::size_t i) {
    std::size_t offset = 0;
    for (const auto& [name, list] : cases_->orms) {
      if (name == group) break;
      offset += list.size();
    }
    return low_delta_result(cases_->low_delta.size() + offset + i);
  }

  static void expect_rewards(const std::string& group) {
    const auto& list = cases_->orms.at(group);
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto& expected = orm_result(group, i);
      if (expected.contains("skipped")) GTEST_SKIP() << expected["skipped"].get<std::string>();
      const auto rewards = list[i].lathe();
      ASSERT_EQ(rewards.size(), expected["rewards"].size()) << group;
      for (std::size_t k = 0; k < rewards.size(); ++k) {
        const auto& input = list[i].inputs[k];
        expect_near(rewards[k], expected["rewards"][k].get<double>(),
                    group + " settings " + std::to_string(i) + ": " + json(input.completion).dump() + " (solution " +
                        json(input.solution).dump() + ", " + std::to_string(input.tokens.value_or(-1)) + " tokens)");
      }
    }
  }

  static OracleCases* cases_;
};
OracleCases* GrpoOracle::cases_ = nullptr;

// Lathe has no public function for the weighted nansum of the functions' rewards (the objective
// does it); group_advantages takes ms-swift's sums, and the training run below checks the rest.
TEST_F(GrpoOracle, AdvantagesEqualComputeAdvantages) {
  for (std::size_t i = 0; i < cases_->advantages.size(); ++i) {
    const auto& c = cases_->advantages[i];
    const auto& expected = advantage_result(i);
    std::vector<double> rewards;
    for (const auto& value : expected["rewards"]) rewards.push_back(value.get<double>());
    const auto label = c.estimator + "/" + c.scale + " groups of " + std::to_string(c.group);
    expect_values(group_advantages(torch::tensor(rewards, torch::kDouble), c.group, c.estimator, c.scale), expected["advantages"], label);
  }
}

TEST_F(GrpoOracle, K3IsMsSwiftsClampedEstimate) {
  const auto kl = k3_kl(torch::tensor(cases_->k3_reference), torch::tensor(cases_->k3_policy));
  expect_values(kl, k3_result()["kl"], "k3 (reference - policy from -30 to 30)");
}

TEST_F(GrpoOracle, LossGradientAndMetricsEqualMsSwifts) {
  double low = 0, high = 0;
  for (std::size_t i = 0; i < cases_->losses.size(); ++i) {
    const auto& expected = loss_result(i);
    expect_loss_equal(cases_->losses[i], expected);
    low += expected["clipping"].value("low_clip_mean", 0.0);
    high += expected["clipping"].value("high_clip_mean", expected["clipping"].value("cispo_clip_ratio", 0.0));
  }
  EXPECT_GT(low, 0) << "no case clipped below: the clip metrics were not put to the test";
  EXPECT_GT(high, 0) << "no case clipped above";
}

TEST_F(GrpoOracle, ClipMetricsWithDeltaBelowTheUpperClipEqualMsSwifts) {
  for (std::size_t i = 0; i < cases_->low_delta.size(); ++i) expect_loss_equal(cases_->low_delta[i], low_delta_result(i));
}

TEST_F(GrpoOracle, FormatEqualsMsSwifts) { expect_rewards("format"); }
TEST_F(GrpoOracle, FormatTakesUnicodeWhitespaceAsMsSwift) { expect_rewards("format_unicode_space"); }
TEST_F(GrpoOracle, ReactFormatEqualsMsSwifts) { expect_rewards("react_format"); }
TEST_F(GrpoOracle, RepetitionEqualsMsSwifts) { expect_rewards("repetition"); }
TEST_F(GrpoOracle, RepetitionSplitsAndLowersUnicodeAsMsSwift) { expect_rewards("repetition_unicode"); }
TEST_F(GrpoOracle, CosineEqualsMsSwifts) { expect_rewards("cosine"); }
TEST_F(GrpoOracle, CosinePastItsMaxLengthEqualsMsSwifts) { expect_rewards("cosine_past_max"); }
TEST_F(GrpoOracle, SoftOverlongEqualsMsSwifts) { expect_rewards("soft_overlong"); }
TEST_F(GrpoOracle, SoftOverlongPastItsMaxLengthEqualsMsSwifts) { expect_rewards("soft_overlong_past_max"); }
TEST_F(GrpoOracle, AccuracyEqualsMsSwiftsMathAccuracy) { expect_rewards("accuracy"); }

// Rewards that vary with any text: its length in bytes modulo 5, and modulo 3 for odd lengths only
// (no reward, NaN, for even ones), so that groups differ and rows miss rewards.
constexpr const char* kRewardPlugin = R"(#include <lathe/plugin.h>
#include <lathe/plugin/orm.h>
#include <cmath>
namespace {
class Modulo : public lathe::OutcomeRewardModel {
 public:
  Modulo(std::size_t modulus, bool odd_only) : modulus_(modulus), odd_only_(odd_only) {}
  std::vector<double> score(const std::vector<lathe::RewardInput>& inputs) override {
    std::vector<double> rewards;
    for (const auto& input : inputs) {
      const auto size = input.completion.size();
      rewards.push_back(odd_only_ && size % 2 == 0 ? std::nan("") : static_cast<double>(size % modulus_));
    }
    return rewards;
  }
 private:
  std::size_t modulus_;
  bool odd_only_;
};
}  // namespace
LATHE_PLUGIN() {
  lathe::orm_registry().add("bytes_mod_5", "", [](const lathe::PluginContext&) { return std::make_shared<Modulo>(5, false); });
  lathe::orm_registry().add("odd_bytes_mod_3", "", [](const lathe::PluginContext&) { return std::make_shared<Modulo>(3, true); });
}
)";

// A run's rewards per function (completions.jsonl) through ms-swift's compute_advantages and
// compute_reward_metrics give the advantages it logged for each completion and its step metrics:
// Lathe's weighted nansum, its reward metrics and their names, end to end.
TEST(GrpoTrainingOracle, LoggedAdvantagesAndRewardMetricsEqualMsSwifts) {
  TempDir dir("grpo-training-oracle");
  write_tiny_model(dir / "model");
  write_file_atomic(dir / "rewards.cpp", kRewardPlugin);
  std::vector<json> rows;
  for (int i = 0; i < 4; ++i)
    rows.push_back({{"messages", json::array({{{"role", "user"}, {"content", "Say something, " + std::to_string(i)}}})}, {"solution", "4"}});
  write_jsonl(dir / "prompts.jsonl", rows);
  // A built-in too, for the class name ms-swift logs it under.
  const std::vector<std::string> names{"bytes_mod_5", "odd_bytes_mod_3", "RepetitionPenalty"};
  const std::vector<double> weights{0.7, 2.0, -0.5};
  const auto result = run_lathe({"rlhf", "--rlhf_type", "grpo", "--model", (dir / "model").string(), "--dataset",
                                 (dir / "prompts.jsonl").string(), "--output_dir", (dir / "run").string(), "--add_version",
                                 "false", "--train_type", "lora", "--lora_rank", "4", "--num_generations", "4",
                                 "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                                 "--max_completion_length", "8", "--logging_steps", "1", "--seed", "5", "--save_strategy",
                                 "no", "--max_steps", "2", "--log_completions", "true", "--external_plugins",
                                 (dir / "rewards.cpp").string(), "--reward_funcs", "bytes_mod_5", "odd_bytes_mod_3",
                                 "repetition", "--reward_weights", "0.7", "2", "-0.5", "--repetition_n_grams", "1"},
                                "", {"LATHE_PLUGIN_CACHE=" + (dir / "plugin-cache").string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto completions = read_jsonl(dir / "run" / "completions.jsonl");
  std::vector<json> logs;
  for (const auto& row : read_jsonl(dir / "run" / "logging.jsonl"))
    if (row.contains("loss")) logs.push_back(row);
  ASSERT_EQ(logs.size(), 2u);
  ASSERT_EQ(completions.size(), 16u);  // 2 steps of 2 prompts x 4 completions
  json cases = json::array();
  for (std::size_t step = 0; step < 2; ++step) {
    json table = json::array();
    for (std::size_t i = 0; i < 8; ++i) {
      json row = json::array();
      for (const auto& name : names) row.push_back(completions[step * 8 + i].at(name));
      table.push_back(row);
    }
    cases.push_back({{"kind", "advantages"}, {"rewards_per_func", table}, {"reward_weights", weights}, {"num_generations", 4},
                     {"advantage_estimator", "grpo"}, {"scale_rewards", "group"}, {"names", names}});
  }
  write_file_atomic(dir / "cases.json", cases.dump());
  ASSERT_TRUE(run_oracle({{"grpo", "--cases", (dir / "cases.json").string(), "--out", (dir / "out.json").string()}}, dir.path()));
  const auto expected = json::parse(read_file(dir / "out.json"));
  bool rewards_vary = false, rewards_missing = false;
  for (std::size_t step = 0; step < 2; ++step) {
    const auto label = "step " + std::to_string(step + 1);
    const auto& e = expected[step];
    for (std::size_t i = 0; i < 8; ++i) {
      expect_near(completions[step * 8 + i]["advantages"].get<double>(), e["advantages"][i].get<double>(), label + " advantage " + std::to_string(i));
      rewards_missing = rewards_missing || completions[step * 8 + i]["odd_bytes_mod_3"].is_null();
    }
    for (const char* key : {"reward", "reward_std", "frac_reward_zero_std"})
      expect_near(logs[step][key].get<double>(), e[key].get<double>(), label + " " + key);
    for (const auto& name : names) {
      const auto mean = "rewards/" + name + "/mean", std = "rewards/" + name + "/std";
      ASSERT_EQ(logs[step].contains(mean), e["per_func_mean"].contains(name)) << label << " " << name << ": logged by one side only";
      if (!e["per_func_mean"].contains(name)) continue;
      expect_near(logs[step][mean].get<double>(), e["per_func_mean"][name].get<double>(), label + " " + mean);
      expect_near(logs[step][std].get<double>(), e["per_func_std"][name].get<double>(), label + " " + std);
    }
    rewards_vary = rewards_vary || e["frac_reward_zero_std"].get<double>() < 1;
  }
  EXPECT_TRUE(rewards_vary) << "every group's rewards were equal, so the advantages were not put to the test";
  EXPECT_TRUE(rewards_missing) << "no completion lacked a reward, so the nansum was not put to the test";
}

}  // namespace
}  // namespace lathe::testing
