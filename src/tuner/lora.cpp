// LoRA / DoRA adapters (Hu et al. 2021; Liu et al. 2024) with PEFT's forward, initialisation and
// merge rules.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lathe/common/format.h"
#include "lathe/tuner/lora.h"
#include "tuner/dropout.h"
#include "tuner/pissa.h"
#include "lathe/tuner/targets.h"

namespace lathe {
namespace {

// Adapters train in at least float32 whatever the base holds (bfloat16 weights stay frozen).
torch::Dtype adapter_dtype(const torch::Tensor& base_weight) {
  return base_weight.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// Random tensors come from one seeded CPU generator, drawn in model order, so a seed gives the same
// adapter on any device.
void fill_lora_a(torch::Tensor& lora_A, const std::string& init, int64_t r, at::Generator& generator) {
  auto values = torch::empty(lora_A.sizes(), torch::TensorOptions(torch::kFloat64));
  if (init == "gaussian") {
    values.normal_(0.0, 1.0 / static_cast<double>(r), generator);
  } else {
    // torch.nn.Linear's kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound = gain *
    // sqrt(3 / fan_in), which simplifies to 1 / sqrt(fan_in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(lora_A.size(1)));
    values.uniform_(-bound, bound, generator);
  }
  lora_A.copy_(values);
}

}  // namespace

void tuner::initialise_pissa(LoraAdapter& adapter, LinearImpl& base, const std::string& path) {
  const auto r = adapter.lora_A.size(0);
  if (r > std::min(base.in_features, base.out_features))
    fail("{}: PiSSA needs r <= min(in_features, out_features) = {}, got r = {}", path,
         std::min(base.in_features, base.out_features), r);
  const auto weight = base.weight.to(adapter.lora_A.scalar_type());
  auto [U, S, Vh] = torch::linalg_svd(weight, /*full_matrices=*/false);
  const auto root = (S.slice(0, 0, r) / adapter.scaling).sqrt();
  adapter.lora_A.copy_(root.unsqueeze(1) * Vh.slice(0, 0, r));
  adapter.lora_B.copy_(U.slice(1, 0, r) * root.unsqueeze(0));
  adapter.initial_A = adapter.lora_A.detach().clone();
  adapter.initial_B = adapter.lora_B.detach().clone();
  base.weight.copy_(weight - adapter.scaling * adapter.lora_B.mm(adapter.lora_A));
}

namespace {

void initialise(LoraAdapter& adapter, LinearImpl& base, const LoraConfig& config, const std::string& path,
                at::Generator& generator) {
  torch::NoGradGuard no_grad;
  if (config.init == "pissa") {
    tuner::initialise_pissa(adapter, base, path);
  } else {
    fill_lora_a(adapter.lora_A, config.init, config.r, generator);
    adapter.lora_B.zero_();
  }
  if (adapter.use_dora) adapter.lora_magnitude_vector.copy_(adapter.weight_norm(base));
}

std::shared_ptr<LoraAdapter> lora_adapter_of(const LinearImpl& linear) {
  return std::dynamic_pointer_cast<LoraAdapter>(linear.adapter);
}

}  // namespace

bool tuner::is_known_init(const std::string& init) {
  return init == "default" || init == "gaussian" || init == "pissa";
}

double LoraConfig::scaling() const {
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r);
}

void LoraConfig::validate() const {
  if (r < 1) fail("lora_rank (r) must be at least 1, got {}", r);
  if (!std::isfinite(lora_alpha) || lora_alpha <= 0) fail("lora_alpha must be a positive number, got {}", lora_alpha);
  if (!(lora_dropout >= 0 && lora_dropout < 1)) fail("lora_dropout must be in [0, 1), got {}", lora_dropout);
  if (!tuner::is_known_init(init))
    fail("init_weights must be one of default, gaussian, pissa; got {:?}", init);
  if (!target_regex && target_modules.empty()) fail("target_modules is empty; use all-linear, names or a regex");
}

LoraAdapter::LoraAdapter(const LinearImpl& base, const LoraConfig& config)
    : scaling(config.scaling()), dropout(config.lora_dropout), use_dora(config.use_dora) {
  const auto options = torch::TensorOptions(adapter_dtype(base.weight)).device(base.weight.device());
  lora_A = register_parameter("lora_A", torch::zeros({config.r, base.in_features}, options));
  lora_B = register_parameter("lora_B", torch::zeros({base.out_features, config.r}, options));
  if (use_dora) lora_magnitude_vector = register_parameter("lora_magnitude_vector", torch::zeros({base.out_features}, options));
}

torch::Tensor LoraAdapter::weight_norm(const LinearImpl& base) const {
  torch::NoGradGuard no_grad;
  const auto dtype = lora_A.scalar_type();
  return (base.weight.to(dtype) + scaling * lora_B.mm(lora_A)).norm(2, {1});
}

torch::Tensor LoraAdapter::merged_weight(const LinearImpl& base) const {
  torch::NoGradGuard no_grad;
  auto weight = base.weight.to(lora_A.scalar_type()) + scaling * lora_B.mm(lora_A);
  if (use_dora) weight = (lora_magnitude_vector / weight.norm(2, {1})).unsqueeze(1) * weight;
  return weight;
}

torch::Tensor LoraAdapter::forward(LinearImpl& base, const torch::Tensor& x) {
  const auto dtype = lora_A.scalar_type();
  const auto base_output = base.base_forward(x);
  const bool dropping = is_training() && dropout > 0;
  if (!use_dora) {
    // The dropped-out input is made again in backward rather than kept (dropout_then_linear).
    const auto projected = dropping ? dropout_then_linear(x.to(dtype), lora_A, dropout) : torch::linear(x.to(dtype), lora_A);
    return (base_output.to(dtype) + torch::linear(projected, lora_B) * scaling).to(base_output.scalar_type());
  }
  const auto input = dropping ? inverted_dropout(x.to(dtype), dropout) : x.to(dtype);
  const auto lora_output = torch::linear(torch::linear(input, lora_A), lora_B);
  auto result = base_output.to(dtype);

  // DoRA (PEFT): out = base(x) + (m / ||W + sBA|| - 1) * x W^T + (m / ||W + sBA||) * s B A x, the
  // norm detached. With dropout active x W^T is recomputed on the dropped-out input, as PEFT does.
  const auto row_scale = lora_magnitude_vector / weight_norm(base);
  torch::Tensor base_without_bias;
  if (dropping) {
    base_without_bias = torch::linear(input, base.weight.to(dtype));
  } else {
    base_without_bias = result;
    if (base.bias.defined()) base_without_bias = base_without_bias - base.bias.to(dtype);
  }
  result = result + (row_scale - 1) * base_without_bias + row_scale * lora_output * scaling;
  return result.to(base_output.scalar_type());
}

std::vector<std::string> apply_lora(CausalLM& model, const LoraConfig& config, uint64_t seed) {
  config.validate();
  const auto targets = tuner::select_targets(tuner::linear_modules(model), config, "apply_lora");
  for (const auto& [path, linear] : targets)
    if (linear->adapter) fail("{}: already has an adapter ({}); merge or remove it first", path, linear->adapter_name);

  for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::string> paths;
  for (const auto& [path, linear] : targets) {
    auto adapter = std::make_shared<LoraAdapter>(*linear, config);
    initialise(*adapter, *linear, config, path, generator);
    adapter->train(linear->is_training());
    linear->set_adapter(kLoraAdapterName, adapter);
    paths.push_back(path);
  }
  return paths;
}

std::vector<std::string> lora_modules(CausalLM& model) {
  std::vector<std::string> paths;
  for (const auto& [path, linear] : tuner::linear_modules(model))
    if (lora_adapter_of(*linear)) paths.push_back(path);
  return paths;
}

std::vector<std::pair<std::string, torch::Tensor>> lora_parameters(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& [path, linear] : tuner::linear_modules(model))
    if (const auto adapter = lora_adapter_of(*linear))
      for (const auto& item : adapter->named_parameters())
        parameters.emplace_back(fmt::format("{}.{}.{}", path, kLoraAdapterName, item.key()), item.value());
  return parameters;
}

std::vector<std::string> merge_lora(CausalLM& model) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> paths;
  for (const auto& [path, linear] : tuner::linear_modules(model)) {
    const auto adapter = lora_adapter_of(*linear);
    if (!adapter) continue;
    linear->weight.copy_(adapter->merged_weight(*linear));
    linear->remove_adapter();
    paths.push_back(path);
  }
  return paths;
}

}  // namespace lathe
