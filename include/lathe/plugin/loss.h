#pragma once
// Loss plugins (`--loss_type name`, docs/plugins.md). A loss receives the model outputs (hidden
// states, with logits only on request), labels aligned with input_ids (-100 = ignored; the loss
// shifts them), an optional per-token weight tensor aligned the same way, and the number of
// non-ignored shifted labels over the whole gradient-accumulation step.
//
// Token losses (cross_entropy, loss_scale) take hidden [batch, seq, H] and never build the
// [tokens, vocab] logits: they go through chunked_token_cross_entropy (lathe/plugin/token_losses.h).
//
// Embedding losses take pooled embeddings instead: ModelOutputs whose hidden() is [rows, H] (one
// row per sequence, last_token_embeddings), with labels per pair or per candidate, not per token
// (layouts in lathe/plugin/embedding_losses.h). loss_scale and num_items_in_batch are ignored by
// them (their losses are means over pairs or groups, as in SWIFT).
#include <torch/types.h>

#include <functional>
#include <optional>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// What the model produced for a batch. logits() materialises [..., vocab] on first use; the
// built-in losses never call it.
class ModelOutputs {
 public:
  // The trainer's form: the output head is the model's (its lm_head, or the embedding when tied).
  ModelOutputs(CausalLMImpl& model, torch::Tensor hidden)
      : model_(&model), hidden_(std::move(hidden)), head_weight_(model.output_weight()) {}
  // Without a model: the output head weight [V, H] given directly (tests, embedding rows, a plugin
  // with its own head). head_weight may be undefined for embedding losses.
  ModelOutputs(torch::Tensor hidden, torch::Tensor head_weight)
      : hidden_(std::move(hidden)), head_weight_(std::move(head_weight)) {}

  const torch::Tensor& hidden() const { return hidden_; }
  const torch::Tensor& head_weight() const { return head_weight_; }
  // Null when built without a model.
  CausalLMImpl* model() const { return model_; }
  const torch::Tensor& logits() {
    if (!logits_.defined()) logits_ = model_ ? model_->logits(hidden_) : torch::linear(hidden_, head_weight_);
    return logits_;
  }

 private:
  CausalLMImpl* model_ = nullptr;
  torch::Tensor hidden_;
  torch::Tensor head_weight_;
  torch::Tensor logits_;
};

using LossFunction = std::function<torch::Tensor(ModelOutputs& outputs, const torch::Tensor& labels,
                                                 const torch::Tensor& loss_scale,
                                                 std::optional<int64_t> num_items_in_batch)>;
using LossFactory = std::function<LossFunction(const PluginContext& context)>;

// Built: cross_entropy, loss_scale, cosine_similarity, contrastive, online_contrastive, infonce.
Registry<LossFactory>& loss_registry();

}  // namespace lathe

LATHE_API_END
