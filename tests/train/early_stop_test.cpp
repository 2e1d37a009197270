// The built-in early_stop callback: training stops after --early_stop_interval evaluations (each
// followed by a save) without a better best metric.
#include <gtest/gtest.h>

#include "lathe/plugin/callback.h"

namespace lathe {
namespace {

// Feeds eval values through the trainer's best-metric rule and one on_save per evaluation;
// returns the 1-based evaluation after which the callback asked to stop, or 0.
int stopping_evaluation(Arguments arguments, const std::vector<double>& values) {
  auto callback = callback_registry().create("early_stop", arguments);
  const bool greater = arguments.best_metric_greater_is_better();
  TrainerState state;
  TrainerControl control;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!state.best_metric || (greater ? values[i] > *state.best_metric : values[i] < *state.best_metric)) {
      state.best_metric = values[i];
    }
    callback->on_save(arguments, state, control, CallbackContext{});
    if (control.should_training_stop) return static_cast<int>(i + 1);
  }
  return 0;
}

TEST(EarlyStop, StopsAfterPatienceEvaluationsWithoutImprovement) {
  Arguments arguments;
  arguments.early_stop_interval = 2;
  arguments.metric_for_best_model = "loss";
  // Best 0.8 at evaluation 2; evaluations 3 and 4 do not beat it: stop after the 4th.
  EXPECT_EQ(stopping_evaluation(arguments, {1.0, 0.8, 0.9, 0.85, 0.5}), 4);
  // An improvement resets the count.
  EXPECT_EQ(stopping_evaluation(arguments, {1.0, 1.1, 0.9, 1.2, 1.3, 0.1}), 5);
  EXPECT_EQ(stopping_evaluation(arguments, {1.0, 0.9, 0.8, 0.7}), 0);
}

TEST(EarlyStop, HigherIsBetterForAccuracies) {
  Arguments arguments;
  arguments.early_stop_interval = 1;
  arguments.metric_for_best_model = "token_acc";
  EXPECT_EQ(stopping_evaluation(arguments, {0.1, 0.2, 0.3, 0.3}), 4);
  arguments.greater_is_better = false;
  EXPECT_EQ(stopping_evaluation(arguments, {0.3, 0.2, 0.25}), 3);
}

}  // namespace
}  // namespace lathe
