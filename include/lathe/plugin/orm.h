#pragma once
// Outcome reward models (`--orm_model name`, docs/plugins.md): one float per completion, judged from
// the completion and its dataset row (the reference answer and any other columns).
//
// Built-ins (their exact rules are at the top of src/plugin/orm.cpp): math, accuracy, format,
// react_format, toolbench, cosine, repetition, soft_overlong.
//
// The reference answer of a row is its "solution" column, else "answer", else "response"
// (reference_answer below); rewards that need one fail naming the columns when none is there.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct RewardInput {
  std::string completion;
  nlohmann::json row = nlohmann::json::object();  // the dataset row: "solution", "response", ...
  // Length of the completion in tokens when the caller knows it; length-shaped rewards (cosine,
  // soft_overlong) use it, and otherwise count whitespace-separated words.
  std::optional<int64_t> completion_tokens;
};

class OutcomeRewardModel {
 public:
  virtual ~OutcomeRewardModel() = default;
  // One reward per input, in order.
  virtual std::vector<double> score(const std::vector<RewardInput>& inputs) = 0;
};

using OrmFactory = std::function<std::shared_ptr<OutcomeRewardModel>(const PluginContext& context)>;
Registry<OrmFactory>& orm_registry();

}  // namespace lathe

LATHE_API_END
