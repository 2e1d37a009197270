#include "lathe/recipe/export.h"

#include <system_error>

#include "lathe/common/files.h"
#include "lathe/common/format.h"
#include "lathe/tuner/lora.h"
#include "recipe/classifier.h"

namespace lathe {
namespace fs = std::filesystem;

namespace {

// The model with --adapters merged in (one LoRA/DoRA folder), as the export writes it.
CausalLM merged_model(const Arguments& arguments, std::size_t& merged_layers) {
  // A reward model's adapter merges into its base loaded as the classifier it was trained as.
  std::optional<ClassifierConversion> classifier;
  if (!arguments.adapters.empty()) {
    if (const auto labels = adapter_classifier_labels(arguments.adapters[0])) classifier = classifier_conversion(arguments.model, *labels);
  }
  auto model = load_pretrained(arguments.model, arguments.torch_dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32,
                               {}, classifier);
  if (!arguments.adapters.empty()) {
    load_adapter(model, arguments.adapters[0], /*trainable=*/false);
    merged_layers = merge_lora(model).size();
  }
  return model;
}

// FOLDER + suffix beside FOLDER, also when it is written with a trailing slash.
fs::path beside(const fs::path& folder, const std::string& suffix) {
  auto normal = folder.lexically_normal();
  if (!normal.has_filename()) normal = normal.parent_path();
  return normal.string() + suffix;
}

// --output_dir: a .gguf file name, else the folder to hold model-<type>.gguf; by default the
// folder beside the adapter (ADAPTER-gguf) or the model (MODEL-gguf).
fs::path gguf_file(const Arguments& arguments, GgufType type) {
  fs::path output = arguments.output_dir;
  if (output.empty()) {
    output = beside(arguments.adapters.empty() ? arguments.model : arguments.adapters[0], "-gguf");
  }
  return output.extension() == ".gguf" ? output : output / ("model-" + std::string(gguf_type_name(type)) + ".gguf");
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
    const GgufType type = parse_gguf_type(arguments.gguf_type);
    summary.output = gguf_file(arguments, type);
    auto model = merged_model(arguments, summary.merged_layers);
    if (model->is_classifier())
      fail("--to_gguf: {} is a sequence classifier (a reward model), which llama.cpp's causal-LM layout cannot hold; "
           "--merge_lora true writes it as a Hugging Face folder", arguments.adapters.empty() ? arguments.model : arguments.adapters[0]);
    const fs::path folder = summary.output.parent_path();
    std::error_code ec;
    const bool made_folder = !folder.empty() && !fs::exists(folder, ec);
    try {
      if (made_folder) fs::create_directories(folder);
      write_gguf(model, arguments.model, type, summary.output);
    } catch (...) {
      if (made_folder) fs::remove_all(folder, ec);
      throw;
    }
    return summary;
  }
  const fs::path adapter_dir = arguments.adapters[0];
  summary.output = arguments.output_dir.empty() ? beside(adapter_dir, "-merged") : fs::path(arguments.output_dir);
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
