// The decoder-only transformer shared by Llama, Mistral, Qwen2 and Qwen3, laid out module by
// module with Hugging Face's names, so named_parameters() are the checkpoint's tensor names.
// Every step follows transformers' eager implementation where it decides the rounding: RMSNorm in
// float32 then cast back before the weight, RoPE angles in float32, softmax in float32.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>
#include <map>
#include <numbers>
#include <numeric>
#include <set>
#include <tuple>

#include "lathe/common/format.h"
#include "lathe/model/model.h"
#include "lathe/model/rope.h"
#include "lathe/model/weights.h"
#include "model/fused_ops.h"
#include "model/matvec16.h"

namespace lathe {
namespace {

// Set while a CausalLM is built for loading, so its parameters are allocated but not filled.
thread_local bool skip_initialisation = false;

class SkipInitialisation {
 public:
  explicit SkipInitialisation(bool skip) : previous_(skip_initialisation) { skip_initialisation = skip; }
  ~SkipInitialisation() { skip_initialisation = previous_; }
  SkipInitialisation(const SkipInitialisation&) = delete;
  SkipInitialisation& operator=(const SkipInitialisation&) = delete;

 private:
  bool previous_;
};

std::string shape_string(c10::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t size, double eps, const torch::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", torch::ones({size}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fused::rms_norm(x, weight, eps_);
  }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t count, int64_t size, const torch::TensorOptions& options) {
    weight = register_parameter("weight", torch::empty({count, size}, options));
  }
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// The most negative finite score: a query with no key left (a padding query) then spreads evenly
// instead of producing NaN, as transformers' eager attention does.
at::Scalar lowest_score(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16: return std::numeric_limits<c10::BFloat16>::lowest();
    case torch::kFloat16: return std::numeric_limits<c10::Half>::lowest();
    case torch::kFloat64: return std::numeric_limits<double>::lowest();
    default: return std::numeric_limits<float>::lowest();
  }
}

// cos and sin of the rotary angles, [batch, 1, seq, head_dim], in the activations' dtype.
struct Rotary {
  torch::Tensor cos, sin;
};

torch::Tensor apply_rotary(const torch::Tensor& x, const Rotary& rotary) {
  return fused::rotary(x, rotary.cos, rotary.sin);
}

}  // namespace

// As transformers computes them, in float32 (its modeling_rope_utils).
torch::Tensor inverse_frequencies(const ModelConfig& config, int64_t seq_len) {
  const auto dim = config.head_dim;
  const RopeScaling& scaling = config.rope_scaling;
  const auto exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / dim;
  double theta = config.rope_theta;
  if (scaling.type == "dynamic" && seq_len > config.max_position_embeddings) {
    // NTK-aware: the base grows with the context beyond the trained one (transformers'
    // _compute_dynamic_ntk_parameters, recomputed for each longer forward pass as it does).
    const double ratio = scaling.factor * static_cast<double>(seq_len) / static_cast<double>(config.max_position_embeddings);
    theta *= std::pow(ratio - (scaling.factor - 1), static_cast<double>(dim) / static_cast<double>(dim - 2));
  }
  auto inv_freq = 1.0 / torch::pow(theta, exponents);
  if (scaling.type == "linear") return inv_freq / scaling.factor;
  if (scaling.type == "longrope") {
    const auto& factors = seq_len > scaling.original_max_position_embeddings ? scaling.long_factor : scaling.short_factor;
    return inv_freq / torch::tensor(factors, torch::kFloat64).to(torch::kFloat32);
  }
  if (scaling.type == "yarn") {
    // YaRN: high frequencies kept (extrapolated), low ones divided by `factor` (interpolated), a
    // linear ramp between the dimensions that turn beta_fast and beta_slow times over the
    // original context.
    const double base = config.rope_theta, original = static_cast<double>(scaling.original_max_position_embeddings);
    auto correction_dim = [&](double rotations) {
      return (static_cast<double>(dim) * std::log(original / (rotations * 2 * std::numbers::pi))) / (2 * std::log(base));
    };
    double low = correction_dim(scaling.beta_fast), high = correction_dim(scaling.beta_slow);
    if (scaling.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;
    const auto ramp = ((torch::arange(dim / 2, torch::kFloat32) - low) / (high - low)).clamp(0, 1);
    const auto extrapolation = 1 - ramp;
    return (inv_freq / scaling.factor) * (1 - extrapolation) + inv_freq * extrapolation;
  }
  if (scaling.type != "llama3") return inv_freq;
  // Llama 3: long wavelengths are slowed by `factor`, short ones kept, the band between them
  // interpolated smoothly (transformers' _compute_llama3_parameters).
  const double old_context = static_cast<double>(scaling.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / scaling.low_freq_factor;
  const double high_freq_wavelen = old_context / scaling.high_freq_factor;
  const auto wavelen = 2 * std::numbers::pi / inv_freq;
  auto scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq);
  const auto smooth = (old_context / wavelen - scaling.low_freq_factor) /
                      (scaling.high_freq_factor - scaling.low_freq_factor);
  const auto smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled;
  const auto medium = wavelen.ge(high_freq_wavelen).logical_and(wavelen.le(low_freq_wavelen));
  return torch::where(medium, smoothed, scaled);
}

double rotary_attention_scale(const ModelConfig& config) {
  const RopeScaling& scaling = config.rope_scaling;
  if (scaling.attention_factor) return *scaling.attention_factor;
  if (scaling.type == "yarn") {
    auto mscale = [&](double m) { return scaling.factor <= 1 ? 1.0 : 0.1 * m * std::log(scaling.factor) + 1.0; };
    if (scaling.mscale && scaling.mscale_all_dim && *scaling.mscale != 0 && *scaling.mscale_all_dim != 0)
      return mscale(*scaling.mscale) / mscale(*scaling.mscale_all_dim);
    return mscale(1.0);
  }
  if (scaling.type == "longrope" && scaling.factor > 1) {
    return std::sqrt(1 + std::log(scaling.factor) / std::log(static_cast<double>(scaling.original_max_position_embeddings)));
  }
  return 1.0;
}

namespace {

// Which keys each query may see: `blocked` (bool [batch|1, 1, seq, keys], true where a query must
// not look; undefined = none), or, when sequence_lengths is set, packed sequences in one row that
// each attend causally within themselves.
struct KeyVisibility {
  torch::Tensor blocked;
  std::vector<int64_t> sequence_lengths;
  // Sliding-window layers also block the keys `window` or more columns before the query (in a row,
  // real tokens are contiguous, so columns apart are positions apart).
  int64_t window = 0;
  const std::vector<bool>* sliding_layers = nullptr;

  bool slides(size_t layer) const { return window > 0 && sliding_layers && (*sliding_layers)[layer]; }

  // The additive form attention adds to its scores inside the score GEMM, [batch|1, groups * seq,
  // keys] for `groups` query heads per kv head (the queries are the last `seq` of `keys` columns),
  // with the window when `sliding`. Built by the first layer that asks and reused by the others.
  torch::Tensor grouped_bias(int64_t groups, torch::ScalarType dtype, const torch::Device& device, int64_t seq,
                             int64_t keys, bool sliding) const;
  mutable std::map<std::tuple<torch::ScalarType, bool>, torch::Tensor> bias_cache = {};
};

// The default mask: causal over the cache plus the new tokens; none for a single new token.
torch::Tensor causal_blocked(int64_t past, int64_t seq, const torch::Device& device) {
  if (seq == 1) return {};
  const auto queries = torch::arange(past, past + seq, torch::TensorOptions(torch::kInt64).device(device));
  const auto keys = torch::arange(past + seq, torch::TensorOptions(torch::kInt64).device(device));
  return keys.view({1, 1, 1, -1}).gt(queries.view({1, 1, -1, 1}));
}

// Keys `window` or more columns before their query, [1, 1, seq, keys] (the queries are the last
// `seq` columns); undefined when every key is within the window.
torch::Tensor outside_window(int64_t seq, int64_t keys, int64_t window, const torch::Device& device) {
  if (keys <= window) return {};
  const auto options = torch::TensorOptions(torch::kInt64).device(device);
  const auto queries = torch::arange(keys - seq, keys, options);
  return queries.view({1, 1, -1, 1}) - torch::arange(keys, options).view({1, 1, 1, -1}) >= window;
}

torch::Tensor KeyVisibility::grouped_bias(int64_t groups, torch::ScalarType dtype, const torch::Device& device,
                                          int64_t seq, int64_t keys, bool sliding) const {
  auto& bias = bias_cache[{dtype, sliding}];
  if (bias.defined()) return bias;
  auto mask = blocked;
  if (sliding) {
    const auto far = outside_window(seq, keys, window, device);
    if (far.defined()) mask = mask.defined() ? mask.logical_or(far) : far;
  }
  if (!mask.defined()) return bias;
  const auto rows = mask.size(0), queries = mask.size(2), columns = mask.size(3);
  bias = torch::zeros(mask.sizes(), torch::TensorOptions(dtype).device(device))
             .masked_fill_(mask, lowest_score(dtype))
             .expand({rows, groups, queries, columns})
             .reshape({rows, groups * queries, columns});
  return bias;
}

// Projections that read the same input (q, k and v; gate and up). While decoding a few rows with
// plain 16-bit weights they go through one call of the matrix-vector kernel, one wake of the
// thread pool instead of one per projection; otherwise each projection runs on its own.
std::vector<torch::Tensor> project_together(const torch::Tensor& x, const std::vector<LinearImpl*>& linears) {
  const auto dtype = linears[0]->weight.scalar_type();
  bool together = (dtype == torch::kBFloat16 || dtype == torch::kHalf) && x.scalar_type() == torch::kFloat32 &&
                  x.numel() <= fused::kMatvecMaxRows * x.size(-1) && !torch::GradMode::is_enabled() &&
                  !at::autocast::is_cpu_enabled() && fused::matvec16_available();
  for (const auto* linear : linears)
    together = together && (!linear->adapter || AdaptersBypassed::active()) && linear->weight.scalar_type() == dtype &&
               linear->weight.is_contiguous();
  std::vector<torch::Tensor> outputs;
  if (!together) {
    for (auto* linear : linears) outputs.push_back(linear->forward(x));
    return outputs;
  }
  std::vector<torch::Tensor> weights;
  for (const auto* linear : linears) weights.push_back(linear->weight);
  outputs = fused::matvec16(x.reshape({-1, x.size(-1)}).contiguous(), weights);
  for (size_t i = 0; i < linears.size(); ++i) {
    if (linears[i]->bias.defined()) outputs[i].add_(linears[i]->bias.to(torch::kFloat32));
    auto sizes = x.sizes().vec();
    sizes.back() = linears[i]->out_features;
    outputs[i] = outputs[i].view(sizes);
  }
  return outputs;
}

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const torch::TensorOptions& options)
      : heads_(config.num_attention_heads), kv_heads_(config.num_key_value_heads), head_dim_(config.head_dim) {
    // Qwen2 has q/k/v biases but none on o_proj; Llama's attention_bias covers all four.
    const bool o_bias = config.attention_bias && config.model_type != "qwen2";
    q_proj = register_module("q_proj", Linear(config.hidden_size, heads_ * head_dim_, config.attention_bias, options));
    k_proj = register_module("k_proj", Linear(config.hidden_size, kv_heads_ * head_dim_, config.attention_bias, options));
    v_proj = register_module("v_proj", Linear(config.hidden_size, kv_heads_ * head_dim_, config.attention_bias, options));
    o_proj = register_module("o_proj", Linear(heads_ * head_dim_, config.hidden_size, o_bias, options));
    if (config.qk_norm) {
      q_norm = register_module("q_norm", RMSNorm(head_dim_, config.rms_norm_eps, options));
      k_norm = register_module("k_norm", RMSNorm(head_dim_, config.rms_norm_eps, options));
    }
  }

  torch::Tensor forward(const torch::Tensor& x, const Rotary& rotary, const KeyVisibility& visibility,
                        KVCache* cache, size_t layer) {
    const auto batch = x.size(0), seq = x.size(1);
    const auto qkv = project_together(x, {q_proj.get(), k_proj.get(), v_proj.get()});
    auto q = qkv[0].view({batch, seq, heads_, head_dim_});
    auto k = qkv[1].view({batch, seq, kv_heads_, head_dim_});
    auto v = qkv[2].view({batch, seq, kv_heads_, head_dim_});
    if (q_norm) {
      q = q_norm(q);
      k = k_norm(k);
    }
    if (!visibility.sequence_lengths.empty()) return o_proj(attend_packed(q, k, v, rotary, visibility, layer));
    q = apply_rotary(q.transpose(1, 2), rotary);
    k = apply_rotary(k.transpose(1, 2), rotary);
    v = v.transpose(1, 2);
    if (cache) std::tie(k, v) = cache->append(layer, k, v);
    const auto groups = heads_ / kv_heads_;
    // Under autocast the score GEMM runs in the autocast dtype whatever q's; the bias is built in it.
    const auto score_dtype = at::autocast::is_cpu_enabled() ? at::autocast::get_autocast_cpu_dtype() : q.scalar_type();
    return o_proj(attend(q, k, v,
                         visibility.grouped_bias(groups, score_dtype, x.device(), seq, k.size(2), visibility.slides(layer))));
  }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  // Packed sequences in one row, q [1, tokens, heads, head_dim], k and v [1, tokens, kv_heads,
  // head_dim]: each sequence attends causally on its own (fused::causal_attention, which skips the
  // keys a block of queries cannot see and keeps no scores), the contexts laid end to end.
  torch::Tensor attend_packed(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const Rotary& rotary, const KeyVisibility& visibility, size_t layer) {
    // The rotary tables are [1, 1, tokens, head_dim]; here the heads come after the tokens.
    const Rotary per_token{rotary.cos.transpose(1, 2), rotary.sin.transpose(1, 2)};
    const auto rotated_q = apply_rotary(q, per_token)[0], rotated_k = apply_rotary(k, per_token)[0];
    const auto window = visibility.slides(layer) ? visibility.window : 0;
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    std::vector<torch::Tensor> contexts;
    contexts.reserve(visibility.sequence_lengths.size());
    int64_t start = 0;
    for (const auto length : visibility.sequence_lengths) {
      contexts.push_back(fused::causal_attention(rotated_q.narrow(0, start, length), rotated_k.narrow(0, start, length),
                                                 v[0].narrow(0, start, length), scale, window));
      start += length;
    }
    return (contexts.size() == 1 ? contexts[0] : torch::cat(contexts, 0)).unsqueeze(0);
  }

  // q [batch, heads, seq, head_dim], k and v [batch, kv_heads, keys, head_dim], bias from
  // KeyVisibility::grouped_bias (or undefined) -> the attention context [batch, seq, heads * head_dim].
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& bias) {
    RECORD_USER_SCOPE("lathe::attention");
    const auto batch = q.size(0), seq = q.size(2), keys = k.size(2);
    // Grouped-query attention without repeating k/v: the query heads sharing a kv head are
    // stacked along the sequence axis, [batch * kv_heads, groups * seq, head_dim].
    const auto groups = heads_ / kv_heads_;
    const auto grouped_q = q.reshape({batch * kv_heads_, groups * seq, head_dim_});
    const auto keys_t = k.reshape({batch * kv_heads_, keys, head_dim_}).transpose(1, 2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    // The scale and the mask go into the score GEMM (alpha and the added input) rather than
    // through two more passes over [groups * seq, keys] forward and two backward.
    torch::Tensor scores;
    if (bias.defined()) {
      const auto rows_bias = bias.size(0) == 1 ? bias
                                               : bias.unsqueeze(1)
                                                     .expand({batch, kv_heads_, groups * seq, keys})
                                                     .reshape({batch * kv_heads_, groups * seq, keys});
      scores = torch::baddbmm(rows_bias, grouped_q, keys_t, /*beta=*/1.0, /*alpha=*/scale);
    } else {
      scores = torch::bmm(grouped_q * scale, keys_t);
    }
    // bfloat16 softmax accumulates in float32 inside the kernel: the same probabilities as
    // softmax in float32 and a cast, without the two extra passes. Half has no CPU kernel.
    const auto probabilities = scores.scalar_type() == torch::kHalf
                                   ? torch::softmax(scores, -1, torch::kFloat32).to(torch::kHalf)
                                   : torch::softmax(scores, -1);
    return torch::bmm(probabilities, v.reshape({batch * kv_heads_, keys, head_dim_}))
        .view({batch, heads_, seq, head_dim_})
        .transpose(1, 2)
        .reshape({batch, seq, heads_ * head_dim_});
  }

  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, const torch::TensorOptions& options) {
    gate_proj = register_module("gate_proj", Linear(config.hidden_size, config.intermediate_size, false, options));
    up_proj = register_module("up_proj", Linear(config.hidden_size, config.intermediate_size, false, options));
    down_proj = register_module("down_proj", Linear(config.intermediate_size, config.hidden_size, false, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto gate_up = project_together(x, {gate_proj.get(), up_proj.get()});
    return down_proj(fused::swiglu(gate_up[0], gate_up[1]));
  }
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, const torch::TensorOptions& options) {
    self_attn = register_module("self_attn", Attention(config, options));
    mlp = register_module("mlp", Mlp(config, options));
    input_layernorm = register_module("input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
    post_attention_layernorm =
        register_module("post_attention_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
  }
  torch::Tensor forward(const torch::Tensor& x, const Rotary& rotary, const KeyVisibility& visibility,
                        KVCache* cache, size_t layer) {
    const auto h = x + self_attn(input_layernorm(x), rotary, visibility, cache, layer);
    return h + mlp(post_attention_layernorm(h));
  }
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

class DecoderImpl : public torch::nn::Module {
 public:
  DecoderImpl(const ModelConfig& config, const torch::TensorOptions& options) {
    embed_tokens = register_module("embed_tokens", Embedding(config.vocab_size, config.hidden_size, options));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      auto layer = DecoderLayer(config, options);
      layers->push_back(layer);
      layer_list.push_back(layer);
    }
    norm = register_module("norm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
  }
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<DecoderLayer> layer_list;  // typed view of `layers`
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Decoder);

void initialise_like_transformers(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters()) {
    const auto& name = item.key();
    auto& parameter = item.value();
    const bool is_norm = name.ends_with("norm.weight");
    if (is_norm) parameter.fill_(1.0);
    else if (name.ends_with(".bias")) parameter.zero_();
    else parameter.normal_(0.0, 0.02);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Linear with an adapter hook.

namespace {

// x W^T + b. One row (decoding one sequence) goes through a matrix-vector product: as a GEMM with
// a single row, OpenBLAS first copies all of W into its packed layout, which for the 151,936 x 512
// head doubled the memory traffic of every decoded token. Only without autocast (which casts
// linear's operands but not mv's) and outside autograd, so training keeps torch::linear. Only in
// float32 and float64: libtorch's bfloat16 mv sums in bfloat16, which made every decoded token's
// logits 2.5x further from float32 than a GEMM's (checked against transformers' own bfloat16).
bool is_16bit(torch::ScalarType dtype) { return dtype == torch::kBFloat16 || dtype == torch::kHalf; }

torch::Tensor project(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  // A weight held in 16 bits under float computation (CausalLMImpl::hold_projections_in).
  if (is_16bit(weight.scalar_type()) && !is_16bit(x.scalar_type()) && !at::autocast::is_cpu_enabled())
    return fused::linear16(x, weight, bias);
  const bool exact_sums = x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64;
  const bool one_row = exact_sums && x.dim() >= 1 && x.numel() == x.size(-1) && x.dtype() == weight.dtype();
  if (!one_row || torch::GradMode::is_enabled() || at::autocast::is_cpu_enabled())
    return torch::linear(x, weight, bias);
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  auto out = torch::mv(weight, x.reshape({-1}));
  if (bias.defined()) out.add_(bias);
  return out.view(sizes);
}

}  // namespace

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool bias, const torch::TensorOptions& options)
    : in_features(in_features), out_features(out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, options));
  if (bias) this->bias = register_parameter("bias", torch::empty({out_features}, options));
  if (skip_initialisation) return;
  torch::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight.uniform_(-bound, bound);
  if (bias) this->bias.uniform_(-bound, bound);
}

namespace {
thread_local bool adapters_bypassed = false;
}  // namespace

AdaptersBypassed::AdaptersBypassed() : previous_(adapters_bypassed) { adapters_bypassed = true; }
AdaptersBypassed::~AdaptersBypassed() { adapters_bypassed = previous_; }
bool AdaptersBypassed::active() { return adapters_bypassed; }

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  return adapter && !adapters_bypassed ? adapter->forward(*this, x) : base_forward(x);
}

torch::Tensor LinearImpl::base_forward(const torch::Tensor& x) { return project(x, weight, bias); }

void LinearImpl::set_adapter(const std::string& name, std::shared_ptr<LinearAdapter> new_adapter) {
  remove_adapter();
  adapter = register_module(name, std::move(new_adapter));
  adapter_name = name;
}

void LinearImpl::remove_adapter() {
  if (!adapter) return;
  unregister_module(adapter_name);
  adapter.reset();
  adapter_name.clear();
}

// ---------------------------------------------------------------------------------------------

void KVCache::clear() {
  keys.clear();
  values.clear();
  key_buffers_.clear();
  value_buffers_.clear();
}

void KVCache::select_rows(const torch::Tensor& rows) {
  for (size_t layer = 0; layer < keys.size(); ++layer) {
    if (!keys[layer].defined()) continue;
    const auto length = keys[layer].size(2);
    key_buffers_[layer] = key_buffers_[layer].index_select(0, rows);
    value_buffers_[layer] = value_buffers_[layer].index_select(0, rows);
    keys[layer] = key_buffers_[layer].narrow(2, 0, length);
    values[layer] = value_buffers_[layer].narrow(2, 0, length);
  }
}

namespace {
// `a`'s rows then `b`'s, each right-aligned in a zeroed [rows, heads, length, head_dim] tensor.
torch::Tensor stack_left_padded(const torch::Tensor& a, const torch::Tensor& b, int64_t length) {
  auto sizes = a.sizes().vec();
  sizes[0] = a.size(0) + b.size(0);
  sizes[2] = length;
  auto stacked = torch::zeros(sizes, a.options());
  stacked.narrow(0, 0, a.size(0)).narrow(2, length - a.size(2), a.size(2)).copy_(a);
  stacked.narrow(0, a.size(0), b.size(0)).narrow(2, length - b.size(2), b.size(2)).copy_(b);
  return stacked;
}
}  // namespace

void KVCache::append_rows(const KVCache& other) {
  if (other.length() == 0) return;
  if (length() == 0) {
    *this = other;
    return;
  }
  TORCH_CHECK(keys.size() == other.keys.size(), "append_rows: caches of ", keys.size(), " and ",
              other.keys.size(), " layers");
  const auto common = std::max(length(), other.length());
  for (size_t layer = 0; layer < keys.size(); ++layer) {
    key_buffers_[layer] = stack_left_padded(keys[layer], other.keys[layer], common);
    value_buffers_[layer] = stack_left_padded(values[layer], other.values[layer], common);
    keys[layer] = key_buffers_[layer];
    values[layer] = value_buffers_[layer];
  }
}

void KVCache::drop_front(int64_t count) {
  if (count <= 0) return;
  const auto kept = length() - count;
  TORCH_CHECK(kept >= 0, "drop_front: ", count, " positions of a cache of ", length());
  for (size_t layer = 0; layer < keys.size(); ++layer) {
    key_buffers_[layer] = keys[layer].narrow(2, count, kept).clone();
    value_buffers_[layer] = values[layer].narrow(2, count, kept).clone();
    keys[layer] = key_buffers_[layer];
    values[layer] = value_buffers_[layer];
  }
}

namespace {
// Writes `step` after the first `length` positions of `buffer`, growing it (doubling) when full.
torch::Tensor append_along_sequence(torch::Tensor& buffer, int64_t length, const torch::Tensor& step) {
  const auto needed = length + step.size(2);
  if (!buffer.defined() || buffer.size(2) < needed) {
    const auto capacity = std::max<int64_t>(needed, buffer.defined() ? 2 * buffer.size(2) : 0);
    auto sizes = step.sizes().vec();
    sizes[2] = capacity;
    auto grown = torch::empty(sizes, step.options());
    if (length > 0) grown.narrow(2, 0, length).copy_(buffer.narrow(2, 0, length));
    buffer = grown;
  }
  buffer.narrow(2, length, step.size(2)).copy_(step);
  return buffer.narrow(2, 0, needed);
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> KVCache::append(size_t layer, const torch::Tensor& k, const torch::Tensor& v) {
  if (keys.size() <= layer) {
    for (auto* list : {&keys, &values, &key_buffers_, &value_buffers_}) list->resize(layer + 1);
  }
  const auto length = keys[layer].defined() ? keys[layer].size(2) : 0;
  keys[layer] = append_along_sequence(key_buffers_[layer], length, k);
  values[layer] = append_along_sequence(value_buffers_[layer], length, v);
  return {keys[layer], values[layer]};
}

namespace {

// Gradient checkpointing: a decoder layer runs without keeping its activations; backward runs it
// again (same RNG state, same autocast setting) and back-propagates through the recomputation.
// Hand-written because libtorch's C++ API has no torch.utils.checkpoint.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin, const KeyVisibility& visibility,
                               int64_t layer_address, int64_t layer) {
    auto* decoder_layer = reinterpret_cast<DecoderLayerImpl*>(layer_address);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      context->saved_data["rng"] = generator.get_state();
    }
    context->saved_data["layer_address"] = layer_address;
    context->saved_data["layer"] = layer;
    // The mask needs no gradient and may be undefined (packed rows), so it is kept as plain data.
    if (visibility.blocked.defined()) context->saved_data["blocked"] = visibility.blocked;
    context->saved_data["sequence_lengths"] = visibility.sequence_lengths;
    context->saved_data["window"] = visibility.slides(static_cast<size_t>(layer)) ? visibility.window : int64_t{0};
    context->saved_data["autocast"] = at::autocast::is_cpu_enabled();
    context->save_for_backward({x, cos, sin});
    torch::NoGradGuard no_grad;
    return decoder_layer->forward(x, Rotary{cos, sin}, visibility, nullptr, static_cast<size_t>(layer));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = context->get_saved_variables();
    auto* decoder_layer = reinterpret_cast<DecoderLayerImpl*>(context->saved_data["layer_address"].toInt());
    const auto layer = static_cast<size_t>(context->saved_data["layer"].toInt());
    auto x = saved[0].detach().requires_grad_(true);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    torch::Tensor current_rng;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      current_rng = generator.get_state();
      generator.set_state(context->saved_data["rng"].toTensor());
    }
    torch::Tensor output;
    {
      torch::AutoGradMode enable(true);
      const bool autocast = context->saved_data["autocast"].toBool();
      const bool was_autocast = at::autocast::is_cpu_enabled();
      at::autocast::set_cpu_enabled(autocast);
      const auto blocked = context->saved_data.find("blocked");
      // Only this layer is recomputed, so whether it slides is all the visibility needs of the rest.
      const std::vector<bool> sliding_layers(layer + 1, true);
      const KeyVisibility visibility{blocked == context->saved_data.end() ? torch::Tensor() : blocked->second.toTensor(),
                                     context->saved_data["sequence_lengths"].toIntVector(),
                                     context->saved_data["window"].toInt(), &sliding_layers};
      output = decoder_layer->forward(x, Rotary{saved[1], saved[2]}, visibility, nullptr, layer);
      at::autocast::set_cpu_enabled(was_autocast);
    }
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(current_rng);
    }
    torch::autograd::backward({output}, {grad_outputs[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

struct CausalLMImpl::Impl {
  bool gradient_checkpointing = false;
  Decoder model{nullptr};
  Linear lm_head{nullptr};    // null when tied to the embedding, and in a classifier
  Linear score{nullptr};      // a classifier's head [num_labels, hidden]
  ModelConfig config;
  torch::Tensor inv_freq;     // float32, kept out of the parameters so .to(bf16) leaves it exact
  int64_t inv_freq_length = 0;  // the seq_len it was computed for (dynamic and longrope depend on it)
  double rotary_scale = 1.0;
  std::vector<std::string> checkpoint_names;  // the parameters a checkpoint holds (not adapters')

  Rotary rotary(const torch::Tensor& position_ids, torch::ScalarType dtype) {
    const auto& type = config.rope_scaling.type;
    if (type == "dynamic" || type == "longrope") {
      // As transformers does for each forward pass: the frequencies for the longest position seen.
      const auto length = position_ids.numel() == 0 ? 0 : position_ids.max().item<int64_t>() + 1;
      if (length != inv_freq_length) {
        inv_freq = inverse_frequencies(config, length).to(position_ids.device());
        inv_freq_length = length;
      }
    }
    if (inv_freq.device() != position_ids.device()) inv_freq = inv_freq.to(position_ids.device());
    const auto angles = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [batch, seq, dim/2]
    const auto both = torch::cat({angles, angles}, -1).unsqueeze(1);
    if (rotary_scale == 1.0) return {both.cos().to(dtype), both.sin().to(dtype)};
    return {(both.cos() * rotary_scale).to(dtype), (both.sin() * rotary_scale).to(dtype)};
  }
};

CausalLMImpl::CausalLMImpl(const ModelConfig& config, torch::Dtype dtype, bool random_init)
    : impl(std::make_shared<Impl>()), config_(config) {
  const auto options = torch::TensorOptions(dtype);
  {
    SkipInitialisation skip(true);
    impl->model = register_module("model", Decoder(config, options));
    if (config.num_labels)
      impl->score = register_module("score", Linear(config.hidden_size, *config.num_labels, false, options));
    else if (!config.tie_word_embeddings)
      impl->lm_head = register_module("lm_head", Linear(config.hidden_size, config.vocab_size, false, options));
  }
  if (random_init) initialise_like_transformers(*this);
  impl->config = config;
  impl->inv_freq = inverse_frequencies(config, 0);
  impl->rotary_scale = rotary_attention_scale(config);
  for (const auto& item : named_parameters()) impl->checkpoint_names.push_back(item.key());
}

void CausalLMImpl::set_gradient_checkpointing(bool enabled) { impl->gradient_checkpointing = enabled; }

torch::Tensor CausalLMImpl::embed(const torch::Tensor& input_ids) {
  // The final norm's dtype is the compute dtype, whatever the embedding is held in.
  return torch::embedding(impl->model->embed_tokens->weight, input_ids).to(impl->model->norm->weight.scalar_type());
}

void CausalLMImpl::hold_projections_in(torch::Dtype dtype, bool embedding) {
  TORCH_CHECK(is_16bit(dtype), "projections are held in bfloat16 or float16, not ", dtype);
  torch::NoGradGuard no_grad;
  auto hold = [dtype](torch::Tensor& weight) {
    weight.set_data(weight.to(dtype));
    weight.set_requires_grad(false);
  };
  for (auto& layer : impl->model->layer_list)
    for (const auto& item : layer->named_modules())
      if (auto* linear = item.value()->as<LinearImpl>()) hold(linear->weight);
  if (!embedding) return;
  hold(impl->model->embed_tokens->weight);
  if (impl->lm_head) hold(impl->lm_head->weight);
}

torch::Tensor CausalLMImpl::output_weight() {
  if (impl->score) return impl->score->weight;
  return impl->lm_head ? impl->lm_head->weight : impl->model->embed_tokens->weight;
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden) {
  if (impl->score) return impl->score(hidden);
  return impl->lm_head ? impl->lm_head(hidden) : project(hidden, impl->model->embed_tokens->weight, {});
}

torch::Tensor CausalLMImpl::forward(const ForwardInputs& inputs) {
  const auto& input_ids = inputs.input_ids;
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.sizes());
  const auto batch = input_ids.size(0), seq = input_ids.size(1);
  const auto past = inputs.cache ? inputs.cache->length() : 0;
  const auto device = input_ids.device();

  auto position_ids = inputs.position_ids;
  if (!position_ids.defined())
    position_ids = torch::arange(past, past + seq, torch::TensorOptions(torch::kInt64).device(device))
                       .unsqueeze(0)
                       .expand({batch, seq});
  TORCH_CHECK(position_ids.sizes() == input_ids.sizes(), "position_ids ", position_ids.sizes(),
              " must match input_ids ", input_ids.sizes());

  KeyVisibility visibility{{}, inputs.sequence_lengths, config_.sliding_window.value_or(0), &config_.sliding_layers};
  if (!inputs.sequence_lengths.empty()) {
    const auto total = std::accumulate(inputs.sequence_lengths.begin(), inputs.sequence_lengths.end(), int64_t{0});
    TORCH_CHECK(batch == 1 && total == seq && inputs.cache == nullptr && !inputs.attention_mask.defined(),
                "sequence_lengths (summing to ", total, ") need one packed row of that length [1, ", total,
                "] without a cache or attention_mask, got input_ids ", input_ids.sizes());
  } else if (inputs.attention_mask.defined()) {
    const auto& mask = inputs.attention_mask;
    TORCH_CHECK(mask.dim() == 4 && mask.size(1) == 1 && mask.size(2) == seq && mask.size(3) == past + seq &&
                    (mask.size(0) == batch || mask.size(0) == 1),
                "attention_mask must be [batch, 1, ", seq, ", ", past + seq, "], got ", mask.sizes());
    visibility.blocked = mask.to(torch::kBool).logical_not();
  } else {
    visibility.blocked = causal_blocked(past, seq, device);
  }

  auto hidden = embed(input_ids);
  const auto rotary = impl->rotary(position_ids, hidden.scalar_type());
  const bool checkpoint = impl->gradient_checkpointing && is_training() && torch::GradMode::is_enabled() &&
                          inputs.cache == nullptr;
  for (size_t i = 0; i < impl->model->layer_list.size(); ++i) {
    auto& layer = impl->model->layer_list[i];
    // The recomputation must be part of the graph even when the input needs no gradient (frozen
    // embeddings under LoRA), or the layer's own trainable parameters would get none.
    if (checkpoint && !hidden.requires_grad()) hidden = hidden.detach().requires_grad_(true);
    hidden = checkpoint ? CheckpointedLayer::apply(hidden, rotary.cos, rotary.sin, visibility,
                                                   reinterpret_cast<int64_t>(layer.get()), static_cast<int64_t>(i))
                        : layer->forward(hidden, rotary, visibility, inputs.cache, i);
  }
  return impl->model->norm(hidden);
}

std::map<std::string, torch::Tensor> CausalLMImpl::state() {
  const auto parameters = named_parameters();
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& name : impl->checkpoint_names) tensors.emplace(name, parameters[name]);
  return tensors;
}

void CausalLMImpl::load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  auto parameters = state();
  for (const auto& [name, parameter] : parameters) {
    const auto found = tensors.find(name);
    if (found == tensors.end())
      fail("{}: missing tensor {} (expected shape {} for this config.json)", source, name,
           shape_string(parameter.sizes()));
    if (found->second.sizes() != parameter.sizes())
      fail("{}: tensor {} has shape {}, but config.json expects {}", source, name,
           shape_string(found->second.sizes()), shape_string(parameter.sizes()));
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, tensor] : tensors) {
    if (parameters.count(name)) continue;
    // Tied checkpoints sometimes store the head anyway; old ones store the rotary table.
    if (name == "lm_head.weight" && config_.tie_word_embeddings) continue;
    if (name.ends_with("rotary_emb.inv_freq")) continue;
    unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    if (unexpected.size() > 5) unexpected.resize(5), unexpected.push_back("...");
    fail("{}: tensors not in the model described by config.json: {}", source, fmt::join(unexpected, ", "));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, parameter] : parameters) {
    const auto& stored = tensors.at(name);
    parameter.copy_(stored);
    release_file_pages(stored);  // a mapped checkpoint's pages go as soon as they are copied
  }
}

// ---------------------------------------------------------------------------------------------
// Masks.

torch::Tensor causal_padding_mask(const torch::Tensor& key_padding, int64_t query_len) {
  TORCH_CHECK(key_padding.dim() == 2, "key_padding must be [batch, keys], got ", key_padding.sizes());
  const auto keys = key_padding.size(1);
  TORCH_CHECK(query_len >= 1 && query_len <= keys, "query_len ", query_len, " must be in [1, ", keys, "]");
  const auto options = torch::TensorOptions(torch::kInt64).device(key_padding.device());
  const auto query_positions = torch::arange(keys - query_len, keys, options).view({-1, 1});
  const auto causal = torch::arange(keys, options).view({1, -1}).le(query_positions);  // [query, keys]
  return causal.unsqueeze(0).logical_and(key_padding.to(torch::kBool).unsqueeze(1)).unsqueeze(1);
}

namespace {
torch::Tensor sequence_index_per_token(const std::vector<int64_t>& sequence_lengths) {
  std::vector<int64_t> index;
  for (size_t i = 0; i < sequence_lengths.size(); ++i) index.insert(index.end(), sequence_lengths[i], int64_t(i));
  return torch::tensor(index, torch::kInt64);
}
}  // namespace

torch::Tensor packed_causal_mask(const std::vector<int64_t>& sequence_lengths) {
  const auto sequence = sequence_index_per_token(sequence_lengths);
  const auto total = sequence.size(0);
  const auto same_sequence = sequence.view({-1, 1}).eq(sequence.view({1, -1}));
  return torch::ones({total, total}, torch::kBool).tril().logical_and(same_sequence).view({1, 1, total, total});
}

torch::Tensor packed_position_ids(const std::vector<int64_t>& sequence_lengths) {
  std::vector<int64_t> positions;
  for (const auto length : sequence_lengths)
    for (int64_t i = 0; i < length; ++i) positions.push_back(i);
  return torch::tensor(positions, torch::kInt64).view({1, -1});
}

torch::Tensor padding_position_ids(const torch::Tensor& key_padding) {
  const auto real = key_padding.to(torch::kInt64);
  return (real.cumsum(1) - 1).clamp_min(0);
}

}  // namespace lathe
