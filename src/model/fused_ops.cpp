// Written with libtorch's own vectorised operators: libtorch 1.13's C++ API has no fused RMSNorm,
// SwiGLU or RoPE, and its fused attention (scaled_dot_product_attention) arrived only in 2.x, and
// without a causal-block-skipping CPU kernel for grouped-query heads.
#include "model/fused_ops.h"

#include "model/matvec16.h"

#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <limits>

namespace lathe::fused {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static torch::Tensor forward(AutogradContext* context, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps) {
    RECORD_USER_SCOPE("lathe::rms_norm");
    const auto x32 = x.to(torch::kFloat32);
    const auto inverse_rms = torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
    context->save_for_backward({x, weight, inverse_rms});
    return weight * (x32 * inverse_rms).to(x.scalar_type());
  }

  static variable_list backward(AutogradContext* context, variable_list grads) {
    RECORD_USER_SCOPE("lathe::rms_norm_backward");
    const auto saved = context->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &inverse_rms = saved[2];
    const auto& grad = grads[0];
    const auto normalised = x.to(torch::kFloat32) * inverse_rms;
    torch::Tensor grad_weight;
    if (context->needs_input_grad(1))
      grad_weight = (grad * normalised.to(x.scalar_type())).reshape({-1, weight.numel()}).sum(0).to(weight.scalar_type());
    torch::Tensor grad_x;
    if (context->needs_input_grad(0)) {
      // Through the cast back to x's dtype exactly as autograd would round it.
      const auto grad_normalised = (grad * weight).to(x.scalar_type()).to(torch::kFloat32);
      const auto projection = (grad_normalised * normalised).mean(-1, /*keepdim=*/true);
      grad_x = (inverse_rms * (grad_normalised - normalised * projection)).to(x.scalar_type());
    }
    return {grad_x, grad_weight, torch::Tensor()};
  }
};

struct SwiGlu : torch::autograd::Function<SwiGlu> {
  static torch::Tensor forward(AutogradContext* context, const torch::Tensor& gate, const torch::Tensor& up) {
    RECORD_USER_SCOPE("lathe::swiglu");
    context->save_for_backward({gate, up});
    return torch::silu(gate) * up;
  }

  static variable_list backward(AutogradContext* context, variable_list grads) {
    RECORD_USER_SCOPE("lathe::swiglu_backward");
    const auto saved = context->get_saved_variables();
    const auto &gate = saved[0], &up = saved[1];
    const auto& grad = grads[0];
    torch::Tensor grad_gate, grad_up;
    if (context->needs_input_grad(0)) grad_gate = at::silu_backward(grad * up, gate);
    if (context->needs_input_grad(1)) grad_up = grad * torch::silu(gate);
    return {grad_gate, grad_up};
  }
};

// x * cos + rotate_half(x) * sin without materialising rotate_half: each half of the result is
// one multiply-add on the other half of x. `sign` -1 applies the transpose (the backward).
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int sign) {
  const auto half = x.size(-1) / 2;
  auto result = x * cos;
  result.narrow(-1, 0, half).addcmul_(x.narrow(-1, half, half), sin.narrow(-1, sign > 0 ? 0 : half, half), -sign);
  result.narrow(-1, half, half).addcmul_(x.narrow(-1, 0, half), sin.narrow(-1, sign > 0 ? half : 0, half), sign);
  return result;
}

struct Rotary : torch::autograd::Function<Rotary> {
  static torch::Tensor forward(AutogradContext* context, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
    RECORD_USER_SCOPE("lathe::rotary");
    context->save_for_backward({cos, sin});
    context->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return rotate(x, cos, sin, 1);
  }

  static variable_list backward(AutogradContext* context, variable_list grads) {
    RECORD_USER_SCOPE("lathe::rotary_backward");
    const auto saved = context->get_saved_variables();
    const auto dtype = static_cast<torch::ScalarType>(context->saved_data["dtype"].toInt());
    return {rotate(grads[0], saved[0], saved[1], -1).to(dtype), torch::Tensor(), torch::Tensor()};
  }
};

// The softmax statistics are float32 for 16-bit inputs and keep double's precision for double.
torch::ScalarType statistics_dtype(torch::ScalarType dtype) {
  return dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// 128 queries per block: the causal skip then leaves about (1/2 + 64/tokens) of the [tokens,
// tokens] products, and each block's products are still large enough for the GEMM to run well.
constexpr int64_t kQueryBlock = 128;

// One block of queries and the keys it may see: queries [start, start + rows), keys [first_key,
// start + rows).
struct QueryBlock {
  int64_t start, rows, first_key;
  int64_t width() const { return start + rows - first_key; }
};

std::vector<QueryBlock> query_blocks(int64_t tokens, int64_t window) {
  std::vector<QueryBlock> blocks;
  for (int64_t start = 0; start < tokens; start += kQueryBlock) {
    const auto first_key = window > 0 ? std::max<int64_t>(0, start - window + 1) : 0;
    blocks.push_back({start, std::min(kQueryBlock, tokens - start), first_key});
  }
  return blocks;
}

// scores [kv_heads, groups * rows, width] of one block, in the statistics dtype: the keys a query may not see get
// the lowest finite score. Only the first and last `rows` columns can hold such keys (the ones in
// between are before every query of the block and within its window), so only they are masked.
void mask_invisible(torch::Tensor& scores, const QueryBlock& block, int64_t groups, int64_t window) {
  const auto width = block.width();
  const auto grouped = scores.view({scores.size(0), groups, block.rows, width});
  const auto options = torch::TensorOptions(torch::kInt64).device(scores.device());
  const auto queries = torch::arange(block.start, block.start + block.rows, options).unsqueeze(1);
  auto mask_columns = [&](int64_t first, int64_t count) {
    const auto keys = torch::arange(block.first_key + first, block.first_key + first + count, options).unsqueeze(0);
    auto invisible = keys > queries;
    if (window > 0) invisible.logical_or_(queries - keys >= window);
    grouped.narrow(3, first, count).masked_fill_(invisible, std::numeric_limits<float>::lowest());
  };
  if (width <= 2 * block.rows) {
    mask_columns(0, width);
  } else {
    if (window > 0) mask_columns(0, block.rows);
    mask_columns(width - block.rows, block.rows);
  }
}

// The block's queries times the scale, [kv_heads, groups * rows, head_dim].
torch::Tensor block_queries(const torch::Tensor& q, const QueryBlock& block, int64_t kv_heads, int64_t groups,
                            double scale) {
  const auto dim = q.size(2);
  auto queries = torch::empty({kv_heads, groups, block.rows, dim}, q.options());
  queries.copy_(
      q.narrow(0, block.start, block.rows).reshape({block.rows, kv_heads, groups, dim}).permute({1, 2, 0, 3}));
  return queries.mul_(scale).view({kv_heads, groups * block.rows, dim});
}

// A [tokens, kv_heads, groups, ...] tensor's rows of one block as [kv_heads, groups * rows, ...].
torch::Tensor block_rows(const torch::Tensor& per_token, const QueryBlock& block) {
  const auto rows = per_token.narrow(0, block.start, block.rows).permute({1, 2, 0, 3});
  return rows.reshape({rows.size(0), rows.size(1) * block.rows, rows.size(3)});
}

// Writes a block's [kv_heads, groups * rows, ...] result into the rows of a [tokens, kv_heads,
// groups, ...] tensor.
void store_rows(torch::Tensor& per_token, const QueryBlock& block, const torch::Tensor& result) {
  per_token.narrow(0, block.start, block.rows)
      .copy_(result.view({per_token.size(1), per_token.size(2), block.rows, result.size(2)}).permute({2, 0, 1, 3}));
}

struct CausalAttention : torch::autograd::Function<CausalAttention> {
  // q [tokens, heads, dim], k and v [tokens, kv_heads, dim] -> [tokens, kv_heads, groups, dim].
  static torch::Tensor forward(AutogradContext* context, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale, int64_t window) {
    RECORD_USER_SCOPE("lathe::attention");
    const auto tokens = q.size(0), dim = q.size(2), kv_heads = k.size(1), groups = q.size(1) / kv_heads;
    const auto keys = k.permute({1, 0, 2}).contiguous(), values = v.permute({1, 0, 2}).contiguous();
    auto output = torch::empty({tokens, kv_heads, groups, dim}, q.options());
    // log-sum-exp of each query's scores, [tokens, kv_heads, groups, 1]
    const auto statistics = statistics_dtype(q.scalar_type());
    auto log_sum_exp = torch::empty({tokens, kv_heads, groups, 1}, q.options().dtype(statistics));
    for (const auto& block : query_blocks(tokens, window)) {
      auto scores = torch::bmm(block_queries(q, block, kv_heads, groups, scale),
                               keys.narrow(1, block.first_key, block.width()).transpose(1, 2))
                        .to(statistics);
      mask_invisible(scores, block, groups, window);
      const auto highest = scores.amax(-1, /*keepdim=*/true);
      auto& probabilities = scores.sub_(highest).exp_();
      const auto total = probabilities.sum(-1, /*keepdim=*/true);
      probabilities.div_(total);
      store_rows(log_sum_exp, block, highest + total.log());
      store_rows(output, block,
                 torch::bmm(probabilities.to(q.scalar_type()), values.narrow(1, block.first_key, block.width())));
    }
    context->save_for_backward({q, keys, values, log_sum_exp});
    context->saved_data["scale"] = scale;
    context->saved_data["window"] = window;
    return output;
  }

  static variable_list backward(AutogradContext* context, variable_list grads) {
    RECORD_USER_SCOPE("lathe::attention_backward");
    const auto saved = context->get_saved_variables();
    const auto &q = saved[0], &keys = saved[1], &values = saved[2], &log_sum_exp = saved[3];
    const auto scale = context->saved_data["scale"].toDouble();
    const auto window = context->saved_data["window"].toInt();
    const auto tokens = q.size(0), dim = q.size(2), kv_heads = keys.size(0), groups = q.size(1) / kv_heads;
    const auto dtype = q.scalar_type(), statistics = statistics_dtype(dtype);
    const auto grad_output = grads[0].contiguous();
    auto grad_q = torch::empty({tokens, kv_heads, groups, dim}, q.options());
    auto grad_keys = torch::zeros(keys.sizes(), keys.options().dtype(statistics));
    auto grad_values = torch::zeros(values.sizes(), values.options().dtype(statistics));
    for (const auto& block : query_blocks(tokens, window)) {
      const auto queries = block_queries(q, block, kv_heads, groups, scale);
      const auto block_keys = keys.narrow(1, block.first_key, block.width());
      const auto block_values = values.narrow(1, block.first_key, block.width());
      auto scores = torch::bmm(queries, block_keys.transpose(1, 2)).to(statistics);
      mask_invisible(scores, block, groups, window);
      const auto& probabilities = scores.sub_(block_rows(log_sum_exp, block)).exp_();
      const auto block_grad = block_rows(grad_output, block);
      grad_values.narrow(1, block.first_key, block.width())
          .add_(torch::bmm(probabilities.to(dtype).transpose(1, 2), block_grad));
      auto grad_scores = torch::bmm(block_grad, block_values.transpose(1, 2)).to(statistics);
      // The softmax backward, P * (dP - sum(P * dP)): a block holds every key its queries see, so
      // the row sum is taken here from the same rounded dP (not from the output, which in 16 bits
      // would leave a gradient where there is none, as for a query that sees one key).
      const auto row_term = (grad_scores * probabilities).sum(-1, /*keepdim=*/true);
      grad_scores.sub_(row_term).mul_(probabilities);
      const auto grad_scores_in_dtype = grad_scores.to(dtype);
      store_rows(grad_q, block, torch::bmm(grad_scores_in_dtype, block_keys).mul_(scale));
      grad_keys.narrow(1, block.first_key, block.width()).add_(torch::bmm(grad_scores_in_dtype.transpose(1, 2), queries));
    }
    return {grad_q.view(q.sizes()), grad_keys.permute({1, 0, 2}).to(dtype).contiguous(),
            grad_values.permute({1, 0, 2}).to(dtype).contiguous(), torch::Tensor(), torch::Tensor()};
  }
};


// Weight rows dequantised per GEMM: a float32 copy of about 4 MiB.
int64_t weight_rows_per_product(int64_t in) { return std::max<int64_t>(64, (int64_t{1} << 20) / std::max<int64_t>(1, in)); }

// x2d [rows, in] times weight [out, in]^T, in x's dtype, a slab of weight rows at a time.
torch::Tensor dequantised_product(const torch::Tensor& x2d, const torch::Tensor& weight) {
  const auto out = weight.size(0), slab = weight_rows_per_product(weight.size(1));
  auto y = torch::empty({x2d.size(0), out}, x2d.options());
  for (int64_t begin = 0; begin < out; begin += slab) {
    const auto rows = std::min(slab, out - begin);
    auto columns = y.narrow(1, begin, rows);
    at::mm_out(columns, x2d, weight.narrow(0, begin, rows).to(x2d.scalar_type()).t());
  }
  return y;
}

torch::Tensor linear16_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const auto x2d = x.reshape({-1, weight.size(1)}).contiguous();
  auto y = x2d.size(0) <= kMatvecMaxRows && x.scalar_type() == torch::kFloat32 && matvec16_available()
               ? matvec16(x2d, weight)
               : dequantised_product(x2d, weight);
  if (bias.defined()) y.add_(bias.to(y.scalar_type()));
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y.view(sizes);
}

struct Linear16 : torch::autograd::Function<Linear16> {
  static torch::Tensor forward(AutogradContext* context, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
    context->save_for_backward({weight});
    context->saved_data["bias_dtype"] = static_cast<int64_t>(bias.scalar_type());
    return linear16_forward(x, weight, bias.numel() > 0 ? bias : torch::Tensor());
  }

  static variable_list backward(AutogradContext* context, variable_list grads) {
    RECORD_USER_SCOPE("lathe::linear16_backward");
    const auto weight = context->get_saved_variables()[0];
    const auto out = weight.size(0), in = weight.size(1), slab = weight_rows_per_product(in);
    const auto grad = grads[0].reshape({-1, out});
    torch::Tensor grad_x, grad_bias;
    if (context->needs_input_grad(0)) {
      // grad [rows, out] times weight [out, in], summed over slabs of output features.
      grad_x = torch::zeros({grad.size(0), in}, grad.options());
      for (int64_t begin = 0; begin < out; begin += slab) {
        const auto rows = std::min(slab, out - begin);
        grad_x.addmm_(grad.narrow(1, begin, rows), weight.narrow(0, begin, rows).to(grad.scalar_type()));
      }
      auto sizes = grads[0].sizes().vec();
      sizes.back() = in;
      grad_x = grad_x.view(sizes);
    }
    if (context->needs_input_grad(2))
      grad_bias = grad.sum(0).to(static_cast<torch::ScalarType>(context->saved_data["bias_dtype"].toInt()));
    return {grad_x, torch::Tensor(), grad_bias};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return RmsNorm::apply(x, weight, eps);
}

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up) { return SwiGlu::apply(gate, up); }

torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return Rotary::apply(x, cos, sin);
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                               int64_t window) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && k.sizes() == v.sizes() && q.size(0) == k.size(0) &&
                  q.size(2) == k.size(2) && q.size(1) % k.size(1) == 0,
              "causal_attention needs q [tokens, heads, dim] and k, v [tokens, kv_heads, dim] with heads a multiple "
              "of kv_heads, got q ",
              q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  // Autocast would run the products in its dtype; casting here keeps backward in the same one
  // whatever the autocast state when it runs, and gives q, k and v their gradients in their dtypes.
  auto dtype = q.scalar_type();
  if (at::autocast::is_cpu_enabled() && dtype == torch::kFloat32) dtype = at::autocast::get_autocast_cpu_dtype();
  const auto tokens = q.size(0), width = q.size(1) * q.size(2);
  return CausalAttention::apply(q.to(dtype), k.to(dtype), v.to(dtype), scale, window).view({tokens, width});
}

torch::Tensor linear16(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  TORCH_CHECK((weight.scalar_type() == torch::kBFloat16 || weight.scalar_type() == torch::kHalf) && weight.dim() == 2 &&
                  weight.is_contiguous(),
              "linear16 needs a contiguous 16-bit weight [out, in], got ", weight.sizes(), " ", weight.scalar_type());
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64,
              "linear16 computes in float32 or float64, got x ", x.scalar_type());
  TORCH_CHECK(x.size(-1) == weight.size(1), "linear16: x [..., ", x.size(-1), "] and weight ", weight.sizes());
  TORCH_CHECK(!weight.requires_grad(), "a weight held in ", weight.scalar_type(),
              " is frozen and cannot be trained; hold it in the compute dtype to train it");
  RECORD_USER_SCOPE("lathe::linear16");
  const bool needs_graph = torch::GradMode::is_enabled() && (x.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!needs_graph) return linear16_forward(x, weight, bias);
  // libtorch 1.13's custom functions take no undefined inputs: no bias travels as an empty one.
  return Linear16::apply(x, weight, bias.defined() ? bias : torch::empty({0}, x.options()));
}

}  // namespace lathe::fused
