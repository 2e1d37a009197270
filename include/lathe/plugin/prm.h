#pragma once
// Process reward models (`--prm_model name`, docs/plugins.md): for each request (a conversation that
// ends with the assistant response to judge) either one reward or one per step of the response.
//
// Built-in `client`: asks an OpenAI-compatible chat endpoint to judge (query, response) and parses
// the last "Reward: x" of its answer (details in src/plugin/prm.cpp).
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/template/template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct PrmInput {
  Conversation conversation;                // ends with the assistant response to judge
  std::optional<std::string> ground_truth;  // the reference answer, when the dataset has one
};

class ProcessRewardModel {
 public:
  virtual ~ProcessRewardModel() = default;
  // One list per input: a single reward for the whole response, or one reward per step.
  virtual std::vector<std::vector<double>> score(const std::vector<PrmInput>& inputs) = 0;
};

using PrmFactory = std::function<std::shared_ptr<ProcessRewardModel>(const PluginContext& context)>;
Registry<PrmFactory>& prm_registry();

}  // namespace lathe

LATHE_API_END
