// A tuner plugin registered as "ia3_example": IA3 (Liu et al. 2022), written only against Lathe's
// public headers. Each targeted Linear gets a learned vector, initialised to ones, that scales
// its output (attention keys and values) or its input (the MLP's down projection); everything
// else is frozen. Adapters are saved in PEFT's IA3 format, so `peft` can load them too.
//
//   lathe sft ... --external_plugins examples/plugins/tuner/ia3_tuner.cpp --train_type ia3_example
//
// Which layers: --target_modules names (a layer matches when its path ends in ".name"); the
// default all-linear means PEFT's choice for Llama-like models: k_proj, v_proj and down_proj.
#include <lathe/common/error.h>
#include <lathe/common/files.h>
#include <lathe/plugin.h>
#include <lathe/plugin/tuner.h>
#include <lathe/model/weights.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

namespace {
namespace fs = std::filesystem;

constexpr const char* kAdapterName = "ia3";  // parameters are named <layer>.ia3.ia3_l

// The scaling vector of one Linear, shaped as PEFT stores it: [out, 1] for an output scale,
// [1, in] for an input scale. It is kept in float32 (or float64 for float64 models) whatever the
// dtype of the base weight, because a bfloat16 vector near 1 cannot learn small updates.
class Ia3Vector : public lathe::LinearAdapter {
 public:
  Ia3Vector(const lathe::LinearImpl& base, bool scales_input) : scales_input_(scales_input) {
    const bool wide = base.weight.scalar_type() == torch::kFloat64;
    const auto options = base.weight.options().dtype(wide ? torch::kFloat64 : torch::kFloat32);
    const auto shape = scales_input ? std::vector<int64_t>{1, base.in_features} : std::vector<int64_t>{base.out_features, 1};
    vector = register_parameter("ia3_l", torch::ones(shape, options));
  }

  torch::Tensor forward(lathe::LinearImpl& base, const torch::Tensor& x) override {
    const auto scale = vector.flatten();
    if (scales_input_) return base.base_forward((x.to(scale.scalar_type()) * scale).to(x.scalar_type()));
    const auto output = base.base_forward(x);
    return (output.to(scale.scalar_type()) * scale).to(output.scalar_type());
  }

  torch::Tensor vector;

 private:
  bool scales_input_;
};

using NamedVector = std::pair<std::string, std::shared_ptr<Ia3Vector>>;

bool path_ends_with(const std::string& path, const std::string& name) {
  return path == name || (path.size() > name.size() && path.ends_with("." + name));
}

// PEFT's convention: a feed-forward layer is scaled on its input.
bool is_feedforward(const std::string& path) { return path.find(".mlp.") != std::string::npos; }

std::string peft_key(const std::string& path) { return "base_model.model." + path + ".ia3_l"; }

class Ia3ExampleTuner : public lathe::Tuner {
 public:
  explicit Ia3ExampleTuner(const lathe::Arguments& arguments) {
    const bool all_linear = arguments.target_modules == std::vector<std::string>{"all-linear"};
    targets_ = all_linear ? std::vector<std::string>{"k_proj", "v_proj", "down_proj"} : arguments.target_modules;
  }

  void prepare_model(const lathe::Arguments&, lathe::CausalLM& model) override { attach(model, /*trainable=*/true); }

  void save_pretrained(lathe::CausalLM& model, const fs::path& dir, const lathe::Arguments& arguments) override {
    std::map<std::string, torch::Tensor> tensors;
    std::vector<std::string> feedforward;
    for (const auto& [path, adapter] : vectors(model)) tensors[peft_key(path)] = adapter->vector.detach();
    for (const auto& name : targets_)
      if (name == "down_proj" || name.find("mlp") != std::string::npos) feedforward.push_back(name);
    const nlohmann::json config = {{"peft_type", "IA3"},           {"task_type", "CAUSAL_LM"},
                                   {"target_modules", targets_},   {"feedforward_modules", feedforward},
                                   {"base_model_name_or_path", arguments.model},
                                   {"fan_in_fan_out", false},      {"init_ia3_weights", true},
                                   {"inference_mode", true},       {"modules_to_save", nullptr}};
    fs::create_directories(dir);
    lathe::write_file_atomic(dir / "adapter_config.json", config.dump(2));
    lathe::save_tensors(dir / "adapter_model.safetensors", tensors);
  }

  void from_pretrained(lathe::CausalLM& model, const fs::path& dir, bool trainable) override {
    const auto config_file = dir / "adapter_config.json";
    const auto config = nlohmann::json::parse(lathe::read_file(config_file));
    if (config.value("peft_type", "") != "IA3") throw lathe::Error(config_file.string() + ": peft_type is not \"IA3\"");
    // Loading for inference attaches the saved targets; resuming finds the vectors already there.
    if (vectors(model).empty()) {
      targets_ = config.at("target_modules").get<std::vector<std::string>>();
      attach(model, trainable);
    }
    const auto file = dir / "adapter_model.safetensors";
    const auto saved = lathe::load_tensors(file);
    torch::NoGradGuard no_grad;
    for (const auto& [path, adapter] : vectors(model)) {
      const auto found = saved.find(peft_key(path));
      if (found == saved.end()) throw lathe::Error(file.string() + ": missing tensor '" + peft_key(path) + "'");
      if (found->second.sizes() != adapter->vector.sizes()) {
        throw lathe::Error(file.string() + ": tensor '" + peft_key(path) + "' has the wrong shape");
      }
      adapter->vector.copy_(found->second);
      adapter->vector.set_requires_grad(trainable);
    }
  }

 private:
  void attach(lathe::CausalLM& model, bool trainable) {
    for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
    int attached = 0;
    for (const auto& item : model->named_modules("", /*include_self=*/false)) {
      auto linear = std::dynamic_pointer_cast<lathe::LinearImpl>(item.value());
      const auto& path = item.key();
      if (!linear || std::none_of(targets_.begin(), targets_.end(), [&](const auto& name) { return path_ends_with(path, name); }))
        continue;
      auto adapter = std::make_shared<Ia3Vector>(*linear, is_feedforward(path));
      adapter->vector.set_requires_grad(trainable);
      linear->set_adapter(kAdapterName, adapter);
      ++attached;
    }
    if (attached == 0) throw lathe::Error("--target_modules: no Linear layer of the model matches");
  }

  static std::vector<NamedVector> vectors(lathe::CausalLM& model) {
    std::vector<NamedVector> found;
    for (const auto& item : model->named_modules("", /*include_self=*/false)) {
      auto linear = std::dynamic_pointer_cast<lathe::LinearImpl>(item.value());
      if (!linear) continue;
      if (auto adapter = std::dynamic_pointer_cast<Ia3Vector>(linear->adapter)) found.emplace_back(item.key(), adapter);
    }
    return found;
  }

  std::vector<std::string> targets_;
};

}  // namespace

LATHE_PLUGIN() {
  lathe::tuner_registry().add("ia3_example", "IA3 vectors on k/v outputs and the down_proj input (example plugin)",
                              [](const lathe::Arguments& arguments) { return std::make_shared<Ia3ExampleTuner>(arguments); });
}
