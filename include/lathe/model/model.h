#pragma once
// Decoder-only transformers with Hugging Face weight names: Llama, Mistral, Qwen2/Qwen2.5, Qwen3.
// RMSNorm, RoPE (default / linear / llama3 scaling), grouped-query attention, SwiGLU, optional q/k/v
// biases (Qwen2) and per-head q/k norms (Qwen3), tied or separate output head.
//
// The model returns final hidden states; logits are a separate call so a loss can work on chunks
// of the vocabulary without ever materialising [tokens, vocab] (docs/architecture.md).
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// rope_scaling / rope_parameters as transformers reads them (its modeling_rope_utils).
struct RopeScaling {
  std::string type = "default";  // default | linear | dynamic | yarn | longrope | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3, yarn, longrope
  std::optional<double> attention_factor;           // yarn, longrope: scales cos and sin
  double beta_fast = 32, beta_slow = 1;              // yarn's ramp
  std::optional<double> mscale, mscale_all_dim;      // yarn
  bool truncate = true;                              // yarn
  std::vector<double> short_factor, long_factor;     // longrope, one per rotary pair
};

struct ModelConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2 | qwen3
  std::vector<std::string> architectures;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (true for qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k (qwen3)
  // Sliding-window attention (Mistral; Qwen2 and Qwen3 with use_sliding_window): in the layers
  // marked in sliding_layers a query sees only the last sliding_window keys (itself included).
  std::optional<int64_t> sliding_window;
  std::vector<bool> sliding_layers;  // one per layer; empty without a window
  std::string torch_dtype = "float32";
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  // Set for a sequence classifier (<Family>ForSequenceClassification, transformers' id2label
  // entries): a `score` head [num_labels, hidden] without bias replaces the output head. A reward
  // model is one with a single label.
  std::optional<int64_t> num_labels;

  // Parses config.json's fields; `source` (the file name) prefixes every error.
  static ModelConfig from_json(const nlohmann::json& json, const std::string& source);
  static ModelConfig load(const std::filesystem::path& config_json);
  nlohmann::json to_json() const;  // as Hugging Face writes config.json
};

// A hook that replaces a Linear layer's computation (LoRA, DoRA, IA3, ...). The adapter is
// registered as a child module of the Linear so its parameters get names such as
// `model.layers.0.self_attn.q_proj.lora_A.weight`.
class LinearImpl;
struct LinearAdapter : torch::nn::Module {
  virtual torch::Tensor forward(LinearImpl& base, const torch::Tensor& x) = 0;
};

class LinearImpl : public torch::nn::Module {
 public:
  // Weights start as torch.nn.Linear's (uniform +-1/sqrt(in_features)).
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor base_forward(const torch::Tensor& x);  // x W^T + b, ignoring any adapter
  void set_adapter(const std::string& name, std::shared_ptr<LinearAdapter> adapter);
  void remove_adapter();
  int64_t in_features, out_features;
  torch::Tensor weight, bias;  // bias undefined when absent
  std::shared_ptr<LinearAdapter> adapter;
  std::string adapter_name;
};
TORCH_MODULE(Linear);

// While one exists, every Linear computes on this thread without its adapter: the model the
// adapters were attached to, which LoRA alignment uses as its reference (PEFT's disable_adapter).
// Scopes nest; the previous setting is back in place when one ends.
class AdaptersBypassed {
 public:
  AdaptersBypassed();
  ~AdaptersBypassed();
  AdaptersBypassed(const AdaptersBypassed&) = delete;
  AdaptersBypassed& operator=(const AdaptersBypassed&) = delete;
  // Whether a scope is open on this thread.
  static bool active();

 private:
  bool previous_;
};

// Keys and values of every layer, for generation. keys[i] / values[i] are views
// [batch, kv_heads, length, head_dim] of per-layer buffers that grow by doubling, so that a decoding
// step appends in place instead of copying the whole cache.
struct KVCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  void clear();
  // Keeps only the given batch rows (finished sequences leave a batch).
  void select_rows(const torch::Tensor& rows);
  // Adds the rows of `other` after these, left-padding the shorter side to a common length with zero
  // keys and values, which the caller's padding mask must block (sequences joining a batch).
  void append_rows(const KVCache& other);
  // Drops the first `count` positions of every row (columns that have become padding in all rows).
  void drop_front(int64_t count);
  // Appends this step's keys and values of `layer`; returns the views of everything cached.
  std::pair<torch::Tensor, torch::Tensor> append(size_t layer, const torch::Tensor& k, const torch::Tensor& v);

 private:
  std::vector<torch::Tensor> key_buffers_, value_buffers_;  // [batch, kv_heads, capacity, head_dim]
};

// attention_mask: bool [batch, 1, query_len, key_len], true where a query may attend a key
// (key_len includes what is already in the cache). Undefined means plain causal attention over
// the cache plus the new tokens. position_ids: int64 [batch, query_len].
// sequence_lengths (padding-free packing, training without a cache): row 0 holds sequences of
// these lengths end to end and no attention_mask is given; each sequence attends causally within
// itself, computed one sequence at a time, so attention costs sum(L^2) and no [total, total] mask
// exists. Positions are still taken from position_ids (packed_position_ids restarts them).
struct ForwardInputs {
  torch::Tensor input_ids;
  torch::Tensor position_ids;
  torch::Tensor attention_mask;
  KVCache* cache = nullptr;
  std::vector<int64_t> sequence_lengths;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  // Parameters are created in `dtype`; with random_init they follow Hugging Face's initialisation
  // (normal(0, 0.02) matrices, zero biases, unit norms), without it they are left uninitialised
  // (for loading: a 7B model need not be filled twice).
  explicit CausalLMImpl(const ModelConfig& config, torch::Dtype dtype = torch::kFloat32, bool random_init = true);

  // Final hidden states [batch, seq, hidden] (after the last norm).
  torch::Tensor forward(const ForwardInputs& inputs);
  // Output head applied to hidden states: [..., hidden] -> [..., vocab] ([..., num_labels] for a
  // sequence classifier, whose score head reads the hidden state of a sequence's last token).
  torch::Tensor logits(const torch::Tensor& hidden);
  // The output head's weight [vocab, hidden] (the embedding when tied; a classifier's score head).
  torch::Tensor output_weight();
  bool is_classifier() const { return config_.num_labels.has_value(); }
  // The embedding rows of input_ids, in the compute dtype.
  torch::Tensor embed(const torch::Tensor& input_ids);
  // Holds the decoder layers' projection matrices (attention and MLP; with `embedding` also the
  // embedding and the output head) in `dtype`, bfloat16 or float16, frozen, while the rest of the
  // model and every computation keep their dtype: the products convert the weights as they read
  // them. Halves the weights' memory and what decoding reads per token.
  void hold_projections_in(torch::Dtype dtype, bool embedding);
  // Recompute each decoder layer in backward instead of keeping its activations (training only).
  void set_gradient_checkpointing(bool enabled);

  const ModelConfig& config() const { return config_; }

  // Copies tensors with Hugging Face names into the parameters (converting dtype). Missing or
  // mis-shaped tensors are errors naming the tensor with expected and actual shapes; `source`
  // names the checkpoint in messages.
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);
  // Hugging Face names -> parameters (lm_head.weight absent when tied).
  std::map<std::string, torch::Tensor> state();

  struct Impl;
  std::shared_ptr<Impl> impl;

 private:
  ModelConfig config_;
};
TORCH_MODULE(CausalLM);

// Masks for ForwardInputs::attention_mask.
// Left- or right-padded batch: key_padding [batch, key_len] bool (true = real token); the last
// query_len keys are the new queries.
torch::Tensor causal_padding_mask(const torch::Tensor& key_padding, int64_t query_len);
// Packed rows: sequences of the given lengths laid end to end in one row; attention stays within
// each sequence. Returns [1, 1, total, total].
torch::Tensor packed_causal_mask(const std::vector<int64_t>& sequence_lengths);
// Positions restarting at 0 for every packed sequence: [1, total].
torch::Tensor packed_position_ids(const std::vector<int64_t>& sequence_lengths);
// Positions of a padded batch: the number of real tokens before each one (pads get 0), so a
// left-padded row sees the same positions as the row alone. key_padding [batch, len] -> int64.
torch::Tensor padding_position_ids(const torch::Tensor& key_padding);

// Projection matrices held in 16 bits under float32 computation (CausalLMImpl::hold_projections_in).
struct ProjectionStorage {
  std::optional<torch::Dtype> dtype;  // bfloat16 or float16; unset: the parameter dtype
  bool embedding = false;             // the embedding and output head too
};

// A causal LM loaded as a sequence classifier, as transformers' AutoModelForSequenceClassification
// does: its output head dropped, a score head of `labels` rows started as normal(0, 0.02) from
// torch's generator (seed it first), and pad_token_id recorded where config.json has none, which
// transformers needs to find each row's last token in a batch (ms-swift records the tokenizer's pad
// token, else its eos).
struct ClassifierConversion {
  int64_t labels = 1;
  std::optional<int64_t> pad_token_id;
};

// Loads a Hugging Face model folder: config.json plus model.safetensors or its sharded index.
// dtype: the parameter dtype (float32 or bfloat16); projections: held as ProjectionStorage says
// (converted from the file directly, so no float32 copy of them is made).
// classifier: a causal LM's folder loads as a sequence classifier (ClassifierConversion); a
// classifier's own folder loads as it is.
CausalLM load_pretrained(const std::filesystem::path& dir, torch::Dtype dtype = torch::kFloat32,
                         const ProjectionStorage& projections = {},
                         const std::optional<ClassifierConversion>& classifier = std::nullopt);
// The 16-bit dtype every projection matrix of the folder's checkpoint is stored in, if they share
// one: holding them in it under float32 computation loses nothing.
std::optional<torch::Dtype> stored_projection_dtype(const std::filesystem::path& dir);
// --weight_dtype (auto | float32 | bfloat16 | float16) under --torch_dtype: the dtype to hold the
// projections in, or nullopt for the parameter dtype. auto is the checkpoint's own 16-bit dtype
// when `lossless_auto` (the caller neither trains nor rewrites the weights) and torch_dtype is
// float32. Errors name the option.
std::optional<torch::Dtype> projection_dtype(const std::string& weight_dtype, const std::string& torch_dtype,
                                             const std::filesystem::path& dir, bool lossless_auto);
// Writes config.json and model.safetensors (or shards above max_shard_bytes), atomically.
void save_pretrained(CausalLM& model, const std::filesystem::path& dir,
                     std::size_t max_shard_bytes = std::size_t{5} << 30);

}  // namespace lathe

LATHE_API_END
