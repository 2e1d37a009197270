// A tuner plugin registered as "ln_tuning_example": LayerNorm tuning (LN-tuning, arXiv:2312.11420),
// which Lathe does not have built in, written only against Lathe's public headers. Only the
// normalisation layers train; everything else is frozen. By default these are all the RMSNorms:
// input_layernorm and post_attention_layernorm of every decoder layer, the final model.norm, and
// the per-head q_norm / k_norm of Qwen3.
//
//   lathe sft ... --external_plugins examples/plugins/tuner/ln_tuning.cpp --train_type ln_tuning_example
//
// --target_modules picks other modules by name (a module matches when its path is the name or ends
// in ".name", as in PEFT); every parameter of a matched module trains.
//
// Checkpoints are PEFT adapter folders (peft_type LN_TUNING), so `PeftModel.from_pretrained` loads them:
//   adapter_config.json        {"peft_type": "LN_TUNING", "task_type": "CAUSAL_LM",
//                               "target_modules": ["input_layernorm", "norm", ...], ...}
//   adapter_model.safetensors  each targeted module's parameters, named as PEFT names its trained
//                              copy of the module: base_model.model.<module path>.ln_tuning_layers.<name>,
//                              e.g. base_model.model.model.layers.0.input_layernorm.ln_tuning_layers.weight
// PEFT keeps the original module and trains a copy; here the model's own weights train, so loading
// an adapter overwrites the norms of the base model. The weights keep the model's dtype (as PEFT's
// copies do): with --torch_dtype bfloat16 the norms train in bfloat16.
#include <lathe/common/error.h>
#include <lathe/common/files.h>
#include <lathe/model/weights.h>
#include <lathe/plugin.h>
#include <lathe/plugin/tuner.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace {
namespace fs = std::filesystem;

using NamedModule = std::pair<std::string, std::shared_ptr<torch::nn::Module>>;

bool path_ends_with(const std::string& path, const std::string& name) {
  return path == name || path.ends_with("." + name);
}

// The default targets: the last name of every module whose weight is "...norm.weight", as PEFT
// records target_modules (input_layernorm, norm, post_attention_layernorm, ...).
std::vector<std::string> norm_names(lathe::CausalLM& model) {
  std::set<std::string> names;
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.key();
    if (!name.ends_with("norm.weight")) continue;
    const auto path = name.substr(0, name.size() - std::string(".weight").size());
    names.insert(path.substr(path.rfind('.') + 1));
  }
  return {names.begin(), names.end()};
}

std::vector<NamedModule> targeted_modules(lathe::CausalLM& model, const std::vector<std::string>& targets) {
  std::vector<NamedModule> found;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    const auto& path = item.key();
    if (std::any_of(targets.begin(), targets.end(), [&](const std::string& name) { return path_ends_with(path, name); }))
      found.emplace_back(path, item.value());
  }
  return found;
}

// The parameters of the targeted modules under the names PEFT saves (it drops the adapter name,
// "default", from `<module>.ln_tuning_layers.default.<parameter>`).
std::map<std::string, torch::Tensor> peft_tensors(const std::vector<NamedModule>& modules) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [path, module] : modules)
    for (const auto& parameter : module->named_parameters())
      tensors.emplace("base_model.model." + path + ".ln_tuning_layers." + parameter.key(), parameter.value());
  return tensors;
}

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

class LnTuningExampleTuner : public lathe::Tuner {
 public:
  explicit LnTuningExampleTuner(const lathe::Arguments& arguments) {
    // Lathe's default --target_modules, all-linear, means "the norms" here.
    if (arguments.target_modules != std::vector<std::string>{"all-linear"}) targets_ = arguments.target_modules;
  }

  void prepare_model(const lathe::Arguments&, lathe::CausalLM& model) override {
    if (targets_.empty()) targets_ = norm_names(model);
    if (targeted_modules(model, targets_).empty())
      throw lathe::Error("--target_modules: no module of the model is named " + joined(targets_));
    select(model, /*trainable=*/true);
  }

  void save_pretrained(lathe::CausalLM& model, const fs::path& dir, const lathe::Arguments& arguments) override {
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& [key, tensor] : peft_tensors(targeted_modules(model, targets_))) tensors.emplace(key, tensor.detach());
    // The fields PEFT writes for an LNTuningConfig.
    const nlohmann::json config = {{"auto_mapping", nullptr},
                                   {"base_model_name_or_path", arguments.model},
                                   {"exclude_modules", nullptr},
                                   {"inference_mode", true},
                                   {"modules_to_save", nullptr},
                                   {"peft_type", "LN_TUNING"},
                                   {"revision", nullptr},
                                   {"target_modules", targets_},
                                   {"task_type", "CAUSAL_LM"}};
    fs::create_directories(dir);
    lathe::write_file_atomic(dir / "adapter_config.json", config.dump(2) + "\n");
    lathe::save_tensors(dir / "adapter_model.safetensors", tensors);
  }

  void from_pretrained(lathe::CausalLM& model, const fs::path& dir, bool trainable) override {
    const auto config_file = dir / "adapter_config.json";
    const auto where = config_file.string() + ": ";
    const auto config = nlohmann::json::parse(lathe::read_file(config_file));
    if (config.value("peft_type", "") != "LN_TUNING") throw lathe::Error(where + "peft_type is not \"LN_TUNING\"");
    const auto targets = config.value("target_modules", nlohmann::json());
    if (!targets.is_array()) throw lathe::Error(where + "target_modules must be a list of module names");
    for (const char* field : {"modules_to_save", "exclude_modules"})
      if (!config.value(field, nlohmann::json()).empty())
        throw lathe::Error(where + field + " is not supported by this example");
    targets_ = targets.get<std::vector<std::string>>();

    const auto file = dir / "adapter_model.safetensors";
    const auto where_file = file.string() + ": ";
    const auto saved = lathe::load_tensors(file);
    const auto expected = peft_tensors(targeted_modules(model, targets_));
    if (expected.empty()) throw lathe::Error(where + "no module of the model is named " + joined(targets_));
    // Everything is checked before the model changes.
    for (const auto& [key, tensor] : expected) {
      const auto found = saved.find(key);
      if (found == saved.end()) throw lathe::Error(where_file + "missing tensor '" + key + "'");
      if (found->second.sizes() != tensor.sizes()) throw lathe::Error(where_file + "tensor '" + key + "' has the wrong shape");
    }
    for (const auto& [key, tensor] : saved)
      if (!expected.count(key)) throw lathe::Error(where_file + "tensor '" + key + "' belongs to no targeted module");

    torch::NoGradGuard no_grad;
    for (const auto& [key, tensor] : expected) tensor.copy_(saved.at(key));
    select(model, trainable);
  }

 private:
  // Freezes the model, then lets the parameters of the targeted modules train (when `trainable`).
  void select(lathe::CausalLM& model, bool trainable) const {
    for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
    for (const auto& [path, module] : targeted_modules(model, targets_))
      for (auto& parameter : module->parameters()) parameter.set_requires_grad(trainable);
  }

  std::vector<std::string> targets_;  // module names, as adapter_config.json's target_modules
};

}  // namespace

LATHE_PLUGIN() {
  lathe::tuner_registry().add("ln_tuning_example", "LN-tuning: only the norm weights train; PEFT LN_TUNING format (example plugin)",
                              [](const lathe::PluginContext& context) { return std::make_shared<LnTuningExampleTuner>(context.arguments); });
}
