#pragma once
// Loss plugins (`--loss_type name`, plugins.md §2). A loss receives the model outputs (hidden
// states, with logits only on request), labels aligned with input_ids (-100 = ignored; the loss
// shifts them), an optional per-token weight tensor aligned the same way, and the number of
// non-ignored shifted labels over the whole gradient-accumulation step.
#include <torch/types.h>

#include <functional>
#include <optional>

#include "lathe/arguments.h"
#include "lathe/model.h"
#include "lathe/registry.h"

namespace lathe {

// What the model produced for a batch. logits() materialises [batch, seq, vocab] on first use;
// the built-in losses never call it (they use chunked_token_cross_entropy).
class ModelOutputs {
 public:
  ModelOutputs(CausalLMImpl& model, torch::Tensor hidden) : model_(&model), hidden_(std::move(hidden)) {}
  const torch::Tensor& hidden() const { return hidden_; }
  CausalLMImpl& model() const { return *model_; }
  const torch::Tensor& logits() {
    if (!logits_.defined()) logits_ = model_->logits(hidden_);
    return logits_;
  }

 private:
  CausalLMImpl* model_;
  torch::Tensor hidden_;
  torch::Tensor logits_;
};

// Per-token cross entropy of hidden [N, H] against targets [N] under the output head
// weight [V, H], without ever holding more than a chunk of the [N, V] logits: forward and backward
// both work on row chunks and recompute the chunk's logits (its own autograd function). Ignored
// targets (-100) give 0. Returns float32 [N].
torch::Tensor chunked_token_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                          const torch::Tensor& targets, int64_t chunk_tokens = 0);

// The shifted view shared by the token losses: hidden[:, :-1] predicts labels[:, 1:].
struct ShiftedTokens {
  torch::Tensor hidden;   // [N, H]
  torch::Tensor targets;  // [N] int64, -100 ignored
  torch::Tensor weights;  // [N] float32 or undefined
};
ShiftedTokens shift_tokens(const torch::Tensor& hidden, const torch::Tensor& labels,
                           const torch::Tensor& loss_scale);

using LossFunction = std::function<torch::Tensor(ModelOutputs& outputs, const torch::Tensor& labels,
                                                 const torch::Tensor& loss_scale,
                                                 std::optional<int64_t> num_items_in_batch)>;
using LossFactory = std::function<LossFunction(const Arguments& arguments)>;

Registry<LossFactory>& loss_registry();

}  // namespace lathe
