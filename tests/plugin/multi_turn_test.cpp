// The multi-turn pieces of GRPO: the built-in tools on hand-checked calls, and the tool_call
// scheduler with the hermes agent template: an answer's tool calls become tool messages with the
// tools' results, an answer without one finishes the trajectory.
#include <gtest/gtest.h>

#include "../support/scratch_dir.h"
#include "lathe/common/error.h"
#include "lathe/common/files.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/plugin/multi_turn.h"
#include "lathe/plugin/tool.h"

namespace lathe {
namespace {

using nlohmann::json;

std::string calculate(const std::string& expression) {
  return tool_registry().create("calculator", Arguments{})->call({{"expression", expression}});
}

TEST(Tools, TheCalculatorEvaluatesArithmeticOnly) {
  EXPECT_EQ(calculate("3 * (4 + 5)"), "27");
  EXPECT_EQ(calculate("-2.5 + 10 / 4"), "0");
  EXPECT_EQ(calculate("7 - 2 - 1"), "4") << "left to right";
  EXPECT_EQ(calculate("1/3"), "0.333333333333333");
  for (const char* bad : {"2 +", "(1", "1/0", "system('ls')", ""}) EXPECT_TRUE(calculate(bad).starts_with("error")) << bad;
}

class JsonLookupTool : public testing::ScratchDir {};

TEST_F(JsonLookupTool, ReadsTheFileThatPluginArgsName) {
  write_file_atomic(dir() / "capitals.json", R"({"France": "Paris", "sizes": [1, 2]})");
  Arguments arguments;
  arguments.plugin_args = {{"json_lookup", {{"file", (dir() / "capitals.json").string()}}}};
  auto tool = tool_registry().create("json_lookup", arguments);
  EXPECT_EQ(tool->call({{"key", "France"}}), "Paris");
  EXPECT_EQ(tool->call({{"key", "sizes"}}), "[1,2]");
  EXPECT_EQ(tool->call({{"key", "Spain"}}), "no entry for \"Spain\"");
  EXPECT_THROW(tool_registry().create("json_lookup", Arguments{}), Error) << "no file named";
}

TEST(ToolCallScheduler, RunsTheCalledToolsAndFinishesWithoutACall) {
  Arguments arguments;
  std::shared_ptr<const AgentTemplate> hermes = agent_template_registry().create("hermes", arguments);
  auto scheduler = multi_turn_registry().create("tool_call", arguments, hermes);
  Trajectory trajectory;
  trajectory.conversation.messages.push_back({"user", "What is 2 + 5, and what does frobnicate say?", {}, {}});
  trajectory.conversation.messages.push_back(
      {"assistant", hermes->format_tool_calls({{"calculator", {{"expression", "2 + 5"}}}, {"frobnicate", json::object()}}),
       {}, {}});
  trajectory.turns = 1;
  trajectory.finish_reason = "stop";
  scheduler->on_turn_end(trajectory);
  ASSERT_FALSE(scheduler->check_finished(trajectory, 4));
  scheduler->step(trajectory);
  ASSERT_EQ(trajectory.conversation.messages.size(), 4u);
  EXPECT_EQ(trajectory.conversation.messages[2].role, "tool_response");
  EXPECT_EQ(trajectory.conversation.messages[2].content, "7");
  EXPECT_EQ(trajectory.conversation.messages[3].content, "error: no tool named \"frobnicate\"");

  trajectory.conversation.messages.push_back({"assistant", "It is 7.", {}, {}});
  trajectory.turns = 2;
  scheduler->on_turn_end(trajectory);
  EXPECT_TRUE(scheduler->check_finished(trajectory, 4)) << "no tool call: done";
  // ms-swift's limits: an answer cut at the length limit, or max_turns answers.
  Trajectory cut;
  cut.finish_reason = "length";
  EXPECT_TRUE(scheduler->check_finished(cut, 4));
  Trajectory long_one;
  long_one.turns = 4;
  EXPECT_TRUE(scheduler->check_finished(long_one, 4));
  EXPECT_FALSE(scheduler->check_finished(long_one, 0)) << "0: no limit";
}

}  // namespace
}  // namespace lathe
