#pragma once
// Builds a command's CLI11 parser over lathe::Arguments, with --config files (YAML or JSON).
#include <CLI/CLI.hpp>

#include <functional>

#include "cli/commands.h"
#include "lathe/common/arguments.h"

namespace lathe::cli {

// Adds the options of the given groups of the argument table to `app`, bound to `arguments`.
void add_options(CLI::App& app, Arguments& arguments, std::initializer_list<ArgumentGroup> groups);

// Parses `args` (plus --config FILE, whose keys are the long option names without dashes and
// which the command line overrides, and --external_plugins, loaded once parsed) and checks every
// argument's rule. Returns the exit code when parsing ends the command (--help: 0, an error: 2
// with the message printed), or -1 to go on.
int parse(CLI::App& app, Arguments& arguments, const Args& args);

}  // namespace lathe::cli
