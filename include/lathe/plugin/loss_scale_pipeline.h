#pragma once
// How --loss_scale is applied: a spec "base+name+name" composed of a base and registered
// strategies, and the strategy driven by a JSON config that the built-ins (and plugins) use.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/template/template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// A strategy driven by a JSON config as SWIFT's loss_scale/*.json files:
//   {"Keyword:": [w_keyword, w_text_after]}  or  {"regex": [w]}
// and, for agentflan, {"response": {...}, "query": {"key in the user query": w}}.
std::shared_ptr<LossScale> loss_scale_from_config(const nlohmann::json& config, const std::string& source);

// The bases a spec may start with, each with a one-line description (listed by `lathe plugins`).
struct LossScaleBase {
  std::string name, description;
};
const std::vector<LossScaleBase>& loss_scale_bases();

// The composed strategy for a spec such as "last_round+hermes+ignore_empty_think".
class LossScalePipeline {
 public:
  LossScalePipeline(const std::string& spec, const Arguments& arguments);
  // Weighs rendered contexts (the output of Template::render).
  std::vector<WeightedText> apply(const std::vector<Context>& contexts, const Conversation& conversation) const;
  const std::string& spec() const { return spec_; }

 private:
  std::string spec_;
  std::string base_;  // default | last_round | all
  std::vector<std::shared_ptr<LossScale>> parts_;
};

}  // namespace lathe

LATHE_API_END
