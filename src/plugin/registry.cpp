#include "lathe/plugin/registry.h"

namespace lathe {

std::string& current_plugin_origin() {
  static thread_local std::string origin = "built-in";
  return origin;
}

const nlohmann::json& PluginContext::no_settings() {
  static const nlohmann::json empty = nlohmann::json::object();
  return empty;
}

const nlohmann::json& plugin_settings(const Arguments& arguments, std::string_view name) {
  const auto found = arguments.plugin_args.find(std::string(name));
  if (found == arguments.plugin_args.end() || found->is_null()) return PluginContext::no_settings();
  if (!found->is_object()) {
    throw Error("--plugin_args: the settings of '" + std::string(name) + "' must be an object, got " + found->dump());
  }
  return *found;
}

}  // namespace lathe
