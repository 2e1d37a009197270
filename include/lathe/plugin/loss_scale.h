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
#include "lathe/common/export.h"

LATHE_API_BEGIN

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

using LossScaleFactory = std::function<std::shared_ptr<LossScale>(const PluginContext& context)>;
Registry<LossScaleFactory>& loss_scale_registry();

}  // namespace lathe

LATHE_API_END
