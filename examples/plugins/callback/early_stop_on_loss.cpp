// A callback plugin registered as "early_stop_on_loss": stops training when the logged training
// loss has not improved by at least min_delta for `patience` logging events in a row, an
// early-stopping variant that needs no evaluation set.
//   lathe sft ... --external_plugins examples/plugins/callback/early_stop_on_loss.cpp \
//       --callbacks early_stop_on_loss --plugin_args '{"early_stop_on_loss": {"patience": 3, "min_delta": 0.01}}'
#include <fmt/format.h>
#include <lathe/plugin.h>
#include <lathe/plugin/callback.h>

#include <optional>

namespace {

class EarlyStopOnLoss : public lathe::Callback {
 public:
  EarlyStopOnLoss(int64_t patience, double min_delta) : patience_(patience), min_delta_(min_delta) {}

  void on_log(const lathe::Arguments&, S& state, C& control, const X& context) override {
    // Evaluation rows are logged too; only training rows carry "loss".
    if (!context.logs || !context.logs->contains("loss")) return;
    const double loss = (*context.logs)["loss"].get<double>();
    if (!best_ || loss < *best_ - min_delta_) {
      best_ = loss;
      logs_without_improvement_ = 0;
      return;
    }
    if (++logs_without_improvement_ >= patience_) {
      fmt::print(stderr, "early_stop_on_loss: no improvement of {} over {} for {} logs; stopping at step {}\n",
                 min_delta_, *best_, logs_without_improvement_, state.global_step);
      control.should_training_stop = true;
    }
  }

 private:
  int64_t patience_;
  double min_delta_;
  std::optional<double> best_;
  int64_t logs_without_improvement_ = 0;
};

}  // namespace

LATHE_PLUGIN() {
  lathe::callback_registry().add(
      "early_stop_on_loss",
      "stop when the training loss has not improved by min_delta for patience logs (--plugin_args)",
      [](const lathe::PluginContext& context) {
        return std::make_shared<EarlyStopOnLoss>(context.setting("patience", int64_t{3}),
                                                 context.setting("min_delta", 0.0));
      });
}
