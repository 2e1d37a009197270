#pragma once
// Loss plugins (`--loss_type name`, docs/plugins.md). A loss receives the model outputs (hidden
// states, with logits only on request), labels aligned with input_ids (-100 = ignored; the loss
// shifts them), an optional per-token weight tensor aligned the same way, and the number of
// non-ignored shifted labels over the whole gradient-accumulation step.
//
// Token losses (cross_entropy, loss_scale) take hidden [batch, seq, H] and never build the
// [tokens, vocab] logits: they go through chunked_token_cross_entropy.
//
// Embedding losses (--task_type embedding) take pooled embeddings instead: the trainer pools each
// sequence (last_token_embeddings) and passes ModelOutputs whose hidden() is [rows, H]; labels are
// then per pair or per candidate, not per token (layouts at each function below). loss_scale and
// num_items_in_batch are ignored by them (their losses are means over pairs or groups, as in SWIFT).
#include <torch/types.h>

#include <functional>
#include <optional>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/registry.h"

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

// Per-token cross entropy of hidden [N, H] against targets [N] under the output head
// weight [V, H], without ever holding more than a chunk of the [N, V] logits (its own autograd
// function). When the head needs a gradient, backward recomputes each chunk's logits; when it is
// frozen, forward computes the hidden rows' gradient while the chunk is at hand. The matmul
// runs in the weight's dtype (hidden rows are cast to it chunk by chunk, so the head is never
// copied), the softmax and gradient accumulation in float32 (float64 for a float64 head).
// Ignored targets (-100) give 0; any other target outside [0, V) is a lathe::Error.
// chunk_tokens = 0 picks default_chunk_tokens(V). Returns float32 [N] (float64 for a float64 head).
torch::Tensor chunked_token_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                          const torch::Tensor& targets, int64_t chunk_tokens = 0);
// Rows per chunk so that one chunk's float32 logits take about 256 MiB: the head matmul then
// runs on hundreds of rows at once (with 55-row chunks, repacking the [V, H] head for every chunk
// cost 1.34x the LoRA step time of model (a), docs/performance.md).
int64_t default_chunk_tokens(int64_t vocab_size);

// The shifted view shared by the token losses: hidden[:, :-1] predicts labels[:, 1:]. Only rows
// whose target is not -100 are kept (prompt tokens never reach the output head).
struct ShiftedTokens {
  torch::Tensor hidden;   // [N, H], kept rows only
  torch::Tensor targets;  // [N] int64, none of them -100
  torch::Tensor weights;  // [N] float32, or undefined when loss_scale is undefined
};
ShiftedTokens shift_tokens(const torch::Tensor& hidden, const torch::Tensor& labels,
                           const torch::Tensor& loss_scale);

using LossFunction = std::function<torch::Tensor(ModelOutputs& outputs, const torch::Tensor& labels,
                                                 const torch::Tensor& loss_scale,
                                                 std::optional<int64_t> num_items_in_batch)>;
using LossFactory = std::function<LossFunction(const Arguments& arguments)>;

// Built: cross_entropy, loss_scale, cosine_similarity, contrastive, online_contrastive, infonce.
Registry<LossFactory>& loss_registry();

// ---- Embedding losses -------------------------------------------------------------------------

// The hidden state of each row's last real token: hidden [B, S, H], attention_mask [B, S]
// (nonzero = real token; left or right padding). Returns [B, H].
torch::Tensor last_token_embeddings(const torch::Tensor& hidden, const torch::Tensor& attention_mask);

// Pair layout (cosine_similarity, contrastive, online_contrastive): embeddings [2P, H] interleaved
// as (first_0, second_0, first_1, second_1, ...); labels [P] (a similarity score, or 1 = similar,
// 0 = dissimilar).
// Mean over pairs of (cos(first, second) - label)^2.
torch::Tensor cosine_similarity_loss(const torch::Tensor& embeddings, const torch::Tensor& labels);
// Mean over pairs of 0.5 * (y d^2 + (1 - y) relu(margin - d)^2), d = 1 - cos.
torch::Tensor contrastive_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                               double margin = 0.5);
// Sum over hard pairs only of d^2 (positives) and relu(margin - d)^2 (negatives), as
// sentence-transformers' OnlineContrastiveLoss: a positive is hard when its distance exceeds the
// smallest negative distance, a negative when it is below the largest positive distance (with
// fewer than two pairs on the other side, the own side's mean distance is the threshold).
torch::Tensor online_contrastive_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                                      double margin = 0.5);

// Group layout (infonce, SWIFT's): embeddings are groups (anchor, positive, negative...) laid end
// to end; labels has one entry per non-anchor row, 1 for the positive that opens a group and 0
// for its (hard) negatives, so [1,0,0, 1] is two groups of 4 and 2 rows.
struct InfoNCEOptions {
  double temperature = 0.1;
  // Every group's positives and negatives are candidates for every anchor (in-batch negatives);
  // false: only the anchor's own group.
  bool use_batch = true;
  // Keep at most this many hard negatives per group (the first ones).
  std::optional<int64_t> hard_negatives;
};
// Mean over groups of the cross entropy of cos(anchor, candidates) / temperature with the group's
// positive as the target.
torch::Tensor infonce_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                           const InfoNCEOptions& options = {});

}  // namespace lathe
