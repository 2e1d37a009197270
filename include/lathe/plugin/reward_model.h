#pragma once
// Reward-model plugins (`lathe rlhf --rlhf_type grpo --reward_model DIR --reward_model_plugin name`,
// docs/plugins.md): how a reward model scores GRPO's completions, one float each. A factory gets
// the reward model's folder besides the plugin context.
//
// Built-in `default` (ms-swift's): the folder is a one-label sequence classifier (one that
// `lathe rlhf --rlhf_type rm --train_type full` wrote, or `lathe export --merge_lora true` of a LoRA
// one); each conversation, ending with the completion as its last assistant message, is encoded
// with the reward model's own template and tokenizer as its training pairs were, and its reward is
// the score head's value on the last token.
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/template/template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct RewardModelInput {
  Conversation conversation;                      // ends with the completion (an assistant message)
  nlohmann::json row = nlohmann::json::object();  // the dataset row, as reward functions get it
};

class RewardModelScorer {
 public:
  virtual ~RewardModelScorer() = default;
  // One reward per input, in order (NaN: no reward for that row).
  virtual std::vector<double> score(const std::vector<RewardModelInput>& inputs) = 0;
};

using RewardModelFactory =
    std::function<std::shared_ptr<RewardModelScorer>(const PluginContext& context, const std::filesystem::path& model_dir)>;
Registry<RewardModelFactory>& reward_model_registry();

}  // namespace lathe

LATHE_API_END
