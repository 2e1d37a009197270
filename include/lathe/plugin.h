#pragma once
// The entry point of an external plugin: a C++ shared library (or a .cpp file that Lathe compiles
// on the fly) loaded with --external_plugins. It registers into the same registries as the
// built-ins:
//
//   #include <lathe/plugin.h>
//   #include <lathe/plugin/loss.h>
//
//   LATHE_PLUGIN() {
//     lathe::loss_registry().add("my_loss", "what it does", make_my_loss);
//   }
//
// The ABI identity (LATHE_PLUGIN_ABI: a hash of the public headers, the compiler and libtorch's
// version, computed when Lathe is configured) is checked on load: a plugin built against another
// Lathe is refused with a message saying so, instead of crashing on mismatched types.
#include "lathe/abi.h"

// The two entry points are exported even from a plugin built with hidden symbols.
#define LATHE_PLUGIN()                                                                                   \
  static void lathe_plugin_body();                                                                       \
  extern "C" __attribute__((visibility("default"))) const char* lathe_plugin_abi() { return LATHE_PLUGIN_ABI; } \
  extern "C" __attribute__((visibility("default"))) void lathe_plugin_register() { lathe_plugin_body(); }        \
  static void lathe_plugin_body()

#include <string>
#include <vector>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Loads each path: a shared library (.so) with LATHE_PLUGIN(), or a .cpp file compiled with the
// compiler, flags and include paths of this Lathe into a cached library (keyed by a hash of the
// source and the flags). Throws lathe::Error naming the plugin: a missing file, a library without
// the entry point, another ABI version, a compiler that is missing or fails (its messages
// included), a name registered twice, an exception thrown while registering.
void load_external_plugins(const std::vector<std::string>& paths);

}  // namespace lathe

LATHE_API_END
