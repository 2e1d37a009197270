// Tuner plugins (plugins.md §7). The registry and its built-ins are at the bottom.
#include "lathe/plugin/tuner.h"

#include "common/format.h"
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

}  // namespace

Registry<TunerFactory>& tuner_registry() {
  static Registry<TunerFactory> registry = [] {
    Registry<TunerFactory> built_ins("tuner");
    built_ins.add("full", "train every parameter; checkpoints are full model folders",
                  [](const Arguments&) { return std::make_shared<FullTuner>(); });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
