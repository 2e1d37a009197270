// The decoder's element-wise blocks and causal attention as autograd functions with their own
// backward: each saves only what its backward needs (the inputs, a per-row statistic), so a layer
// keeps no [tokens, tokens] scores and no intermediate [tokens, width] tensors for backward. The
// values are those of the unfused computation transformers' eager code does; tests check values
// and gradients against it in float32 and bfloat16.
#pragma once

#include <torch/torch.h>

namespace lathe::fused {

// weight * (x / sqrt(mean(x^2) + eps)), normalised in float32 and cast back to x's dtype before
// the weight, over the last dimension. Saves x and one float32 per row.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// silu(gate) * up. Saves gate and up.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up);

// x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x[second half], x[first half]) on the
// last dimension; cos and sin broadcast against x and get no gradient. Saves cos and sin.
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Causal attention over one sequence with grouped-query heads: q [tokens, heads, head_dim], k and
// v [tokens, kv_heads, head_dim] (heads a multiple of kv_heads; query head h reads kv head
// h / (heads / kv_heads)) -> the context [tokens, heads * head_dim]. Query j sees keys i <= j, and
// with window > 0 only those with j - i < window. Computed in blocks of queries that each read only
// the keys they may see, softmax through the row's log-sum-exp, which with q, k and v is all that is kept for
// backward; backward recomputes each block's probabilities. Under CPU autocast the products run in
// the autocast dtype; the softmax statistics are always float32.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                               int64_t window = 0);

// x [..., in] (float32 or float64) times weight [out, in]^T plus bias, where the weight is held in
// bfloat16 or float16 and the product is computed in x's dtype: few rows (decoding) through the
// matvec16 kernel, more through GEMMs on float copies of a few weight rows at a time, so no float
// copy of the whole matrix ever exists. The weight is frozen (refused when it requires grad); x and
// the bias get gradients. Saves only the weight (the bias's dtype besides).
torch::Tensor linear16(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace lathe::fused
