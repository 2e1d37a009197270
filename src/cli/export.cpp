// `lathe export`: merge LoRA adapters into the base model and write a plain Hugging Face folder.
#include <fmt/format.h>

#include "cli/arguments.h"
#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/tuner/lora.h"

namespace lathe::cli {
namespace fs = std::filesystem;

int run_export(const Args& args) {
  CLI::App app("Merge adapters into the base model (--merge_lora true) and write a full Hugging Face model "
               "folder to --output_dir (default: the adapter folder's name with -merged).",
               "export");
  Arguments arguments;
  arguments.output_dir.clear();  // SWIFT's default: the adapter folder's name with -merged
  add_options(app, arguments, {ArgumentGroup::Model, ArgumentGroup::Export, ArgumentGroup::Output});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  if (arguments.model.empty()) fail("--model is required (the base model folder)");
  if (!arguments.merge_lora) fail("nothing to do: pass --merge_lora true (the only export this build has)");
  if (arguments.adapters.size() != 1) fail("--adapters: give exactly one adapter folder to merge");
  const fs::path model_dir = arguments.model, adapter_dir = arguments.adapters[0];
  const fs::path output = arguments.output_dir.empty() ? fs::path(adapter_dir.string() + "-merged") : fs::path(arguments.output_dir);

  auto model = load_pretrained(model_dir, arguments.torch_dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32);
  load_adapter(model, adapter_dir, /*trainable=*/false);
  const auto merged = merge_lora(model);
  write_dir_atomic(output, [&](const fs::path& folder) {
    save_pretrained(model, folder);
    for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
      std::error_code ec;
      if (fs::exists(model_dir / name, ec)) fs::copy_file(model_dir / name, folder / name);
    }
  });
  fmt::print(stderr, "lathe export: merged {} adapted layers into {}\n", merged.size(), output.string());
  return 0;
}

}  // namespace lathe::cli
