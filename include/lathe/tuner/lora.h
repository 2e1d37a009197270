#pragma once
// LoRA and DoRA adapters on the model's Linear layers, saved and loaded in PEFT's on-disk format
// (adapter_config.json + adapter_model.safetensors, docs/plugins.md), and merged into the base
// weights for export.
//
// Precision: adapter parameters (lora_A, lora_B, lora_magnitude_vector) are float32 over a
// bfloat16 or float32 base (float64 over a float64 base, for gradient checks), and the adapter
// path is computed in the adapter's dtype: the input is cast to it, the base output is added in it
// and the sum is cast back to the base output's dtype. This is what PEFT does (it casts the input
// to lora_A's dtype), so a bfloat16 run matches PEFT's numerics.
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "lathe/model/model.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 32;
  double lora_dropout = 0.05;
  // Module-name suffixes, matched as PEFT does (the path equals the name or ends with "." + name),
  // or the single entry "all-linear": every Linear except the output head (lm_head).
  std::vector<std::string> target_modules{"all-linear"};
  // When set, replaces target_modules: a regular expression that must match the whole module path
  // (PEFT's string form of target_modules; SWIFT's --target_regex).
  std::optional<std::string> target_regex;
  bool use_rslora = false;  // scaling alpha / sqrt(r) instead of alpha / r
  bool use_dora = false;    // adds a learned magnitude per output row
  // "default": A Kaiming-uniform (as torch.nn.Linear), B zero. "gaussian": A ~ N(0, 1/r), B zero.
  // "pissa": A and B from the top-r singular vectors of W, and W replaced by the residual.
  std::string init = "default";

  double scaling() const;
  // Throws lathe::Error naming the field for r < 1, dropout outside [0, 1), an unknown init, ...
  void validate() const;
};

// The adapter attached to one Linear layer. Its parameters are registered as lora_A [r, in],
// lora_B [out, r] and (DoRA) lora_magnitude_vector [out], zero-filled until initialised or loaded.
class LoraAdapter : public LinearAdapter {
 public:
  LoraAdapter(const LinearImpl& base, const LoraConfig& config);
  torch::Tensor forward(LinearImpl& base, const torch::Tensor& x) override;

  // W + scaling * B A in the adapter's dtype ([out, in]); DoRA additionally rescales each row to
  // its magnitude. Without gradient.
  torch::Tensor merged_weight(const LinearImpl& base) const;
  // ||W + scaling * B A|| per output row [out], without gradient (DoRA's norm, which PEFT detaches
  // from the graph as the DoRA paper suggests).
  torch::Tensor weight_norm(const LinearImpl& base) const;

  torch::Tensor lora_A, lora_B, lora_magnitude_vector;  // magnitude undefined without DoRA
  // PiSSA: lora_A / lora_B as initialised (not parameters), for saving the converted form.
  torch::Tensor initial_A, initial_B;
  double scaling;
  double dropout;
  bool use_dora;
};

// The name under which LoraAdapter is registered on a Linear, so model parameters are called
// `<module path>.lora.lora_A` and so on.
inline constexpr const char* kLoraAdapterName = "lora";

// Freezes every base parameter, attaches a LoraAdapter to each targeted Linear and initialises it
// (seeded; DoRA magnitudes start at the row norms of W + scaling B A). Returns the adapted module
// paths in model order. Throws lathe::Error when nothing matches (naming what was asked and the
// available Linear modules), for an invalid regex, or when a layer already has an adapter.
std::vector<std::string> apply_lora(CausalLM& model, const LoraConfig& config, uint64_t seed);

// Paths of the Linear modules that currently carry a LoraAdapter, in model order.
std::vector<std::string> lora_modules(CausalLM& model);

// The trainable adapter parameters by name (as named_parameters() spells them).
std::vector<std::pair<std::string, torch::Tensor>> lora_parameters(CausalLM& model);

// PEFT's safetensors keys: `base_model.model.<path>.lora_A.weight`, `.lora_B.weight`,
// `.lora_magnitude_vector` (DoRA), mapped to the adapter tensors (float32, on the model's device).
// The tensors share storage with the parameters (detached views), so copying into them restores a
// saved adapter in place, as resuming from a checkpoint does.
std::map<std::string, torch::Tensor> adapter_state(CausalLM& model);

// adapter_config.json as PEFT writes it for this config. target_modules is the regex string, or
// the sorted list of requested names that matched (all-linear: the matched layer names).
nlohmann::json peft_adapter_config(const LoraConfig& config, const std::vector<std::string>& adapted_modules,
                                   const std::string& base_model_name_or_path);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors atomically (the folder is filled
// under a temporary name and renamed). A PiSSA adapter is saved as PEFT and ms-swift save it: as it
// is (init_lora_weights "pissa": PEFT and Lathe redo the SVD of the original weights when loading
// it, and training resumes from it), and converted under dir/converted/default/, as ms-swift writes
// it: B A - B0 A0 as a plain LoRA of rank 2r on the original weights (A' = [A; A0],
// B' = [B, -B0], alpha doubled, or times sqrt 2 with rsLoRA, so the scaling stays), which any LoRA
// reader can apply or merge. (DoRA's magnitudes have no such form; a PiSSA DoRA adapter is saved
// as it is only.)
void save_adapter(CausalLM& model, const std::filesystem::path& dir, const LoraConfig& config,
                  const std::string& base_model_name_or_path);
// The same two files written (each atomically) into an existing folder, for a caller that builds a
// larger folder atomically itself (a checkpoint with tokenizer copies and trainer state).
void write_adapter_files(CausalLM& model, const std::filesystem::path& dir, const LoraConfig& config,
                         const std::string& base_model_name_or_path);

// A sequence classifier's score head trains whole beside its adapter and is saved with it, as
// PEFT's modules_to_save for task_type SEQ_CLS: under this key, with adapter_config.json saying
// task_type "SEQ_CLS" and modules_to_save ["score"].
inline constexpr const char* kClassifierHeadKey = "base_model.model.score.weight";
// Marks a written adapter_config.json as a classifier's when the model is one.
void mark_classifier_adapter(nlohmann::json& adapter_config, CausalLM& model);
// A classifier's score head from an adapter file's tensors (checked against the model's shape),
// trainable when `trainable`; an error naming `file` when a classifier's file lacks it or a causal
// LM's has it. Nothing for a causal LM's adapter.
void load_classifier_head(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors, const std::string& file,
                          bool trainable);
// The label count of the classifier an adapter folder was trained on (task_type SEQ_CLS: the rows
// of its saved score head), or nullopt for a causal LM's adapter; its base loads with
// load_pretrained(..., classifier_labels).
std::optional<int64_t> adapter_classifier_labels(const std::filesystem::path& dir);

struct LoadedAdapter {
  LoraConfig config;
  std::string base_model_name_or_path;
  std::vector<std::string> modules;  // adapted module paths
};

// Reads a PEFT LoRA/DoRA adapter folder and attaches it to `model` (base parameters frozen; adapter
// parameters require gradients when `trainable`). A PiSSA adapter (init_lora_weights "pissa")
// first turns each targeted weight into its residual, as PEFT's loading does. Errors name the file and the field or tensor key:
// a missing file, an unknown peft_type, unsupported options, missing or mis-shaped tensors, keys
// for modules the model does not have.
LoadedAdapter load_adapter(CausalLM& model, const std::filesystem::path& dir, bool trainable);

// Folds every adapter into its base weight (W + scaling B A; DoRA: m * (W + s B A) / ||W + s B A||
// per row), in float32 and then back to the weight's dtype, and removes the adapters. Returns the
// merged module paths.
std::vector<std::string> merge_lora(CausalLM& model);

}  // namespace lathe

LATHE_API_END
