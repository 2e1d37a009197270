// `lathe export`: a merged Hugging Face folder or a GGUF file, through the library's recipe
// (lathe/recipe/export.h).
#include <fmt/format.h>

#include "cli/arguments.h"
#include "lathe/recipe/export.h"

namespace lathe::cli {

int run_export(const Args& args) {
  CLI::App app("Merge adapters into the base model (--merge_lora true) and write a full Hugging Face model folder to "
               "--output_dir (default: the adapter folder's name with -merged), or write one GGUF file for llama.cpp "
               "and ollama (--to_gguf true, --gguf_type f32|f16|bf16|q8_0; adapters are merged first) to --output_dir "
               "(a .gguf name, or a folder that gets model-<type>.gguf; default: the model or adapter folder's "
               "name with -gguf).",
               "export");
  Arguments arguments;
  arguments.output_dir.clear();  // SWIFT's default: the adapter folder's name with -merged
  add_options(app, arguments, {ArgumentGroup::Model, ArgumentGroup::Export, ArgumentGroup::Output});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  const auto summary = lathe::run_export(arguments);
  if (arguments.to_gguf) {
    fmt::print(stderr, "lathe export: wrote {} ({}; {} adapted layers merged)\n", summary.output.string(),
               arguments.gguf_type, summary.merged_layers);
  } else {
    fmt::print(stderr, "lathe export: merged {} adapted layers into {}\n", summary.merged_layers, summary.output.string());
  }
  return 0;
}

}  // namespace lathe::cli
