#pragma once
// A named registry of factories: the spine of Lathe's plugin system. Every plugin kind has one;
// built-ins register through the same add() that external plugins call, and a lookup of an unknown
// name fails with the list of registered names.
#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/common/error.h"

namespace lathe {

// Who is registering right now: "built-in", or the plugin file being loaded (set by
// load_external_plugins), so `lathe plugins` can tell them apart.
// One per thread, defined once in liblathe (not in this header, where every plugin library would
// get its own copy).
std::string& current_plugin_origin();

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
