// Loss-scale strategies on fixed conversations: weights exactly as the configs say, composition
// multiplies, per-message overrides win (docs/plugins.md).
#include <gtest/gtest.h>

#include "lathe/common/error.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/plugin/loss_scale_pipeline.h"

namespace lathe {
namespace {

using Pieces = std::vector<std::pair<std::string, double>>;

Context ctx(std::string text, ContextType type, int round = -1) { return Context{std::move(text), type, round, {}, {}}; }

Pieces weigh(const std::string& spec, const std::vector<Context>& contexts, const Conversation& conversation = {}) {
  Arguments arguments;
  LossScalePipeline pipeline(spec, arguments);
  Pieces result;
  for (const auto& piece : pipeline.apply(contexts, conversation)) result.emplace_back(piece.text, piece.weight);
  return result;
}

const std::vector<Context> kTwoRounds{
    ctx("<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n", ContextType::Other),
    ctx("a1", ContextType::Response, 0),
    ctx("<|im_end|>\n", ContextType::Suffix, 0),
    ctx("<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n", ContextType::Other),
    ctx("a2", ContextType::Response, 1),
    ctx("<|im_end|>", ContextType::Suffix, 1)};

TEST(LossScale, DefaultTrainsResponsesAndSuffixes) {
  EXPECT_EQ(weigh("default", kTwoRounds), (Pieces{{kTwoRounds[0].text, 0}, {"a1", 1}, {"<|im_end|>\n", 1},
                                                   {kTwoRounds[3].text, 0}, {"a2", 1}, {"<|im_end|>", 1}}));
}

TEST(LossScale, LastRoundTrainsOnlyTheLastAnswer) {
  EXPECT_EQ(weigh("last_round", kTwoRounds), (Pieces{{kTwoRounds[0].text, 0}, {"a1", 0}, {"<|im_end|>\n", 0},
                                                      {kTwoRounds[3].text, 0}, {"a2", 1}, {"<|im_end|>", 1}}));
}

TEST(LossScale, AllTrainsEverything) {
  for (const auto& [text, weight] : weigh("all", kTwoRounds)) EXPECT_EQ(weight, 1) << text;
}

TEST(LossScale, ReactKeywordsAndTheTextAfterThem) {
  std::vector<Context> contexts{
      ctx("Thought: look it up\nAction: search\nAction Input: {\"q\": 1}\nObservation: found\nFinal Answer: 42",
          ContextType::Response, 0)};
  EXPECT_EQ(weigh("react", contexts), (Pieces{{"Thought:", 1},
                                               {" look it up\n", 1},
                                               {"Action:", 2},
                                               {" search\n", 2},
                                               {"Action Input:", 2},
                                               {" {\"q\": 1}\n", 2},
                                               {"Observation:", 2},
                                               {" found\n", 0},
                                               {"Final Answer:", 1},
                                               {" 42", 1}}));
}

TEST(LossScale, QwenToolKeywords) {
  std::vector<Context> contexts{ctx("✿FUNCTION✿: f\n✿ARGS✿: {}\n✿RESULT✿: r\n✿RETURN✿: done", ContextType::Response, 0)};
  EXPECT_EQ(weigh("qwen", contexts), (Pieces{{"✿FUNCTION✿:", 2}, {" f\n", 2}, {"✿ARGS✿:", 2}, {" {}\n", 2},
                                              {"✿RESULT✿:", 2}, {" r\n", 0}, {"✿RETURN✿:", 1}, {" done", 1}}));
}

TEST(LossScale, AlphaUmiAddsNext) {
  std::vector<Context> contexts{ctx("Next: go", ContextType::Response, 0)};
  EXPECT_EQ(weigh("alpha_umi", contexts), (Pieces{{"Next:", 2}, {" go", 2}}));
}

TEST(LossScale, HermesRegexSpansLines) {
  std::vector<Context> contexts{ctx("ok <tool_call>\n{\"name\": \"f\"}\n</tool_call> end", ContextType::Response, 0)};
  EXPECT_EQ(weigh("hermes", contexts),
            (Pieces{{"ok ", 1}, {"<tool_call>\n{\"name\": \"f\"}\n</tool_call>", 2}, {" end", 1}}));
}

TEST(LossScale, IgnoreEmptyThinkAndThinkPrefix) {
  std::vector<Context> empty_think{ctx("<think>\n\n</think>\n\nanswer", ContextType::Response, 0)};
  EXPECT_EQ(weigh("ignore_empty_think", empty_think), (Pieces{{"<think>\n\n</think>\n\n", 0}, {"answer", 1}}));
  std::vector<Context> prefix{ctx("<think>\nreasoning</think>answer", ContextType::Response, 0)};
  EXPECT_EQ(weigh("ignore_think_prefix", prefix), (Pieces{{"<think>\n", 0}, {"reasoning</think>answer", 1}}));
  std::vector<Context> not_at_start{ctx("x <think></think>", ContextType::Response, 0)};
  EXPECT_EQ(weigh("ignore_empty_think", not_at_start), (Pieces{{"x <think></think>", 1}}));
}

TEST(LossScale, AgentflanQueryKeyWeighsTheWholeResponse) {
  Conversation conversation;
  conversation.messages = {{"user", "What is the tool you want to use?", {}, {}}, {"assistant", "Action: x", {}, {}}};
  std::vector<Context> contexts{ctx("Action: x", ContextType::Response, 0)};
  EXPECT_EQ(weigh("agentflan", contexts, conversation), (Pieces{{"Action: x", 3}}));
  conversation.messages[0].content = "hello";
  EXPECT_EQ(weigh("agentflan", contexts, conversation), (Pieces{{"Action:", 1}, {" x", 3}}));
}

TEST(LossScale, CompositionMultiplies) {
  // hermes doubles the tool call; last_round zeroes the first round whatever hermes says.
  std::vector<Context> contexts{ctx("<tool_call>a</tool_call>", ContextType::Response, 0),
                                ctx("<think>\n</think>\n<tool_call>b</tool_call>", ContextType::Response, 1)};
  EXPECT_EQ(weigh("last_round+hermes+ignore_empty_think", contexts),
            (Pieces{{"<tool_call>a</tool_call>", 0}, {"<think>\n</think>\n", 0}, {"<tool_call>b</tool_call>", 2}}));
  // react then hermes: the keyword weight times the regex weight.
  std::vector<Context> both{ctx("Action: <tool_call>z</tool_call>", ContextType::Response, 0)};
  EXPECT_EQ(weigh("react+hermes", both), (Pieces{{"Action:", 2}, {" ", 2}, {"<tool_call>z</tool_call>", 4}}));
}

TEST(LossScale, PerMessageOverridesWin) {
  auto contexts = kTwoRounds;
  contexts[1].loss = false;
  contexts[2].loss = false;
  contexts[4].loss_scale = 2.5;
  contexts[5].loss_scale = 2.5;
  EXPECT_EQ(weigh("default", contexts), (Pieces{{contexts[0].text, 0}, {"a1", 0}, {"<|im_end|>\n", 0},
                                                 {contexts[3].text, 0}, {"a2", 2.5}, {"<|im_end|>", 2.5}}));
  // loss: true brings back a round that last_round would skip.
  auto included = kTwoRounds;
  included[1].loss = true;
  EXPECT_EQ(weigh("last_round", included)[1], (std::pair<std::string, double>{"a1", 1}));
}

TEST(LossScale, BadSpecsNameWhatIsWrong) {
  Arguments arguments;
  EXPECT_THROW(LossScalePipeline("default+", arguments), Error);
  EXPECT_THROW(LossScalePipeline("react+last_round", arguments), Error);
  try {
    LossScalePipeline("nonsense", arguments);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("hermes"), std::string::npos) << error.what();
  }
  EXPECT_THROW(loss_scale_from_config(nlohmann::json::parse(R"({"Action:": [1, 2, 3]})"), "bad.json"), Error);
}

}  // namespace
}  // namespace lathe
