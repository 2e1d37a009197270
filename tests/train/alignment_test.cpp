// lathe rlhf's objectives on a tiny model: the losses against hand-computed numbers,
// the per-sequence log-probabilities (and a reward model's scores) against a plain forward of each
// sequence alone, ln 2 while the policy equals the reference, the LoRA-bypass reference against a
// frozen copy, accumulation against one large batch, and no NaN when a side has nothing to train.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "lathe/plugin/preference_loss.h"
#include "lathe/plugin/tuner.h"
#include "lathe/train/alignment.h"

#include "support/errors.h"
#include "support/tiny_config.h"

namespace lathe {
namespace {

constexpr int64_t kVocab = 61;

void expect_error(const std::function<void()>& action, const std::string& fragment) {
  const auto message = testing::error_of(action);
  EXPECT_NE(message.find(fragment), std::string::npos) << message;
}

CausalLM tiny_model(uint64_t seed = 5) {
  torch::manual_seed(seed);
  CausalLM model(testing::tiny_config({.vocab = kVocab, .hidden = 32, .intermediate = 48, .layers = 2, .heads = 4, .kv_heads = 2}));
  torch::NoGradGuard no_grad;
  for (auto& parameter : model->parameters()) parameter.normal_(0.0, 0.3);
  return model;
}

std::vector<int32_t> tokens(int length, int start) {
  std::vector<int32_t> ids;
  for (int t = 0; t < length; ++t) ids.push_back(static_cast<int32_t>((start + 7 * t * t + 3 * t) % kVocab));
  return ids;
}

// A pair as the encoder lays it out: prompt + chosen, then prompt + rejected, the prompt untrained.
Example pair(const std::vector<int32_t>& prompt, const std::vector<int32_t>& chosen, const std::vector<int32_t>& rejected) {
  Example example;
  for (const auto* answer : {&chosen, &rejected}) {
    example.input_ids.insert(example.input_ids.end(), prompt.begin(), prompt.end());
    example.input_ids.insert(example.input_ids.end(), answer->begin(), answer->end());
    example.labels.insert(example.labels.end(), prompt.size(), kIgnoreIndex);
    example.labels.insert(example.labels.end(), answer->begin(), answer->end());
    example.segment_lengths.push_back(static_cast<int64_t>(prompt.size() + answer->size()));
  }
  return example;
}

std::vector<Example> pairs() {
  return {pair(tokens(4, 1), tokens(5, 2), tokens(3, 9)), pair(tokens(2, 4), tokens(2, 11), tokens(6, 13)),
          pair(tokens(6, 8), tokens(4, 21), tokens(4, 22)), pair(tokens(3, 30), tokens(7, 31), tokens(2, 17))};
}

std::vector<const Example*> pointers(const std::vector<Example>& examples, std::size_t begin = 0, std::size_t end = SIZE_MAX) {
  std::vector<const Example*> result;
  for (std::size_t i = begin; i < std::min(end, examples.size()); ++i) result.push_back(&examples[i]);
  return result;
}

// The summed log-probability of a sequence's trained tokens from a forward of that sequence alone
// and a full log-softmax: independent of score_sequences' packing and chunked cross-entropy.
double plain_logp(CausalLM& model, std::span<const int32_t> ids, std::span<const int32_t> labels) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> wide(ids.begin(), ids.end());
  const auto hidden = model->forward({torch::tensor(wide).unsqueeze(0), {}, {}, nullptr, {}});
  const auto logps = torch::log_softmax(model->logits(hidden).squeeze(0).to(torch::kDouble), -1);
  double sum = 0;
  for (std::size_t t = 0; t + 1 < labels.size(); ++t) {
    if (labels[t + 1] != kIgnoreIndex) sum += logps[static_cast<int64_t>(t)][labels[t + 1]].item<double>();
  }
  return sum;
}

struct PlainPair {
  double chosen, rejected;
};
PlainPair plain_pair(CausalLM& model, const Example& example) {
  const auto split = static_cast<std::size_t>(example.segment_lengths[0]);
  const std::span<const int32_t> ids(example.input_ids), labels(example.labels);
  return {plain_logp(model, ids.first(split), labels.first(split)), plain_logp(model, ids.subspan(split), labels.subspan(split))};
}

PreferenceLogps logps_of(double policy_chosen, double policy_rejected, double reference_chosen, double reference_rejected) {
  const auto one = [](double value) { return torch::tensor({value}, torch::kFloat32); };
  return {one(policy_chosen), one(policy_rejected), one(reference_chosen), one(reference_rejected), one(0.0)};
}

double preference_loss(const std::string& name, const PreferenceLogps& logps, double beta = 0.1, double smoothing = 0) {
  Arguments arguments;
  arguments.beta = beta;
  arguments.label_smoothing = smoothing;
  return preference_loss_registry().create(name, arguments)(logps).item<double>();
}

TEST(PreferenceLoss, MatchesTheHandComputedNumbers) {
  // Hand-computed: beta 0.1, policy (-10, -12), reference (-11, -11), so z = 2.
  const auto logps = logps_of(-10, -12, -11, -11);
  EXPECT_NEAR(preference_loss("sigmoid", logps), 0.598139, 1e-6);
  EXPECT_NEAR(preference_loss("sigmoid", logps, 0.1, 0.1), 0.618139, 1e-6);
  EXPECT_NEAR(preference_loss("robust", logps, 0.1, 0.1), 0.573139, 1e-6);
  EXPECT_NEAR(preference_loss("hinge", logps), 0.8, 1e-6);
  EXPECT_NEAR(preference_loss("ipo", logps), 9.0, 1e-5);
}

TEST(PreferenceLoss, IsLn2WhenThePolicyIsTheReference) {
  for (const double chosen : {-3.0, -40.0}) {
    EXPECT_NEAR(preference_loss("sigmoid", logps_of(chosen, -7, chosen, -7)), std::log(2.0), 1e-6);
  }
}

TEST(PreferenceLoss, AnUnknownNameListsTheKnownOnes) {
  Arguments arguments;
  expect_error([&] { preference_loss_registry().create("sigmoidd", arguments); }, "sigmoid");
}

TEST(AlignmentFormulas, MatchTheHandComputedNumbers) {
  const auto one = [](double value) { return torch::tensor({value}, torch::kFloat32); };
  // SimPO, beta 2, gamma 1, mean log-probabilities -1.0 / -1.5: 2 * 0.5 - 1 = 0.
  EXPECT_NEAR(cpo_losses("simpo", one(-1.0), one(-1.5), 2.0, 0, 1.0).item<double>(), std::log(2.0), 1e-6);
  // ORPO, means -0.5 / -1.0: log odds 0.974077, log sigma -0.320300 (times lambda 0.1: 0.032030).
  const auto odds = orpo_odds_ratio(one(-0.5), one(-1.0));
  EXPECT_NEAR(odds.log_odds.item<double>(), 0.974077, 1e-6);
  EXPECT_NEAR(-0.1 * odds.log_sigmoid.item<double>(), 0.032030, 1e-6);
  // KTO, beta 0.1, KL 0.2, ratios +0.5 (desirable) and -0.5 (undesirable).
  const auto kto = kto_losses("kto", one(0.5), one(-0.5), torch::tensor(0.2), 0.1);
  EXPECT_NEAR(kto.desirable.item<double>(), 0.492500, 1e-6);
  EXPECT_NEAR(kto.undesirable.item<double>(), 0.482507, 1e-6);
  EXPECT_NEAR(kto_kl(torch::tensor({1.0, 2.0}), torch::tensor({1.5, 2.5})).item<double>(), 0.0, 0);  // clamped at 0
  // RM, rewards 1.5 / 0.5: -log sigma(1) = 0.313262; with margin 0.5, -log sigma(0.5) = 0.474077.
  EXPECT_NEAR(reward_model_losses(one(1.5), one(0.5), one(0.0)).item<double>(), 0.313262, 1e-6);
  EXPECT_NEAR(reward_model_losses(one(1.5), one(0.5), one(0.5)).item<double>(), 0.474077, 1e-6);
}

Arguments alignment_arguments(const std::string& type) {
  Arguments arguments;
  arguments.rlhf_type = type;
  arguments.alignment = true;
  return arguments;
}

AlignmentReference frozen(CausalLM model) {
  for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
  return {AlignmentReference::Kind::frozen_model, model};
}

TEST(ScoreSequences, MatchesAPlainForwardOfEachSequence) {
  auto model = tiny_model();
  const auto data = pairs();
  std::vector<TokenSequence> sequences;
  std::vector<double> expected;
  for (const auto& example : data) {
    const auto split = static_cast<std::size_t>(example.segment_lengths[0]);
    sequences.push_back({std::span<const int32_t>(example.input_ids).first(split), std::span<const int32_t>(example.labels).first(split)});
    expected.push_back(plain_pair(model, example).chosen);
  }
  const auto scores = score_sequences(model, sequences);
  for (std::size_t i = 0; i < data.size(); ++i) EXPECT_NEAR(scores.logps[static_cast<int64_t>(i)].item<double>(), expected[i], 2e-4) << i;
}

TEST(DpoObjective, LossAndRewardsFollowFromEachSequencesLogProbabilities) {
  auto policy = tiny_model(5), reference_model = tiny_model(6);
  const auto data = pairs();
  auto objective = make_alignment_objective(alignment_arguments("dpo"), frozen(reference_model));
  MetricTotals metrics;
  const auto loss = objective->loss(policy, pointers(data), static_cast<int64_t>(data.size()), metrics);
  double expected_loss = 0, expected_chosen_reward = 0, expected_accuracy = 0;
  for (const auto& example : data) {
    const auto p = plain_pair(policy, example), r = plain_pair(reference_model, example);
    const double z = (p.chosen - p.rejected) - (r.chosen - r.rejected);
    expected_loss += std::log1p(std::exp(-0.1 * z)) / static_cast<double>(data.size());
    expected_chosen_reward += 0.1 * (p.chosen - r.chosen) / static_cast<double>(data.size());
    expected_accuracy += (p.chosen - r.chosen > p.rejected - r.rejected ? 1.0 : 0.0) / static_cast<double>(data.size());
  }
  EXPECT_NEAR(loss.item<double>(), expected_loss, 1e-4);
  const auto means = metrics.means();
  EXPECT_NEAR(means.at("rewards/chosen"), expected_chosen_reward, 1e-4);
  EXPECT_NEAR(means.at("rewards/accuracies"), expected_accuracy, 1e-9);
  for (const char* key : {"rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"}) {
    EXPECT_TRUE(means.contains(key)) << key;
  }
  EXPECT_FALSE(means.contains("nll_loss"));  // only with rpo_alpha or the sft loss, as in ms-swift
}

// LoRA as ms-swift prepares it (B = 0): the policy starts as the base.
Arguments lora_arguments() {
  auto arguments = alignment_arguments("dpo");
  arguments.train_type = "lora";
  arguments.lora_rank = 4;
  arguments.lora_dropout = 0;
  return arguments;
}

TEST(DpoObjective, IsLn2AtTheFirstStepOfALoraRun) {
  auto model = tiny_model();
  const auto arguments = lora_arguments();
  tuner_registry().create("lora", arguments)->prepare_model(arguments, model);
  const auto data = pairs();
  auto objective = make_alignment_objective(arguments, {AlignmentReference::Kind::adapters_off, nullptr});
  MetricTotals metrics;
  EXPECT_NEAR(objective->loss(model, pointers(data), 4, metrics).item<double>(), std::log(2.0), 1e-6);
  EXPECT_NEAR(metrics.means().at("rewards/margins"), 0.0, 1e-6);
}

std::vector<torch::Tensor> take_gradients(CausalLM& model) {
  std::vector<torch::Tensor> grads;
  for (auto& parameter : model->parameters()) {
    if (!parameter.requires_grad()) continue;
    grads.push_back(parameter.grad().defined() ? parameter.grad().clone() : torch::zeros_like(parameter));
    if (parameter.grad().defined()) parameter.grad().zero_();
  }
  return grads;
}

void expect_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_LT((a[i] - b[i]).abs().max().item<double>(), tolerance) << "parameter " << i;
}

// The adapters moved off zero, as after some training, so that the policy differs from its base.
void train_adapters_a_little(CausalLM& model) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (auto& parameter : model->parameters()) {
    if (parameter.requires_grad()) parameter.add_(torch::randn_like(parameter) * 0.2);
  }
}

TEST(DpoObjective, TheLoraBypassReferenceEqualsAFrozenCopy) {
  for (const std::string type : {"dpo", "kto"}) {
    auto arguments = lora_arguments();
    arguments.rlhf_type = type;
    auto model = tiny_model();
    tuner_registry().create("lora", arguments)->prepare_model(arguments, model);
    train_adapters_a_little(model);
    auto data = pairs();
    if (type == "kto") {  // each pair's two sides serve as a completion and its KL sequence
      for (auto& example : data) example.desirable = true;
      data[1].desirable = false;
    }
    MetricTotals metrics;
    auto bypass = make_alignment_objective(arguments, {AlignmentReference::Kind::adapters_off, nullptr});
    const auto bypass_loss = bypass->loss(model, pointers(data), 4, metrics);
    bypass_loss.backward();
    const auto bypass_grads = take_gradients(model);
    auto copy = make_alignment_objective(arguments, frozen(tiny_model()));
    const auto copy_loss = copy->loss(model, pointers(data), 4, metrics);
    copy_loss.backward();
    EXPECT_NEAR(bypass_loss.item<double>(), copy_loss.item<double>(), 1e-6) << type;
    EXPECT_GT(std::abs(bypass_loss.item<double>() - std::log(2.0)), 1e-4) << type << ": the adapters should matter";
    expect_close(bypass_grads, take_gradients(model), 1e-6);
  }
}

// The pairwise terms are sums over pairs divided by the step's pairs. (The NLL that cpo and orpo
// add is, as in ms-swift, a token mean within each micro-batch, so it is left out here.)
// The four pairs as one micro-batch, then as two of two: the same loss and gradients.
void expect_accumulation_equals_one_batch(TrainingObjective& objective, CausalLM& model, double loss_tolerance,
                                          const std::string& what) {
  const auto data = pairs();
  MetricTotals metrics;
  const auto big = objective.loss(model, pointers(data), 4, metrics);
  big.backward();
  const auto big_grads = take_gradients(model);
  double accumulated = 0;
  for (std::size_t begin : {0, 2}) {
    const auto micro = objective.loss(model, pointers(data, begin, begin + 2), 4, metrics);
    micro.backward();
    accumulated += micro.item<double>();
  }
  EXPECT_NEAR(big.item<double>(), accumulated, loss_tolerance) << what;
  expect_close(big_grads, take_gradients(model), 1e-5);
}

TEST(AlignmentObjectives, AccumulationEqualsOneLargeBatch) {
  for (const std::string type : {"dpo", "cpo", "simpo"}) {
    auto model = tiny_model();
    auto arguments = alignment_arguments(type);
    arguments.cpo_alpha = 0;
    auto objective = make_alignment_objective(arguments, type == "dpo" ? frozen(tiny_model(9)) : AlignmentReference{});
    expect_accumulation_equals_one_batch(*objective, model, 1e-5, type);
  }
}

TEST(AlignmentObjectives, ASideWithNothingToTrainGivesNoNaN) {
  auto data = pairs();
  for (auto& label : data[0].labels) label = kIgnoreIndex;  // neither side of the first pair trains
  for (const std::string type : {"dpo", "cpo", "simpo", "orpo"}) {
    auto arguments = alignment_arguments(type);
    if (type == "dpo") arguments.loss_type = {"ipo"};  // means over token counts of 0
    auto model = tiny_model();
    auto objective = make_alignment_objective(arguments, type == "dpo" ? frozen(tiny_model(9)) : AlignmentReference{});
    MetricTotals metrics;
    const auto loss = objective->loss(model, pointers(data), 4, metrics);
    loss.backward();
    EXPECT_TRUE(std::isfinite(loss.item<double>())) << type;
    for (const auto& grad : take_gradients(model)) EXPECT_TRUE(torch::isfinite(grad).all().item<bool>()) << type;
    for (const auto& [key, value] : metrics.means()) EXPECT_TRUE(std::isfinite(value)) << type << " " << key;
  }
}

TEST(DpoObjective, AMixIsTheWeightedSumOfItsLosses) {
  auto model = tiny_model();
  const auto data = pairs();
  const auto reference = frozen(tiny_model(9));
  const auto loss_of = [&](std::vector<std::string> names, std::vector<double> weights) {
    auto arguments = alignment_arguments("dpo");
    arguments.loss_type = std::move(names);
    arguments.loss_weights = std::move(weights);
    MetricTotals metrics;
    return make_alignment_objective(arguments, reference)->loss(model, pointers(data), 4, metrics).item<double>();
  };
  const double sigmoid = loss_of({"sigmoid"}, {}), hinge = loss_of({"hinge"}, {}), sft = loss_of({"sft"}, {});
  EXPECT_NEAR(loss_of({"sigmoid", "hinge", "sft"}, {0.8, 0.2, 1.0}), 0.8 * sigmoid + 0.2 * hinge + sft, 1e-5);
  auto arguments = alignment_arguments("dpo");
  arguments.loss_type = {"sigmoid", "hinge"};
  arguments.loss_weights = {1.0};
  expect_error([&] { make_alignment_objective(arguments, reference); }, "--loss_weights");
}

TEST(AlignmentObjectives, RefuseSettingsOfAnotherType) {
  auto arguments = alignment_arguments("orpo");
  arguments.ref_model = "/some/folder";
  expect_error([&] { make_alignment_objective(arguments, {}); }, "--ref_model");
  arguments = alignment_arguments("cpo");
  arguments.loss_type = {"bco_pair"};
  expect_error([&] { make_alignment_objective(arguments, {}); }, "--loss_type bco_pair");
  arguments = alignment_arguments("kto");
  arguments.loss_type = {"sigmoid"};
  expect_error([&] { make_alignment_objective(arguments, {}); }, "kto takes kto or apo_zero_unpaired");
  arguments = alignment_arguments("rm");
  arguments.loss_type = {"sigmoid"};
  expect_error([&] { make_alignment_objective(arguments, {}); }, "rm has one loss");
  arguments = alignment_arguments("rm");
  arguments.ref_model = "/some/folder";
  expect_error([&] { make_alignment_objective(arguments, {}); }, "--ref_model");
}

// A one-label classifier on the tiny model's body.
CausalLM tiny_reward_model(uint64_t seed = 5) {
  torch::manual_seed(seed);
  auto config = testing::tiny_config({.vocab = kVocab, .hidden = 32, .intermediate = 48, .layers = 2, .heads = 4, .kv_heads = 2});
  config.num_labels = 1;
  CausalLM model(config);
  torch::NoGradGuard no_grad;
  for (auto& parameter : model->parameters()) parameter.normal_(0.0, 0.3);
  return model;
}

// The score head on the last hidden state of a forward of the sequence alone.
double plain_reward(CausalLM& model, std::span<const int32_t> ids) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> wide(ids.begin(), ids.end());
  const auto hidden = model->forward({torch::tensor(wide).unsqueeze(0), {}, {}, nullptr, {}});
  return torch::dot(hidden[0][-1].to(torch::kDouble), model->output_weight()[0].to(torch::kDouble)).item<double>();
}

TEST(RewardModel, ScoresEachSequenceByItsLastToken) {
  auto model = tiny_reward_model();
  EXPECT_EQ(model->output_weight().sizes(), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(model->named_parameters().find("lm_head.weight"), nullptr);
  const std::vector<std::vector<int32_t>> sequences{tokens(5, 1), tokens(1, 3), tokens(9, 7)};
  std::vector<TokenSequence> views;
  for (const auto& ids : sequences) views.push_back({ids, ids});
  const auto rewards = sequence_rewards(model, views);
  ASSERT_EQ(rewards.sizes(), (std::vector<int64_t>{3}));
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    EXPECT_NEAR(rewards[static_cast<int64_t>(s)].item<double>(), plain_reward(model, sequences[s]), 1e-5) << s;
  }
  auto causal = tiny_model();
  expect_error([&] { sequence_rewards(causal, views); }, "one-label sequence classifier");
}

// loss = mean over pairs of -log sigma(r_c - r_r - margin) + coefficient * mean (r_c + r_r)^2, each
// reward from a plain forward, with metrics as ms-swift names them.
TEST(RewardModel, LossAndMetricsFollowFromThePlainRewards) {
  auto model = tiny_reward_model();
  auto data = pairs();
  const std::vector<double> margins{0.0, 0.5, -0.25, 1.0};
  for (std::size_t i = 0; i < data.size(); ++i) data[i].margin = margins[i];
  auto arguments = alignment_arguments("rm");
  arguments.center_rewards_coefficient = 0.01;
  auto objective = make_alignment_objective(arguments, {});
  MetricTotals metrics;
  const auto loss = objective->loss(model, pointers(data), 4, metrics);
  double expected = 0, chosen_sum = 0, margin_sum = 0, centring = 0, correct = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const auto split = static_cast<std::size_t>(data[i].segment_lengths[0]);
    const std::span<const int32_t> ids(data[i].input_ids);
    const double chosen = plain_reward(model, ids.first(split)), rejected = plain_reward(model, ids.subspan(split));
    expected += std::log1p(std::exp(-(chosen - rejected - margins[i]))) / 4;
    centring += 0.01 * (chosen + rejected) * (chosen + rejected) / 4;
    chosen_sum += chosen, margin_sum += chosen - rejected, correct += chosen > rejected;
  }
  EXPECT_NEAR(loss.item<double>(), expected + centring, 1e-5);
  const auto means = metrics.means();
  EXPECT_NEAR(means.at("rewards/chosen"), chosen_sum / 4, 1e-5);
  EXPECT_NEAR(means.at("rewards/margins"), margin_sum / 4, 1e-5);
  EXPECT_NEAR(means.at("rewards/accuracies"), correct / 4, 1e-9);
  EXPECT_NEAR(means.at("center_rewards_loss"), centring, 1e-6);
  // Every parameter that shapes a reward gets a gradient, the score head included.
  loss.backward();
  EXPECT_GT(model->output_weight().grad().abs().sum().item<double>(), 0.0);
}

TEST(RewardModel, AccumulationEqualsOneLargeBatch) {
  auto model = tiny_reward_model();
  auto arguments = alignment_arguments("rm");
  arguments.center_rewards_coefficient = 0.01;
  expect_accumulation_equals_one_batch(*make_alignment_objective(arguments, {}), model, 1e-6, "rm");
}

TEST(KtoPairs, EachRowTakesThePreviousRowsAnswerWithinItsChunk) {
  std::vector<Example> examples;
  for (int i = 0; i < 5; ++i) {
    Example example;
    example.input_ids = {100 + i, 200 + i, 300 + i};  // prompt 100+i, answer 200+i 300+i
    example.labels = {kIgnoreIndex, 200 + i, 300 + i};
    examples.push_back(example);
  }
  attach_kl_completions(examples, 2);
  // Chunks {0, 1}, {2, 3}, {4}: 0 takes 1's answer, 1 takes 0's; 4 alone takes its own.
  EXPECT_EQ(examples[0].input_ids, (std::vector<int32_t>{100, 200, 300, 100, 201, 301}));
  EXPECT_EQ(examples[1].input_ids, (std::vector<int32_t>{101, 201, 301, 101, 200, 300}));
  EXPECT_EQ(examples[3].labels, (std::vector<int32_t>{kIgnoreIndex, 203, 303, kIgnoreIndex, 202, 302}));
  EXPECT_EQ(examples[4].segment_lengths, (std::vector<int64_t>{3, 3}));
  expect_error([&] { attach_kl_completions(examples, 1); }, "at least 2 rows");
}

}  // namespace
}  // namespace lathe
