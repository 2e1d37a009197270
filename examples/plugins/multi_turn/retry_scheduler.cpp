// A multi-turn scheduler registered as "retry_on_wrong": after an answer whose <answer>...</answer>
// (or whole text) differs from the row's solution, the user asks once more, until the answer is
// right or --max_turns answers are given. Like ms-swift's math_tip_trick, it gives the policy a
// second chance within one trajectory; the hint is context, only the answers are trained. Unlike
// the default rule, an answer cut at --max_completion_length is not the end: it is wrong, so it
// gets its retry too.
//
//   lathe rlhf --rlhf_type grpo ... --multi_turn_scheduler retry_on_wrong --max_turns 2 \
//       --external_plugins examples/plugins/multi_turn/retry_scheduler.cpp
#include <lathe/plugin.h>
#include <lathe/plugin/answer_checking.h>
#include <lathe/plugin/multi_turn.h>

#include <string>

namespace {

std::string final_answer(const std::string& text) {
  const auto open = text.rfind("<answer>");
  if (open == std::string::npos) return text;
  const auto close = text.find("</answer>", open);
  return text.substr(open + 8, close == std::string::npos ? std::string::npos : close - open - 8);
}

class RetryOnWrong : public lathe::MultiTurnScheduler {
 public:
  void on_turn_end(lathe::Trajectory& trajectory) override {
    const auto& answer = trajectory.conversation.messages.back().content;
    trajectory.done = lathe::math_answers_equal(final_answer(answer), lathe::reference_answer(trajectory.row));
    trajectory.rollout_infos["retries"] = trajectory.turns - 1;
  }
  bool check_finished(const lathe::Trajectory& trajectory, int64_t max_turns) const override {
    return trajectory.done || (max_turns > 0 && trajectory.turns >= max_turns);
  }
  void step(lathe::Trajectory& trajectory) override {
    trajectory.conversation.messages.push_back({"user", "That is not right. Check your answer and try again.", {}, {}});
  }
};

}  // namespace

LATHE_PLUGIN() {
  lathe::multi_turn_registry().add("retry_on_wrong", "asks again after a wrong answer (example plugin)",
                                   [](const lathe::PluginContext&, std::shared_ptr<const lathe::AgentTemplate>) {
                                     return std::make_shared<RetryOnWrong>();
                                   });
}
