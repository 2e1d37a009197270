#pragma once
// Multi-turn schedulers (`lathe rlhf --rlhf_type grpo --multi_turn_scheduler name --max_turns N`,
// docs/plugins.md), ms-swift v4's hooks: a GRPO rollout becomes a trajectory of turns. Each turn the
// policy answers the conversation so far; the scheduler sees the answer (on_turn_end), says whether
// the trajectory is finished (check_finished), and otherwise adds what the next turn answers
// (step: a tool's result, a user's hint). Only the policy's own turns are trained.
//
// Built-in `tool_call`: the answer's tool calls are parsed with the agent template
// (--agent_template), each is run by the tool of that name from the tool registry (lathe/plugin/
// tool.h; an unknown name gets an error message as its result), and the results are appended as
// tool messages; a turn without a tool call finishes the trajectory.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/template/agent_template.h"
#include "lathe/template/template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct Trajectory {
  Conversation conversation;  // the prompt, then each turn's answer and what the scheduler added
  nlohmann::json row;         // the dataset row (solution, ...)
  int64_t turns = 0;          // answers generated so far
  std::string finish_reason;  // of the last answer: "stop" or "length"
  bool done = false;          // set by on_turn_end to finish now
  nlohmann::json rollout_infos = nlohmann::json::object();  // handed to the reward functions
};

class MultiTurnScheduler {
 public:
  virtual ~MultiTurnScheduler() = default;
  // Before the first turn, with every trajectory of the batch.
  virtual void on_trajectory_start(std::vector<Trajectory>& /*trajectories*/) {}
  // After each answer (already appended as an assistant message).
  virtual void on_turn_end(Trajectory& /*trajectory*/) {}
  // ms-swift's rule: finished when the answer hit the length limit or max_turns answers are given
  // (0: no limit), or on_turn_end said so.
  virtual bool check_finished(const Trajectory& trajectory, int64_t max_turns) const {
    return trajectory.done || trajectory.finish_reason == "length" || (max_turns > 0 && trajectory.turns >= max_turns);
  }
  // Adds the messages the next turn answers to the conversation.
  virtual void step(Trajectory& trajectory) = 0;
};

// The agent template is the run's (--agent_template), for schedulers that parse tool calls.
using MultiTurnFactory =
    std::function<std::shared_ptr<MultiTurnScheduler>(const PluginContext& context, std::shared_ptr<const AgentTemplate> agent)>;
Registry<MultiTurnFactory>& multi_turn_registry();

}  // namespace lathe

LATHE_API_END
