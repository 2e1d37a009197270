#pragma once
// Tuner plugins (`--train_type name`, docs/plugins.md): decide which parameters train, and how the
// trained part is saved and loaded (adapters in PEFT's format, or the full model).
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class Tuner {
 public:
  virtual ~Tuner() = default;
  // Sets which parameters train (and attaches adapters). Called once, before the optimizer exists.
  virtual void prepare_model(const Arguments& arguments, CausalLM& model) = 0;
  // Writes what was trained into `dir` (an adapter, or a full Hugging Face model folder).
  virtual void save_pretrained(CausalLM& model, const std::filesystem::path& dir, const Arguments& arguments) = 0;
  // Loads what save_pretrained wrote (for --adapters and for resuming).
  virtual void from_pretrained(CausalLM& model, const std::filesystem::path& dir, bool trainable) = 0;
  // True when save_pretrained writes a complete model (then configs are copied next to it).
  virtual bool saves_full_model() const { return false; }
};

using TunerFactory = std::function<std::shared_ptr<Tuner>(const PluginContext& context)>;
Registry<TunerFactory>& tuner_registry();

// Loads a PEFT adapter folder onto `model` with the tuner of its kind (adapter_config.json's
// peft_type): IA3 vectors, else LoRA (with DoRA and PiSSA).
void load_adapter_folder(CausalLM& model, const std::filesystem::path& dir, const Arguments& arguments, bool trainable);

}  // namespace lathe

LATHE_API_END
