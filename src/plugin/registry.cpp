#include "lathe/plugin/registry.h"

namespace lathe {

std::string& current_plugin_origin() {
  static thread_local std::string origin = "built-in";
  return origin;
}

}  // namespace lathe
