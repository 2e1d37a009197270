// External plugins (--external_plugins): shared libraries opened with dlopen, and C++ files compiled
// on the fly against this Lathe's headers into a cache keyed by a hash of the source and flags.
#include <dlfcn.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/plugin.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/plugin/callback.h"
#include "lathe/plugin/loss.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/plugin/optimizer.h"
#include "lathe/plugin/metric.h"
#include "lathe/plugin/orm.h"
#include "lathe/plugin/prm.h"
#include "lathe/plugin/tuner.h"
#include "plugin/plugin_build_flags.h"

namespace lathe {
namespace fs = std::filesystem;

namespace {

// Registries build their built-ins on first use; building them now keeps a plugin that is the
// first to touch a registry from being named as the origin of the built-ins.
void build_every_registry() {
  agent_template_registry();
  callback_registry();
  loss_registry();
  loss_scale_registry();
  optimizer_registry();
  tuner_registry();
  metric_registry();
  orm_registry();
  prm_registry();
}

fs::path cache_dir() {
  if (const char* dir = std::getenv("LATHE_PLUGIN_CACHE")) return dir;
  if (const char* home = std::getenv("XDG_CACHE_HOME")) return fs::path(home) / "lathe" / "plugins";
  if (const char* home = std::getenv("HOME")) return fs::path(home) / ".cache" / "lathe" / "plugins";
  return fs::temp_directory_path() / "lathe-plugins";
}

struct LatheLocations {
  fs::path include_dir, generated_include_dir, library_dir;
};

// Where this Lathe's headers and library are: the install prefix when liblathe.so sits in
// <prefix>/lib* next to <prefix>/include/lathe (the generated lathe/abi.h installed beside the
// others), else the build tree it was built in.
LatheLocations lathe_locations() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&load_external_plugins), &info) && info.dli_fname) {
    const fs::path library_dir = fs::path(info.dli_fname).parent_path();
    const fs::path include_dir = library_dir.parent_path() / "include";
    std::error_code ec;
    // Only an installed tree has the generated abi.h beside the other headers (a build tree next to
    // the source tree has the headers but not it).
    if (fs::exists(include_dir / "lathe" / "abi.h", ec)) return {include_dir, include_dir, library_dir};
  }
  return {LATHE_BUILD_INCLUDE_DIR, LATHE_BUILD_GENERATED_INCLUDE_DIR, LATHE_BUILD_LIBRARY_DIR};
}

std::string substitute(std::string text, const std::string& key, const std::string& value) {
  for (auto at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size())) {
    text.replace(at, key.size(), value);
  }
  return text;
}

std::string compiler() {
  if (const char* cxx = std::getenv("CXX")) return cxx;
  return LATHE_PLUGIN_CXX;
}

// Runs a command, capturing its combined output; returns the exit status.
int run_capturing(const std::string& command, std::string& output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string quoted(const std::string& text) {
  std::string result = "'";
  for (char c : text) result += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return result + "'";
}

fs::path compile_plugin(const fs::path& source) {
  const std::string text = read_file(source);
  const auto locations = lathe_locations();
  const std::string flags =
      substitute(substitute(LATHE_PLUGIN_CXXFLAGS_TEMPLATE, "{include}", locations.include_dir.string()), "{generated}",
                 locations.generated_include_dir.string());
  const std::string link = substitute(LATHE_PLUGIN_LDFLAGS_TEMPLATE, "{libdir}", locations.library_dir.string());
  const auto& library_dir = locations.library_dir;
  // A rebuilt Lathe (new headers) must not reuse plugins compiled against the old one.
  std::error_code ec;
  const auto built = fs::last_write_time(library_dir / "liblathe.so", ec).time_since_epoch().count();
  const auto key = std::hash<std::string>{}(text + '\0' + flags + '\0' + link + '\0' + compiler() + '\0' +
                                            LATHE_PLUGIN_ABI + '\0' + std::to_string(built));
  const fs::path library = cache_dir() / fmt::format("{}-{:016x}.so", source.stem().string(), key);
  if (fs::exists(library, ec)) return library;
  fs::create_directories(cache_dir());
  // Several processes may compile the same plugin at once (parallel tests, jobs sharing a cache):
  // each writes its own temporary file, and the atomic rename lets the last one win.
  const auto temporary = fmt::format("{}.{}.tmp", library.string(), ::getpid());
  const auto command = fmt::format("{} {} -shared -o {} {} {}", compiler(), flags, quoted(temporary),
                                   quoted(source.string()), link);
  fmt::print(stderr, "lathe: compiling plugin {}\n", source.string());
  std::string output;
  const int status = run_capturing(command, output);
  if (status != 0) fs::remove(temporary, ec);
  if (status == 127 || (status != 0 && output.find("not found") != std::string::npos && output.size() < 200)) {
    fail("{}: cannot compile the plugin: the compiler '{}' was not found (install g++, or set CXX)", source.string(),
         compiler());
  }
  if (status != 0) fail("{}: the plugin does not compile:\n{}", source.string(), output);
  fs::rename(temporary, library);
  return library;
}

void load_library(const fs::path& library, const std::string& name) {
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!handle) fail("{}: cannot load the plugin: {}", name, dlerror());
  auto abi = reinterpret_cast<const char* (*)()>(dlsym(handle, "lathe_plugin_abi"));
  auto registration = reinterpret_cast<void (*)()>(dlsym(handle, "lathe_plugin_register"));
  if (!registration || (!abi && !dlsym(handle, "lathe_plugin_abi_version"))) {
    fail("{}: not a Lathe plugin (no LATHE_PLUGIN() entry point: lathe_plugin_register / lathe_plugin_abi)", name);
  }
  // Lathe before the hashed identity numbered its ABI (lathe_plugin_abi_version).
  const std::string built_for = abi ? abi() : "an older numbered one";
  if (built_for != LATHE_PLUGIN_ABI) {
    fail("{}: built against another Lathe (plugin ABI {}; this Lathe's is {}): rebuild the plugin against this one",
         name, built_for, LATHE_PLUGIN_ABI);
  }
  current_plugin_origin() = name;
  try {
    registration();
  } catch (const std::exception& error) {
    current_plugin_origin() = "built-in";
    fail("{}: failed while registering: {}", name, error.what());
  }
  current_plugin_origin() = "built-in";
}

}  // namespace

void load_external_plugins(const std::vector<std::string>& paths) {
  if (paths.empty()) return;
  build_every_registry();
  for (const auto& path : paths) {
    const fs::path file = path;
    std::error_code ec;
    if (!fs::exists(file, ec)) fail("--external_plugins {}: file not found", path);
    const auto extension = file.extension().string();
    if (extension == ".cpp" || extension == ".cc" || extension == ".cxx") {
      load_library(compile_plugin(file), path);
    } else {
      load_library(fs::absolute(file), path);
    }
  }
}

}  // namespace lathe
