// Metric plugins against values worked out by hand (the arithmetic is in the comments).
#include <gtest/gtest.h>

#include <cmath>

#include "lathe/common/error.h"
#include "lathe/plugin/metric.h"
#include "lathe/plugin/nlg.h"

namespace lathe {
namespace {

using Tokens = std::vector<std::string>;

TEST(NlgTokens, WhitespaceWordsAndOneTokenPerCjkCharacter) {
  EXPECT_EQ(nlg_tokens("  the cat\tsat\n"), (Tokens{"the", "cat", "sat"}));
  EXPECT_EQ(nlg_tokens("我爱NLP和AI!"), (Tokens{"我", "爱", "NLP", "和", "AI!"}));
  EXPECT_EQ(nlg_tokens("hello 世界。"), (Tokens{"hello", "世", "界", "。"}));
  EXPECT_TRUE(nlg_tokens(" \n").empty());
}

TEST(NlgScores, EnglishPair) {
  // hyp: the cat sat on the mat / ref: the cat is on the mat (6 tokens each).
  const auto hyp = nlg_tokens("the cat sat on the mat"), ref = nlg_tokens("the cat is on the mat");
  // unigrams: the x2, cat, on, mat match -> 5; F1 = 2*5/(6+6).
  EXPECT_NEAR(rouge_n(hyp, ref, 1), 10.0 / 12.0, 1e-12);
  // bigrams (5 each): "the cat", "on the", "the mat" match -> 3; F1 = 2*3/(5+5).
  EXPECT_NEAR(rouge_n(hyp, ref, 2), 0.6, 1e-12);
  // LCS "the cat on the mat" = 5; F1 = 2*5/(6+6).
  EXPECT_NEAR(rouge_l(hyp, ref), 10.0 / 12.0, 1e-12);
  // p1 = 5/6, p2 = 3/5, p3 = 1/4 ("on the mat"), p4 = 0/3 -> smoothed 1/(2^1 * 3) = 1/6.
  // Equal lengths: brevity penalty 1. BLEU = (5/6 * 3/5 * 1/4 * 1/6)^(1/4) = (1/48)^(1/4).
  EXPECT_NEAR(sentence_bleu4(hyp, ref), std::pow(1.0 / 48.0, 0.25), 1e-12);
  EXPECT_NEAR(std::pow(1.0 / 48.0, 0.25), 0.379918, 1e-6);
}

TEST(NlgScores, ChinesePair) {
  // 我 爱 北 京 / 我 爱 上 海.
  const auto hyp = nlg_tokens("我爱北京"), ref = nlg_tokens("我爱上海");
  EXPECT_NEAR(rouge_n(hyp, ref, 1), 2.0 * 2 / 8, 1e-12);  // 我, 爱
  EXPECT_NEAR(rouge_n(hyp, ref, 2), 2.0 * 1 / 6, 1e-12);  // 我爱 of 3 bigrams each
  EXPECT_NEAR(rouge_l(hyp, ref), 2.0 * 2 / 8, 1e-12);     // LCS 我爱
  // p1 = 2/4, p2 = 1/3, p3 = 0/2 -> 1/(2^1*2) = 1/4, p4 = 0/1 -> 1/(2^2*1) = 1/4; product 1/96.
  EXPECT_NEAR(sentence_bleu4(hyp, ref), std::pow(1.0 / 96.0, 0.25), 1e-12);
}

TEST(NlgScores, ShortHypothesisPaysTheBrevityPenalty) {
  const auto hyp = nlg_tokens("the cat"), ref = nlg_tokens("the cat sat on");
  EXPECT_NEAR(rouge_n(hyp, ref, 1), 2.0 * 2 / 6, 1e-12);
  EXPECT_NEAR(rouge_n(hyp, ref, 2), 2.0 * 1 / 4, 1e-12);
  // p1 = 1, p2 = 1, p3 = 0/max(1,0) -> 1/2, p4 -> 1/4; BP = exp(1 - 4/2) = e^-1.
  EXPECT_NEAR(sentence_bleu4(hyp, ref), std::exp(-1.0) * std::pow(1.0 / 8.0, 0.25), 1e-12);
}

TEST(NlgScores, NoOverlapIsZero) {
  const auto hyp = nlg_tokens("foo bar"), ref = nlg_tokens("baz qux");
  EXPECT_EQ(rouge_n(hyp, ref, 1), 0.0);
  EXPECT_EQ(rouge_n(hyp, ref, 2), 0.0);
  EXPECT_EQ(rouge_l(hyp, ref), 0.0);
  EXPECT_EQ(sentence_bleu4(hyp, ref), 0.0);
  EXPECT_EQ(sentence_bleu4({}, ref), 0.0);
}

TEST(NlgMetric, MeansTimesHundred) {
  auto metric = metric_registry().create("nlg", Arguments{});
  EXPECT_TRUE(metric->needs_generation());
  EvalPrediction prediction;
  prediction.generated = {"我爱北京", "foo bar"};
  prediction.references = {"我爱上海", "baz qux"};
  auto scores = metric->compute(prediction);
  EXPECT_NEAR(scores.at("rouge-1"), (0.5 + 0) / 2 * 100, 1e-9);
  EXPECT_NEAR(scores.at("rouge-2"), (1.0 / 3 + 0) / 2 * 100, 1e-9);
  EXPECT_NEAR(scores.at("rouge-l"), (0.5 + 0) / 2 * 100, 1e-9);
  EXPECT_NEAR(scores.at("bleu-4"), std::pow(1.0 / 96.0, 0.25) / 2 * 100, 1e-9);
}

EvalPrediction two_rows() {
  // Logits of 2 rows x 4 positions x 5 classes whose argmax is given below.
  auto predicted = torch::tensor({{1, 2, 3, 0}, {4, 4, 1, 0}});
  auto logits = torch::nn::functional::one_hot(predicted, 5).to(torch::kFloat);
  // Shifted: prediction t vs label t+1.
  auto labels = torch::tensor({{-100, 1, 2, 3}, {-100, -100, 4, 7}});
  // row 0: predictions[:-1] = 1,2,3 vs labels[1:] = 1,2,3 -> 3 of 3 (row correct).
  // row 1: predictions[:-1] = 4,4,1 vs labels[1:] = -100,4,7 -> 1 of 2 (row wrong).
  auto metric = metric_registry().create("acc", Arguments{});
  EvalPrediction prediction;
  prediction.predictions.push_back(metric->preprocess_logits(logits, labels));
  prediction.labels.push_back(labels);
  return prediction;
}

TEST(AccMetric, TokenAccuracyIgnoresMaskedLabels) {
  auto scores = metric_registry().create("acc", Arguments{})->compute(two_rows());
  EXPECT_DOUBLE_EQ(scores.at("token_acc"), 4.0 / 5.0);
}

TEST(AccMetric, SeqAccuracyNeedsEveryLabelToken) {
  Arguments arguments;
  arguments.acc_strategy = "seq";
  auto scores = metric_registry().create("acc", arguments)->compute(two_rows());
  EXPECT_DOUBLE_EQ(scores.at("seq_acc"), 0.5);
  arguments.acc_strategy = "row";
  EXPECT_THROW(metric_registry().create("acc", arguments), Error);
}

}  // namespace
}  // namespace lathe
