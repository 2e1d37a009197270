// A loss-scale plugin registered as "last_round_example": LastRoundLossScale, training only the
// last assistant round (weight 1) and none of the earlier ones (weight 0). It is the built-in
// base `last_round` written as a strategy part, to show how a part sees where a piece sits.
//   lathe sft ... --external_plugins examples/plugins/loss_scale/last_round_loss_scale.cpp \
//       --loss_scale last_round_example
#include <lathe/plugin.h>
#include <lathe/plugin/loss_scale.h>

namespace {

class LastRoundLossScale : public lathe::LossScale {
 public:
  // Only trained pieces (responses) reach a part; the weight returned multiplies theirs.
  std::vector<lathe::WeightedText> split(const lathe::WeightedText& piece, const lathe::PieceInfo& info) const override {
    return {{piece.text, piece.type, info.is_last_round ? 1.0 : 0.0}};
  }
};

}  // namespace

LATHE_PLUGIN() {
  lathe::loss_scale_registry().add("last_round_example", "LastRoundLossScale: the last round weight 1, earlier rounds 0",
                                   [](const lathe::PluginContext&) { return std::make_shared<LastRoundLossScale>(); });
}
