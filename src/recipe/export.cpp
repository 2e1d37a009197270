#include "lathe/recipe/export.h"

#include <system_error>

#include "lathe/common/files.h"
#include "lathe/common/format.h"
#include "lathe/tuner/lora.h"

namespace lathe {
namespace fs = std::filesystem;

namespace {

// The model with --adapters merged in (one LoRA/DoRA folder), as the export writes it.
CausalLM merged_model(const Arguments& arguments, std::size_t& merged_layers) {
  auto model = load_pretrained(arguments.model, arguments.torch_dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32);
  if (!arguments.adapters.empty()) {
    load_adapter(model, arguments.adapters[0], /*trainable=*/false);
    merged_layers = merge_lora(model).size();
  }
  return model;
}

// --output_dir: a .gguf file name, else the folder to hold model-<type>.gguf; by default the
// folder beside the adapter (ADAPTER-gguf) or the model (MODEL-gguf).
fs::path gguf_file(const Arguments& arguments) {
  const auto type = std::string(gguf_type_name(parse_gguf_type(arguments.gguf_type)));
  fs::path output = arguments.output_dir;
  if (output.empty()) {
    const fs::path source = arguments.adapters.empty() ? fs::path(arguments.model) : fs::path(arguments.adapters[0]);
    output = source.lexically_normal().string() + "-gguf";
    if (output.filename().empty()) output = output.parent_path();
  }
  return output.extension() == ".gguf" ? output : output / ("model-" + type + ".gguf");
}

void copy_if_present(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (fs::exists(from, ec)) fs::copy_file(from, to);
}

}  // namespace

ExportSummary run_export(const Arguments& arguments) {
  if (arguments.model.empty()) fail("--model is required (the base model folder), or --adapters CKPT with its args.json");
  if (!arguments.merge_lora && !arguments.to_gguf) {
    fail("nothing to do: pass --merge_lora true (with --adapters) for a merged model folder, or --to_gguf true");
  }
  if (arguments.adapters.size() > 1) fail("--adapters: give one adapter folder to merge, not {}", arguments.adapters.size());
  if (arguments.merge_lora && !arguments.to_gguf && arguments.adapters.empty()) {
    fail("--merge_lora: give the adapter folder to merge with --adapters");
  }
  ExportSummary summary;
  if (arguments.to_gguf) {
    summary.output = gguf_file(arguments);
    auto model = merged_model(arguments, summary.merged_layers);
    const fs::path folder = summary.output.parent_path();
    std::error_code ec;
    const bool made_folder = !folder.empty() && !fs::exists(folder, ec);
    try {
      if (made_folder) fs::create_directories(folder);
      write_gguf(model, arguments.model, parse_gguf_type(arguments.gguf_type), summary.output);
    } catch (...) {
      if (made_folder) fs::remove_all(folder, ec);
      throw;
    }
    return summary;
  }
  const fs::path adapter_dir = arguments.adapters[0];
  summary.output = arguments.output_dir.empty() ? fs::path(adapter_dir.string() + "-merged") : fs::path(arguments.output_dir);
  auto model = merged_model(arguments, summary.merged_layers);
  write_dir_atomic(summary.output, [&](const fs::path& folder) {
    save_pretrained(model, folder);
    for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
      copy_if_present(fs::path(arguments.model) / name, folder / name);
    }
  });
  return summary;
}

}  // namespace lathe
