// `lathe <command> [arguments]`: a table of commands, each in its own file.
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <exception>
#include <string_view>

#include "cli/commands.h"
#include "lathe/common/error.h"
#include "lathe/model/runtime.h"
#include "lathe/version.h"

namespace {

struct Command {
  std::string_view name;
  std::string_view summary;
  int (*run)(const lathe::cli::Args&);
};

constexpr Command kCommands[] = {
    {"sft", "supervised fine-tuning (LoRA, full, ...) on chat datasets", lathe::cli::run_sft},
    {"pt", "continued pre-training on text", lathe::cli::run_pt},
    {"rlhf", "preference alignment: dpo (and its loss variants), cpo, simpo, orpo, kto", lathe::cli::run_rlhf},
    {"infer", "chat with a model, or answer a dataset in batch", lathe::cli::run_infer},
    {"export", "merge adapters into a full model folder, or write a GGUF file for llama.cpp", lathe::cli::run_export},
    {"eval", "score a model on a dataset with metric plugins (generation-based nlg by default)", lathe::cli::run_eval},
    {"sample", "sample responses per query, keep the best by ORM / PRM rewards", lathe::cli::run_sample},
    {"deploy", "serve a model with an OpenAI-compatible HTTP API", lathe::cli::run_deploy},
    {"plugins", "list the registered plugins of every kind", lathe::cli::run_plugins},
    {"tokenize", "encode lines of text to token ids (or --decode ids to text)", lathe::cli::run_tokenize},
};

void print_usage() {
  fmt::print("lathe {}: fine-tune, run and serve large language models\n\n", lathe::version());
  fmt::print("usage: lathe <command> [--help] [arguments]\n\ncommands:\n");
  for (const auto& command : kCommands) fmt::print("  {:<10} {}\n", command.name, command.summary);
}

// The last word of a failed command; it must not throw again where stderr is closed or full.
void report(const std::string& message) { std::fputs(message.c_str(), stderr); }

}  // namespace

int main(int argc, char** argv) {
  lathe::configure_runtime(argc, argv);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    fmt::print("lathe {}\n", lathe::version());
    return 0;
  }
  for (const auto& command : kCommands) {
    if (command.name != argv[1]) continue;
    try {
      return command.run(lathe::cli::Args(argv + 2, argv + argc));
    } catch (const lathe::Error& error) {
      report(fmt::format("lathe {}: error: {}\n", command.name, error.what()));
    } catch (const std::exception& error) {
      report(fmt::format("lathe {}: internal error: {}\n", command.name, error.what()));
    }
    return 1;
  }
  fmt::print(stderr, "lathe: unknown command '{}'\n\n", argv[1]);
  print_usage();
  return 2;
}
