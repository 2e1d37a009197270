// Multi-turn schedulers (multi_turn.h). The registry and its built-in are at the bottom.
#include "lathe/plugin/multi_turn.h"

#include <fmt/format.h>

#include <map>

#include "lathe/common/format.h"
#include "lathe/plugin/tool.h"

namespace lathe {
namespace {

// Runs the tools an answer calls and hands their results back as the next turn's input.
class ToolCallScheduler : public MultiTurnScheduler {
 public:
  ToolCallScheduler(const Arguments& arguments, std::shared_ptr<const AgentTemplate> agent)
      : arguments_(arguments), agent_(std::move(agent)) {
    if (!agent_) fail("--multi_turn_scheduler tool_call: it parses tool calls with an agent template (--agent_template)");
  }

  void on_turn_end(Trajectory& trajectory) override {
    if (agent_->parse_tool_calls(trajectory.conversation.messages.back().content).empty()) trajectory.done = true;
  }

  void step(Trajectory& trajectory) override {
    for (const auto& call : agent_->parse_tool_calls(trajectory.conversation.messages.back().content)) {
      trajectory.conversation.messages.push_back({"tool_response", run(call), {}, {}});
    }
  }

 private:
  std::string run(const ToolCall& call) {
    if (!tool_registry().contains(call.name)) return fmt::format("error: no tool named {:?}", call.name);
    auto& tool = tools_[call.name];
    if (!tool) tool = tool_registry().create(call.name, arguments_);
    try {
      return tool->call(call.arguments);
    } catch (const std::exception& error) {
      fail("tool '{}' failed on {}: {}", call.name, call.arguments.dump(), error.what());
    }
  }

  const Arguments& arguments_;
  std::shared_ptr<const AgentTemplate> agent_;
  std::map<std::string, std::shared_ptr<Tool>> tools_;
};

}  // namespace

Registry<MultiTurnFactory>& multi_turn_registry() {
  static Registry<MultiTurnFactory> registry = [] {
    Registry<MultiTurnFactory> built_ins("multi-turn scheduler");
    built_ins.add("tool_call", "runs the answer's tool calls (--agent_template) with the tool registry; done without one",
                  [](const PluginContext& context, std::shared_ptr<const AgentTemplate> agent) {
                    return std::make_shared<ToolCallScheduler>(context.arguments, std::move(agent));
                  });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
