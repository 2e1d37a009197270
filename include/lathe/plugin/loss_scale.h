#pragma once
// Loss-scale plugins (`--loss_scale spec`, docs/plugins.md): which tokens are trained and how
// strongly. A template renders contexts tagged RESPONSE / SUFFIX / OTHER; a strategy re-splits each
// piece and weighs the parts; tokens take the weight of the piece they come from.
//
// A spec is "base+name+name": the base (default | last_round | all) gives each context its first
// weight, then each named part re-splits the response pieces and multiplies their weights.
// Per-message overrides ("loss": true|false, "loss_scale": x on an assistant message) win over all.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/template/template.h"

namespace lathe {

// Where a piece sits in the conversation.
struct PieceInfo {
  bool is_last_round = false;
  std::string query;  // the user message of the piece's round
};

class LossScale {
 public:
  virtual ~LossScale() = default;
  // Re-splits one piece; the weights returned are multiplied by the piece's weight.
  virtual std::vector<WeightedText> split(const WeightedText& piece, const PieceInfo& info) const = 0;
};

// A strategy driven by a JSON config as SWIFT's loss_scale/*.json files:
//   {"Keyword:": [w_keyword, w_text_after]}  or  {"regex": [w]}
// and, for agentflan, {"response": {...}, "query": {"key in the user query": w}}.
std::shared_ptr<LossScale> loss_scale_from_config(const nlohmann::json& config, const std::string& source);

// The bases a spec may start with, each with a one-line description (listed by `lathe plugins`).
struct LossScaleBase {
  std::string name, description;
};
const std::vector<LossScaleBase>& loss_scale_bases();

using LossScaleFactory = std::function<std::shared_ptr<LossScale>(const Arguments& arguments)>;
Registry<LossScaleFactory>& loss_scale_registry();

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
