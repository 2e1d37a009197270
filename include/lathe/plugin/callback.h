#pragma once
// Callback plugins (`--callbacks name ...`, docs/plugins.md). The trainer calls every event on every
// callback in order, with the arguments, the state and the control flags; callbacks steer training
// only through TrainerControl.
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/registry.h"
#include "lathe/train/state.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class Callback {
 public:
  virtual ~Callback() = default;
  using S = TrainerState;
  using C = TrainerControl;
  using X = CallbackContext;
  virtual void on_init_end(const Arguments&, S&, C&, const X&) {}
  virtual void on_train_begin(const Arguments&, S&, C&, const X&) {}
  virtual void on_train_end(const Arguments&, S&, C&, const X&) {}
  virtual void on_epoch_begin(const Arguments&, S&, C&, const X&) {}
  virtual void on_epoch_end(const Arguments&, S&, C&, const X&) {}
  virtual void on_step_begin(const Arguments&, S&, C&, const X&) {}
  virtual void on_substep_end(const Arguments&, S&, C&, const X&) {}
  virtual void on_pre_optimizer_step(const Arguments&, S&, C&, const X&) {}
  virtual void on_optimizer_step(const Arguments&, S&, C&, const X&) {}
  virtual void on_step_end(const Arguments&, S&, C&, const X&) {}
  virtual void on_evaluate(const Arguments&, S&, C&, const X&) {}
  virtual void on_save(const Arguments&, S&, C&, const X&) {}
  virtual void on_log(const Arguments&, S&, C&, const X&) {}
  virtual void on_prediction_step(const Arguments&, S&, C&, const X&) {}
};

using CallbackFactory = std::function<std::shared_ptr<Callback>(const PluginContext& context)>;
Registry<CallbackFactory>& callback_registry();

}  // namespace lathe

LATHE_API_END
