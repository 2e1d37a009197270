// Every built-in ORM on fixed strings against values worked out by hand.
#include "lathe/plugin/orm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lathe/common/error.h"
#include "lathe/plugin/answer_checking.h"

namespace lathe {
namespace {

using nlohmann::json;

double reward(const std::string& name, const std::string& completion, const json& row = json::object(),
              const Arguments& arguments = Arguments{}, std::optional<int64_t> tokens = std::nullopt) {
  auto model = orm_registry().create(name, arguments);
  RewardInput input{completion, row, tokens};
  auto rewards = model->score({input});
  EXPECT_EQ(rewards.size(), 1u);
  return rewards.at(0);
}

json solution(const std::string& text) { return json{{"solution", text}}; }

TEST(Orm, RegistryListsEveryBuiltInAndRejectsUnknownNames) {
  for (const char* name : {"math", "accuracy", "format", "react_format", "toolbench", "cosine", "repetition",
                           "soft_overlong"}) {
    EXPECT_TRUE(orm_registry().contains(name)) << name;
    EXPECT_EQ(orm_registry().get(name).origin, "built-in");
  }
  try {
    orm_registry().get("nope");
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("unknown orm 'nope'"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("soft_overlong"), std::string::npos) << error.what();
  }
}

TEST(Orm, ScoresEachInputInOrder) {
  auto model = orm_registry().create("math", Arguments{});
  auto rewards = model->score({{"\\boxed{1}", solution("1")}, {"\\boxed{2}", solution("1")}, {"\\boxed{3}", solution("3")}});
  EXPECT_EQ(rewards, (std::vector<double>{1.0, 0.0, 1.0}));
}

TEST(Orm, LastBoxedHonoursNestedBraces) {
  EXPECT_EQ(last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}} end"), "\\frac{1}{2}");
  EXPECT_EQ(last_boxed("\\boxed{x^{2}+\\{y\\}}"), "x^{2}+\\{y\\}");
  EXPECT_EQ(last_boxed("no box"), std::nullopt);
  EXPECT_EQ(last_boxed("cut \\boxed{\\frac{1}{2}"), std::nullopt);
}

TEST(Orm, NormalisesMathAnswers) {
  EXPECT_EQ(normalize_math_answer(" $\\left( 1, 2 \\right)$ "), "(1,2)");
  EXPECT_EQ(normalize_math_answer("\\dfrac12"), "\\frac{1}{2}");
  EXPECT_EQ(normalize_math_answer("\\tfrac{3}4."), "\\frac{3}{4}");
  EXPECT_EQ(normalize_math_answer("\\frac1{\\sqrt{2}}"), "\\frac{1}{\\sqrt{2}}");
  EXPECT_EQ(normalize_math_answer("10\\!000"), "10000");
  EXPECT_EQ(normalize_math_answer("5\\text{ cm}"), "5");
  EXPECT_EQ(normalize_math_answer("\\text{Evelyn}"), "Evelyn");
  EXPECT_EQ(normalize_math_answer("x \\leftarrow y"), "x\\leftarrowy");  // \left only as a whole command
}

TEST(Orm, ComparesMathAnswersAsNumbers) {
  EXPECT_TRUE(math_answers_equal("\\frac{1}{2}", "0.5"));
  EXPECT_TRUE(math_answers_equal("-\\frac{3}{4}", "-0.75"));
  EXPECT_TRUE(math_answers_equal("1/3", "0.333333"));    // |1/3 - 0.333333| = 3.3e-7 <= 1e-6 * 1/3
  EXPECT_FALSE(math_answers_equal("1/3", "0.33333"));    // 3.3e-6 > 3.3e-7
  EXPECT_TRUE(math_answers_equal("1,000", "1000.0"));
  EXPECT_FALSE(math_answers_equal("1,2", "12"));          // a pair, not thousands
  EXPECT_TRUE(math_answers_equal("2", "2.0000000001"));
  EXPECT_FALSE(math_answers_equal("", ""));
}

TEST(Orm, Math) {
  EXPECT_EQ(reward("math", "so \\boxed{\\frac{1}{2}}.", solution("The answer is $\\boxed{\\dfrac12}$")), 1.0);
  EXPECT_EQ(reward("math", "\\boxed{0.5}", solution("\\frac{1}{2}")), 1.0);  // reference without \boxed: whole
  EXPECT_EQ(reward("math", "\\boxed{\\left(1,2\\right)}", json{{"response", "\\boxed{(1, 2)}"}}), 1.0);
  EXPECT_EQ(reward("math", "first \\boxed{3}, finally \\boxed{4}", solution("\\boxed{3}")), 0.0);  // last box counts
  EXPECT_EQ(reward("math", "the answer is 3", solution("3")), 0.0);  // no \boxed in the prediction
  EXPECT_EQ(reward("math", "\\boxed{12\\text{ apples}}", json{{"answer", "12"}}), 1.0);
  EXPECT_THROW(reward("math", "\\boxed{1}", json{{"query", "q"}}), Error);
}

TEST(Orm, Accuracy) {
  EXPECT_EQ(reward("accuracy", "<think>hmm</think><answer> 42 </answer>", solution("42")), 1.0);
  EXPECT_EQ(reward("accuracy", "<answer>\\frac{1}{2}</answer>", solution("<answer>0.5</answer>")), 1.0);
  EXPECT_EQ(reward("accuracy", "<answer>The value is \\boxed{7}</answer>", solution("\\boxed{7}")), 1.0);
  EXPECT_EQ(reward("accuracy", "<answer>41</answer>", solution("42")), 0.0);
  EXPECT_EQ(reward("accuracy", "42", solution("42")), 1.0);  // no tags: the whole completion
  EXPECT_EQ(reward("accuracy", "<answer>1</answer> <answer>2</answer>", solution("1")), 1.0);  // the first, as ms-swift
  EXPECT_EQ(reward("accuracy", "<answer>1</answer> <answer>2</answer>", solution("2")), 0.0);
}

TEST(Orm, Format) {
  EXPECT_EQ(reward("format", "<think>a\nb</think>\n<answer>c\nd</answer>"), 1.0);
  EXPECT_EQ(reward("format", "<think></think><answer></answer>"), 1.0);
  EXPECT_EQ(reward("format", "<think>a</think> <answer>c</answer>\n"), 0.0);  // trailing newline
  EXPECT_EQ(reward("format", " <think>a</think><answer>c</answer>"), 0.0);
  EXPECT_EQ(reward("format", "<think>a</think>x<answer>c</answer>"), 0.0);
  EXPECT_EQ(reward("format", "<answer>c</answer>"), 0.0);
  EXPECT_EQ(reward("format", "<think>a</think><answer>b</answer>c</answer>"), 1.0);  // .*? still spans to the end
}

// ms-swift's ReActFormat: re.match of ^<think>.*?</think>\s*Action:.*?Action Input:.*?$ (DOTALL,
// MULTILINE), so the text must open with the think block and only the first line end matters.
TEST(Orm, ReactFormat) {
  const std::string call = "<think>need weather</think>\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}";
  EXPECT_EQ(reward("react_format", call), 1.0);
  EXPECT_EQ(reward("react_format", call + "\nObservation: sunny\nanything after"), 1.0);
  EXPECT_EQ(reward("react_format", "<think>a\nb</think>Action: f Action Input: {}"), 1.0);  // one line
  EXPECT_EQ(reward("react_format", "Thought: easy\nFinal Answer: 4"), 0.0);  // no think block
  EXPECT_EQ(reward("react_format", "<think>x</think>\nAction Input: {}\n"), 0.0);  // no Action
  EXPECT_EQ(reward("react_format", "<think>x</think>\nAction: f\n"), 0.0);  // no Action Input
  EXPECT_EQ(reward("react_format", "Sure!\n" + call), 0.0);  // text before the think block
  EXPECT_EQ(reward("react_format", "<think>x</think> so\nAction: f\nAction Input: {}"), 0.0);  // text before Action
}

TEST(Orm, Toolbench) {
  const json reference = {{"response", "Thought: t\nAction: search\nAction Input: {\"q\": \"cats\", \"n\": 3}"}};
  EXPECT_EQ(reward("toolbench", "Thought: x\nAction: search\nAction Input: {\"n\": 3, \"q\": \"cats\"}", reference), 1.0);
  EXPECT_EQ(reward("toolbench", "Thought: x\nAction: search\nAction Input: {\"q\": \"cats\"}", reference), 0.0);  // F1 2/3
  EXPECT_EQ(reward("toolbench", "Thought: x\nAction: lookup\nAction Input: {\"q\": \"cats\", \"n\": 3}", reference), 0.0);
  EXPECT_EQ(reward("toolbench", "Thought: x\nAction: search\nAction Input: {\"q\": \"cats\", \"n\": \"3\"}", reference), 0.0);
  EXPECT_EQ(reward("toolbench",
                   "Thought: a\nAction: other\nAction Input: {}\nObservation: o\n"
                   "Thought: b\nAction: search\nAction Input: {\"q\": \"cats\", \"n\": 3}\nObservation: result",
                   reference),
            1.0);  // the last Action counts; the Observation ends its input
  EXPECT_EQ(reward("toolbench", "Thought: done\nFinal Answer: x", reference), 0.0);
  EXPECT_EQ(reward("toolbench", "Thought: x\nAction: ping\nAction Input: now",
                   json{{"response", "Thought: y\nAction: ping\nAction Input: now"}}),
            1.0);  // non-JSON inputs compare as text
}

TEST(Orm, Cosine) {
  Arguments arguments;
  arguments.max_completion_length = 100;
  auto correct = solution("42"), wrong = solution("41");
  const std::string answer = "<answer>42</answer>";
  EXPECT_NEAR(reward("cosine", answer, correct, arguments, 0), 1.0, 1e-12);
  EXPECT_NEAR(reward("cosine", answer, correct, arguments, 50), 0.75, 1e-12);   // 0.5 + 0.5 * (1 + cos(pi/2)) / 2
  EXPECT_NEAR(reward("cosine", answer, correct, arguments, 100), 0.5, 1e-12);
  // Past the max length the cosine rises again, as ms-swift computes it: t = 2.5 L is t = 0.5 L.
  EXPECT_NEAR(reward("cosine", answer, correct, arguments, 250), 0.75, 1e-12);
  EXPECT_NEAR(reward("cosine", answer, wrong, arguments, 0), -0.5, 1e-12);
  EXPECT_NEAR(reward("cosine", answer, wrong, arguments, 25), -0.5 * (1 + std::cos(std::numbers::pi / 4)) / 2, 1e-12);
  EXPECT_NEAR(reward("cosine", answer, wrong, arguments, 100), 0.0, 1e-12);
  // Without a token count: 4 words of 8 -> cos(pi/2) = 0 -> 0.75.
  arguments.cosine_max_len = 8;
  EXPECT_NEAR(reward("cosine", "so it is <answer>42</answer>", correct, arguments), 0.75, 1e-12);
}

TEST(Orm, Repetition) {
  EXPECT_NEAR(reward("repetition", "a b c a b c"), -0.25, 1e-12);  // abc bca cab abc: 3 unique of 4
  EXPECT_NEAR(reward("repetition", "The cat sat the CAT sat"), -0.25, 1e-12);  // lower-cased
  // Python's str.lower().split(): Unicode case and spaces (U+00A0 and U+3000 separate words).
  EXPECT_NEAR(reward("repetition", "Über über Über über sat über"), -0.25, 1e-12);
  EXPECT_NEAR(reward("repetition", "ΣΟΦΙΑ\u00a0σοφια\u3000x ΣΟΦΙΑ σοφια x"), -0.25, 1e-12);
  EXPECT_EQ(reward("repetition", "one two three four"), 0.0);
  EXPECT_EQ(reward("repetition", "too short"), 0.0);
  EXPECT_NEAR(reward("repetition", "x x x x x x"), -0.75, 1e-12);  // 1 unique of 4
  Arguments arguments;
  arguments.repetition_n_grams = 2;
  arguments.repetition_max_penalty = -2.0;
  EXPECT_NEAR(reward("repetition", "a b a b", json::object(), arguments), -2.0 / 3, 1e-12);  // ab ba ab
  arguments.repetition_max_penalty = 1.0;
  EXPECT_THROW(reward("repetition", "a", json::object(), arguments), Error);
}

TEST(Orm, SoftOverlong) {
  Arguments arguments;
  arguments.soft_max_length = 100;
  arguments.soft_cache_length = 20;
  EXPECT_EQ(reward("soft_overlong", "", json::object(), arguments, 80), 0.0);
  EXPECT_NEAR(reward("soft_overlong", "", json::object(), arguments, 85), -0.25, 1e-12);
  EXPECT_NEAR(reward("soft_overlong", "", json::object(), arguments, 100), -1.0, 1e-12);
  EXPECT_NEAR(reward("soft_overlong", "", json::object(), arguments, 140), -3.0, 1e-12);  // ms-swift keeps falling
  arguments.soft_max_length = 4;
  arguments.soft_cache_length = 2;
  EXPECT_NEAR(reward("soft_overlong", "w w w", json::object(), arguments), -0.5, 1e-12);  // 3 words
  arguments.soft_cache_length = 0;
  EXPECT_THROW(reward("soft_overlong", "", json::object(), arguments), Error);
  arguments.soft_cache_length = 4;  // ms-swift asserts the cache is below the max
  EXPECT_THROW(reward("soft_overlong", "", json::object(), arguments), Error);
}

}  // namespace
}  // namespace lathe
