// Hugging Face model folders: config.json plus safetensors weights.
#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/model/weights.h"

namespace lathe {
namespace {

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: fail("unsupported model dtype {}; supported: float32, bfloat16, float16", c10::toString(dtype));
  }
}

}  // namespace

// A causal LM's config as its sequence classifier's: the same body under the classifier class.
ModelConfig as_classifier(ModelConfig config, const ClassifierConversion& conversion) {
  if (conversion.labels <= 0) fail("a sequence classifier needs at least one label (got {})", conversion.labels);
  config.num_labels = conversion.labels;
  config.architectures.clear();  // to_json names the family's classifier class
  if (!config.pad_token_id) config.pad_token_id = conversion.pad_token_id;
  return config;
}

CausalLM load_pretrained(const std::filesystem::path& dir, torch::Dtype dtype, const ProjectionStorage& projections,
                         const std::optional<ClassifierConversion>& classifier) {
  if (!std::filesystem::is_directory(dir)) fail_not_local("model folder", dir.string());
  const auto config_path = dir / "config.json";
  if (!std::filesystem::exists(config_path)) fail("{}: missing config.json in the model folder", config_path.string());
  dtype_name(dtype);  // refuses what the model cannot run in
  auto config = ModelConfig::load(config_path);
  const bool converts = classifier && !config.num_labels;
  if (converts) config = as_classifier(std::move(config), *classifier);
  CausalLM model(config, dtype, /*random_init=*/false);
  if (projections.dtype) model->hold_projections_in(*projections.dtype, projections.embedding);
  auto tensors = load_tensors(dir);
  if (converts) {
    tensors.erase("lm_head.weight");
    tensors["score.weight"] = torch::randn({*config.num_labels, config.hidden_size}) * 0.02;
  }
  model->load_state(tensors, dir.string());
  return model;
}

std::optional<torch::Dtype> stored_projection_dtype(const std::filesystem::path& dir) {
  std::optional<torch::Dtype> shared;
  for (const auto& [name, tensor] : load_tensors(dir)) {
    const bool projection = name.starts_with("model.layers.") && name.ends_with("_proj.weight");
    if (!projection) continue;
    const auto dtype = tensor.scalar_type();
    if ((dtype != torch::kBFloat16 && dtype != torch::kHalf) || (shared && *shared != dtype)) return std::nullopt;
    shared = dtype;
  }
  return shared;
}

std::optional<torch::Dtype> projection_dtype(const std::string& weight_dtype, const std::string& torch_dtype,
                                             const std::filesystem::path& dir, bool lossless_auto) {
  if (weight_dtype == "auto")
    return lossless_auto && torch_dtype == "float32" ? stored_projection_dtype(dir) : std::nullopt;
  if (weight_dtype == torch_dtype) return std::nullopt;
  if (torch_dtype != "float32")
    fail("--weight_dtype {}: projections are held in another dtype only under --torch_dtype float32 (got {})",
         weight_dtype, torch_dtype);
  if (weight_dtype == "bfloat16") return torch::kBFloat16;
  if (weight_dtype == "float16") return torch::kHalf;
  fail("--weight_dtype: expected auto, float32, bfloat16 or float16, got {:?}", weight_dtype);
}

void save_pretrained(CausalLM& model, const std::filesystem::path& dir, std::size_t max_shard_bytes) {
  std::filesystem::create_directories(dir);
  ModelConfig config = model->config();
  config.torch_dtype = dtype_name(model->named_parameters()["model.embed_tokens.weight"].scalar_type());
  write_file_atomic(dir / "config.json", config.to_json().dump(2) + "\n");

  // Writes model.safetensors, or shards and their index above max_shard_bytes, and removes the
  // files of an earlier save so that the folder never holds two checkpoints.
  save_tensors_sharded(dir, model->state(), max_shard_bytes);
}

}  // namespace lathe
