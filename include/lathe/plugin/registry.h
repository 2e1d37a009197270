#pragma once
// A named registry of factories: the spine of Lathe's plugin system. Every plugin kind has one;
// built-ins register through the same add() that external plugins call, and a lookup of an unknown
// name fails with the list of registered names.
#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/common/error.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Who is registering right now: "built-in", or the plugin file being loaded (set by
// load_external_plugins), so `lathe plugins` can tell them apart.
// One per thread, defined once in liblathe (not in this header, where every plugin library would
// get its own copy).
std::string& current_plugin_origin();

// What a plugin's factory is given: the run's arguments, read-only, and the plugin's own settings,
// the object under its name in --plugin_args ('{"custom_loss": {"focal_gamma": 2}}'; empty when
// the name is absent). Registry::create fills them in; made from the arguments alone, a context
// has none. Valid for the call only: a plugin copies what it keeps.
struct PluginContext {
  explicit PluginContext(const Arguments& arguments, const nlohmann::json& settings = no_settings())
      : arguments(arguments), settings(settings) {}
  const Arguments& arguments;
  const nlohmann::json& settings;

  // settings[key] as T, or `fallback` when absent or null; a lathe::Error naming the key when it
  // holds another type.
  template <class T>
  T setting(const std::string& key, T fallback) const {
    const auto found = settings.find(key);
    if (found == settings.end() || found->is_null()) return fallback;
    try {
      return found->get<T>();
    } catch (const nlohmann::json::exception&) {
      throw Error("--plugin_args: '" + key + "' has the wrong type (" + found->dump() + ")");
    }
  }

  static const nlohmann::json& no_settings();
};

// The settings of the plugin called `name`: arguments.plugin_args[name], or an empty object.
// Throws lathe::Error when that entry is not an object.
const nlohmann::json& plugin_settings(const Arguments& arguments, std::string_view name);

template <class Factory>
class Registry {
 public:
  struct Entry {
    std::string name;
    std::string description;  // one line, shown by `lathe plugins`
    Factory factory;
    std::string origin;       // "built-in" or the plugin file that registered it
  };

  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  const std::string& kind() const { return kind_; }

  void add(std::string name, std::string description, Factory factory, std::string origin = current_plugin_origin()) {
    if (auto found = entries_.find(name); found != entries_.end()) {
      throw Error(kind_ + " '" + name + "' is registered twice (by " + found->second.origin + " and by " +
                  origin + ")");
    }
    Entry entry{name, std::move(description), std::move(factory), std::move(origin)};
    entries_.emplace(std::move(name), std::move(entry));
  }

  bool contains(std::string_view name) const { return entries_.find(std::string(name)) != entries_.end(); }

  const Entry& get(std::string_view name) const {
    if (auto found = entries_.find(std::string(name)); found != entries_.end()) return found->second;
    std::string known;
    for (const auto& [key, entry] : entries_) known += (known.empty() ? "" : ", ") + key;
    throw Error("unknown " + kind_ + " '" + std::string(name) + "' (registered: " + known + ")");
  }

  const Factory& factory(std::string_view name) const { return get(name).factory; }

  // The plugin registered as `name`, made with its own settings from --plugin_args (and whatever
  // else this kind's factories take after the context).
  template <class... Rest>
  auto create(std::string_view name, const Arguments& arguments, Rest&&... rest) const {
    return factory(name)(PluginContext(arguments, plugin_settings(arguments, name)), std::forward<Rest>(rest)...);
  }

  std::vector<const Entry*> entries() const {
    std::vector<const Entry*> result;
    for (const auto& [key, entry] : entries_) result.push_back(&entry);
    return result;
  }

 private:
  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace lathe

LATHE_API_END
