#pragma once
// The computations behind the built-in token losses (cross_entropy, loss_scale), public for loss
// plugins that build on them: the cross entropy through the output head, chunked over rows so the
// [tokens, vocab] logits never exist, and the shifted view of hidden states and labels.
#include <torch/types.h>

#include <cstdint>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

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

}  // namespace lathe

LATHE_API_END
