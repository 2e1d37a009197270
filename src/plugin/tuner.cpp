// Tuner plugins (plugins.md §7). The registry and its built-ins are at the bottom.
#include "lathe/plugin/tuner.h"

#include "common/format.h"
#include "lathe/tuner.h"
#include "lathe/weights.h"

namespace lathe {
namespace fs = std::filesystem;

namespace {

// Every parameter trains; checkpoints are full Hugging Face model folders.
class FullTuner : public Tuner {
 public:
  void prepare_model(const Arguments&, CausalLM& model) override {
    for (auto& parameter : model->parameters()) parameter.set_requires_grad(true);
  }
  void save_pretrained(CausalLM& model, const fs::path& dir, const Arguments&) override {
    lathe::save_pretrained(model, dir);
  }
  void from_pretrained(CausalLM& model, const fs::path& dir, bool trainable) override {
    torch::NoGradGuard no_grad;
    model->load_state(load_tensors(dir), dir.string());
    for (auto& parameter : model->parameters()) parameter.set_requires_grad(trainable);
  }
  bool saves_full_model() const override { return true; }
};

bool looks_like_regex(const std::string& text) { return text.find_first_of("*+?()[]|^$\\") != std::string::npos; }

LoraConfig lora_config(const Arguments& arguments) {
  LoraConfig config;
  config.r = arguments.lora_rank;
  config.lora_alpha = arguments.lora_alpha;
  config.lora_dropout = arguments.lora_dropout;
  config.use_rslora = arguments.use_rslora;
  config.use_dora = arguments.use_dora;
  config.init = arguments.init_weights;
  // --target_modules: all-linear, module-name suffixes, or one regex over the module path.
  if (arguments.target_modules.size() == 1 && looks_like_regex(arguments.target_modules[0])) {
    config.target_regex = arguments.target_modules[0];
  } else {
    config.target_modules = arguments.target_modules;
  }
  config.validate();
  return config;
}

// LoRA / DoRA adapters on the linear layers; checkpoints are PEFT adapter folders.
class LoraTuner : public Tuner {
 public:
  void prepare_model(const Arguments& arguments, CausalLM& model) override {
    config_ = lora_config(arguments);
    apply_lora(model, config_, static_cast<uint64_t>(arguments.seed));
  }
  void save_pretrained(CausalLM& model, const fs::path& dir, const Arguments& arguments) override {
    write_adapter_files(model, dir, config_, arguments.model);
  }
  void from_pretrained(CausalLM& model, const fs::path& dir, bool trainable) override {
    if (lora_modules(model).empty()) {
      config_ = load_adapter(model, dir, trainable).config;
      return;
    }
    // Resuming: the adapters exist already; copy the saved values into them.
    torch::NoGradGuard no_grad;
    const auto file = dir / "adapter_model.safetensors";
    auto saved = load_tensors(file);
    for (auto& [key, tensor] : adapter_state(model)) {
      auto found = saved.find(key);
      if (found == saved.end()) fail("{}: missing tensor '{}'", file.string(), key);
      if (found->second.sizes() != tensor.sizes()) {
        fail("{}: tensor '{}' has shape [{}], expected [{}]", file.string(), key,
             fmt::join(found->second.sizes(), ", "), fmt::join(tensor.sizes(), ", "));
      }
      tensor.copy_(found->second);
    }
  }

 private:
  LoraConfig config_;
};

}  // namespace

Registry<TunerFactory>& tuner_registry() {
  static Registry<TunerFactory> registry = [] {
    Registry<TunerFactory> built_ins("tuner");
    built_ins.add("full", "train every parameter; checkpoints are full model folders",
                  [](const Arguments&) { return std::make_shared<FullTuner>(); });
    built_ins.add("lora", "LoRA adapters (--lora_rank, --lora_alpha, --use_rslora, --use_dora, --init_weights); PEFT format",
                  [](const Arguments&) { return std::make_shared<LoraTuner>(); });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
