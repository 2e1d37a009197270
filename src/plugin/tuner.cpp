// Tuner plugins (docs/plugins.md). The registry and its built-ins are at the bottom.
#include "lathe/plugin/tuner.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/tuner/lora.h"
#include "lathe/model/weights.h"
#include "lathe/tuner/targets.h"

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

// A classifier's score head trains whole under an adapter tuner (PEFT's modules_to_save for SEQ_CLS):
// it starts random, and no adapter could make it a useful head.
void train_classifier_head(CausalLM& model, bool trainable) {
  if (model->is_classifier()) model->output_weight().set_requires_grad(trainable);
}

bool starts_with_any(const std::string& name, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](const std::string& prefix) { return name.starts_with(prefix); });
}

// Full-model training of a chosen part: --trainable_parameters prefixes train (everything when
// none is given), except --freeze_parameters prefixes, which stay frozen.
class FreezeTuner : public FullTuner {
 public:
  explicit FreezeTuner(const Arguments& arguments)
      : freeze_(arguments.freeze_parameters), trainable_(arguments.trainable_parameters) {}

  void prepare_model(const Arguments&, CausalLM& model) override { select(model); }
  void from_pretrained(CausalLM& model, const fs::path& dir, bool trainable) override {
    FullTuner::from_pretrained(model, dir, trainable);
    if (trainable) select(model);
  }

 private:
  void select(CausalLM& model) const {
    const auto parameters = model->named_parameters();
    for (const auto* list : {&freeze_, &trainable_}) {
      for (const auto& prefix : *list) {
        const bool used = std::any_of(parameters.begin(), parameters.end(),
                                      [&](const auto& item) { return item.key().starts_with(prefix); });
        if (!used) fail("{}: '{}' is the prefix of no parameter name (e.g. model.layers.0.mlp)",
                        list == &freeze_ ? "--freeze_parameters" : "--trainable_parameters", prefix);
      }
    }
    int64_t training = 0;
    for (const auto& item : parameters) {
      const bool trains = (trainable_.empty() || starts_with_any(item.key(), trainable_)) && !starts_with_any(item.key(), freeze_);
      item.value().set_requires_grad(trains);
      training += trains;
    }
    if (training == 0) fail("--freeze_parameters / --trainable_parameters leave no parameter to train");
  }

  std::vector<std::string> freeze_, trainable_;
};

// IA3: a learned vector per targeted Linear, shaped as PEFT stores it: [out, 1] scaling the
// output, or [1, in] scaling the input of feed-forward layers. float32, applied in float32.
class Ia3Adapter : public LinearAdapter {
 public:
  Ia3Adapter(const LinearImpl& base, bool feedforward) : feedforward(feedforward) {
    const auto options = base.weight.options().dtype(base.weight.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
    ia3_l = register_parameter("ia3_l", feedforward ? torch::ones({1, base.in_features}, options)
                                                    : torch::ones({base.out_features, 1}, options));
  }
  torch::Tensor forward(LinearImpl& base, const torch::Tensor& x) override {
    const auto vector = ia3_l.flatten();
    if (feedforward) return base.base_forward((x.to(vector.scalar_type()) * vector).to(x.scalar_type()));
    const auto output = base.base_forward(x);
    return (output.to(vector.scalar_type()) * vector).to(output.scalar_type());
  }
  torch::Tensor ia3_l;
  bool feedforward;
};

inline constexpr const char* kIa3AdapterName = "ia3";

// PEFT's IA3 defaults for Llama-like models: keys and values scaled, and the MLP's down
// projection scaled on its input (a feed-forward module, PEFT's term). A loaded adapter brings its
// own target_modules and feedforward_modules.
class Ia3Tuner : public Tuner {
 public:
  explicit Ia3Tuner(const Arguments& arguments) {
    const bool all_linear = arguments.target_modules == std::vector<std::string>{"all-linear"};
    targets_ = all_linear ? std::vector<std::string>{"k_proj", "v_proj", "down_proj"} : arguments.target_modules;
    std::copy_if(targets_.begin(), targets_.end(), std::back_inserter(feedforward_),
                 [](const std::string& name) { return tuner::suffix_matches(name, "down_proj"); });
  }

  void prepare_model(const Arguments&, CausalLM& model) override { attach(model, true); }

  void save_pretrained(CausalLM& model, const fs::path& dir, const Arguments& arguments) override {
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& [path, adapter] : adapters(model)) tensors["base_model.model." + path + ".ia3_l"] = adapter->ia3_l.detach();
    if (model->is_classifier()) tensors[kClassifierHeadKey] = model->output_weight().detach();
    fs::create_directories(dir);
    nlohmann::json config = {{"peft_type", "IA3"},
                             {"task_type", "CAUSAL_LM"},
                             {"target_modules", targets_},
                             {"feedforward_modules", feedforward_},
                             {"base_model_name_or_path", arguments.model},
                             {"fan_in_fan_out", false},
                             {"init_ia3_weights", true},
                             {"inference_mode", true},
                             {"modules_to_save", nullptr},
                             {"revision", nullptr}};
    mark_classifier_adapter(config, model);
    write_file_atomic(dir / "adapter_config.json", config.dump(2));
    save_tensors(dir / "adapter_model.safetensors", tensors);
  }

  void from_pretrained(CausalLM& model, const fs::path& dir, bool trainable) override {
    const auto config_file = dir / "adapter_config.json";
    const auto config = nlohmann::json::parse(read_file(config_file));
    if (config.value("peft_type", "") != "IA3") fail("{}: peft_type is not \"IA3\"", config_file.string());
    if (adapters(model).empty()) {
      targets_ = names_field(config, "target_modules", config_file);
      feedforward_ = config.contains("feedforward_modules") && !config["feedforward_modules"].is_null()
                         ? names_field(config, "feedforward_modules", config_file)
                         : std::vector<std::string>{};
      attach(model, trainable);
    }
    torch::NoGradGuard no_grad;
    const auto file = dir / "adapter_model.safetensors";
    const auto saved = load_tensors(file);
    for (const auto& [path, adapter] : adapters(model)) {
      const auto key = "base_model.model." + path + ".ia3_l";
      auto found = saved.find(key);
      if (found == saved.end()) fail("{}: missing tensor '{}'", file.string(), key);
      if (found->second.sizes() != adapter->ia3_l.sizes()) {
        fail("{}: tensor '{}' has shape [{}], expected [{}]", file.string(), key, fmt::join(found->second.sizes(), ", "),
             fmt::join(adapter->ia3_l.sizes(), ", "));
      }
      adapter->ia3_l.copy_(found->second);
      adapter->ia3_l.set_requires_grad(trainable);
    }
    load_classifier_head(model, saved, file.string(), trainable);
  }

 private:
  static std::vector<std::string> names_field(const nlohmann::json& config, const char* key, const fs::path& file) {
    const auto found = config.find(key);
    if (found == config.end() || !found->is_array() ||
        !std::all_of(found->begin(), found->end(), [](const nlohmann::json& item) { return item.is_string(); }))
      fail("{}: field {} must be a list of module names", file.string(), key);
    return found->get<std::vector<std::string>>();
  }

  bool is_feedforward(const std::string& path) const {
    return std::any_of(feedforward_.begin(), feedforward_.end(),
                       [&](const std::string& name) { return tuner::suffix_matches(path, name); });
  }

  void attach(CausalLM& model, bool trainable) {
    for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
    int attached = 0;
    for (auto& [path, linear] : tuner::linear_modules(model)) {
      const bool targeted = std::any_of(targets_.begin(), targets_.end(),
                                        [&](const std::string& name) { return tuner::suffix_matches(path, name); });
      if (!targeted) continue;
      auto adapter = std::make_shared<Ia3Adapter>(*linear, is_feedforward(path));
      adapter->ia3_l.set_requires_grad(trainable);
      linear->set_adapter(kIa3AdapterName, adapter);
      ++attached;
    }
    if (attached == 0) fail("--target_modules: {} match no Linear layer of the model", fmt::join(targets_, ", "));
    train_classifier_head(model, trainable);
  }

  static std::vector<std::pair<std::string, std::shared_ptr<Ia3Adapter>>> adapters(CausalLM& model) {
    std::vector<std::pair<std::string, std::shared_ptr<Ia3Adapter>>> found;
    for (auto& [path, linear] : tuner::linear_modules(model)) {
      if (auto adapter = std::dynamic_pointer_cast<Ia3Adapter>(linear->adapter)) found.emplace_back(path, adapter);
    }
    return found;
  }

  std::vector<std::string> targets_, feedforward_;
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
    train_classifier_head(model, true);
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
                  [](const PluginContext&) { return std::make_shared<FullTuner>(); });
    built_ins.add("lora", "LoRA adapters (--lora_rank, --lora_alpha, --use_rslora, --use_dora, --init_weights); PEFT format",
                  [](const PluginContext&) { return std::make_shared<LoraTuner>(); });
    built_ins.add("freeze", "full-model training of --trainable_parameters prefixes minus --freeze_parameters prefixes",
                  [](const PluginContext& context) { return std::make_shared<FreezeTuner>(context.arguments); });
    built_ins.add("dummy", "identity: every parameter trains, the model is unchanged (a check of the tuner hook)",
                  [](const PluginContext&) { return std::make_shared<FullTuner>(); });
    built_ins.add("ia3", "IA3 vectors scaling k/v outputs and the down_proj input (init 1); PEFT format",
                  [](const PluginContext& context) { return std::make_shared<Ia3Tuner>(context.arguments); });
    return built_ins;
  }();
  return registry;
}

void load_adapter_folder(CausalLM& model, const std::filesystem::path& dir, const Arguments& arguments, bool trainable) {
  const auto config_file = dir / "adapter_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_file, ec)) {
    const auto config = nlohmann::json::parse(read_file(config_file), nullptr, /*allow_exceptions=*/false);
    if (config.is_object() && config.value("peft_type", "") == "IA3") {
      tuner_registry().create("ia3", arguments)->from_pretrained(model, dir, trainable);
      return;
    }
  }
  load_adapter(model, dir, trainable);
}

}  // namespace lathe
