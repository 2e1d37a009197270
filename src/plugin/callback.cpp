// Callback plugins (plugins.md §1). The trainer's own flow and logging callbacks live in
// src/train/run_log.cpp; the registry of callbacks a user selects with --callbacks is at the bottom.
#include "lathe/plugin/callback.h"

namespace lathe {

Registry<CallbackFactory>& callback_registry() {
  static Registry<CallbackFactory> registry = [] {
    Registry<CallbackFactory> built_ins("callback");
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
