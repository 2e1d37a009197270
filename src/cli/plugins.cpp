// `lathe plugins`: every registered name of every plugin kind, built-in and external.
#include <fmt/format.h>

#include "cli/arguments.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/plugin/callback.h"
#include "lathe/plugin/loss.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/plugin/loss_scale_pipeline.h"
#include "lathe/plugin/metric.h"
#include "lathe/plugin/multi_turn.h"
#include "lathe/plugin/optimizer.h"
#include "lathe/plugin/orm.h"
#include "lathe/plugin/preference_loss.h"
#include "lathe/plugin/prm.h"
#include "lathe/plugin/reward_model.h"
#include "lathe/plugin/tool.h"
#include "lathe/plugin/tuner.h"

namespace lathe::cli {

template <class Factory>
static void list(const Registry<Factory>& registry, const std::string& flag) {
  fmt::print("{} ({}):\n", registry.kind(), flag);
  for (const auto* entry : registry.entries()) {
    fmt::print("  {:<22} {}{}\n", entry->name, entry->description,
               entry->origin == "built-in" ? "" : fmt::format("  [{}]", entry->origin));
  }
  fmt::print("\n");
}

int run_plugins(const Args& args) {
  CLI::App app("List every registered plugin of every kind, with a one-line description.", "plugins");
  Arguments arguments;
  if (int code = parse(app, arguments, args); code >= 0) return code;
  list(agent_template_registry(), "--agent_template");
  list(callback_registry(), "--callbacks");
  list(loss_registry(), "--loss_type");
  fmt::print("loss_scale bases (--loss_scale base, first in base+name):\n");
  for (const auto& base : loss_scale_bases()) fmt::print("  {:<22} {}\n", base.name, base.description);
  fmt::print("\n");
  list(loss_scale_registry(), "--loss_scale base+name");
  list(metric_registry(), "--metric");
  list(optimizer_registry(), "--optimizer");
  list(orm_registry(), "--orm_model");
  list(preference_loss_registry(), "lathe rlhf --rlhf_type dpo --loss_type");
  list(prm_registry(), "--prm_model");
  list(reward_model_registry(), "lathe rlhf --rlhf_type grpo --reward_model DIR --reward_model_plugin");
  list(multi_turn_registry(), "lathe rlhf --rlhf_type grpo --multi_turn_scheduler");
  list(tool_registry(), "the tool_call scheduler's tools, by the name the model calls");
  list(tuner_registry(), "--train_type");
  return 0;
}

}  // namespace lathe::cli
