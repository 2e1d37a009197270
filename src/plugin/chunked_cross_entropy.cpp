// Cross entropy through the output head, one chunk of rows at a time (docs/architecture.md: "the loss
// never needs the full logits"). Forward keeps only the per-row logsumexp; backward recomputes
// each chunk's logits, which costs one more matmul but no [N, V] tensor in either direction. A
// frozen head skips that recomputation (see ChunkedCrossEntropy).
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include "lathe/common/format.h"
#include "lathe/plugin/loss.h"
#include "lathe/plugin/token_losses.h"

namespace lathe {
namespace {

constexpr int64_t kIgnoreIndex = -100;
constexpr int64_t kChunkLogitBytes = int64_t{256} << 20;

// Gradients summed over many chunks are kept in at least float32.
torch::ScalarType accumulate_dtype(torch::ScalarType dtype) {
  return dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// The matmul runs in the head's dtype: casting a chunk of hidden rows is cheap, casting the whole
// [V, H] head on every call is not (a bfloat16 frozen head under float32 activations).
struct Chunk {
  torch::Tensor hidden;   // [rows, H] in the head's dtype
  torch::Tensor logits;   // [rows, V] float32 (float64 for float64 inputs)
  torch::Tensor targets;  // [rows], ignored ones clamped to 0
  torch::Tensor valid;    // [rows] bool
};

Chunk chunk_logits(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                   int64_t begin, int64_t end) {
  Chunk chunk;
  chunk.hidden = hidden.slice(0, begin, end).to(weight.scalar_type());
  chunk.logits = chunk.hidden.mm(weight.t()).to(accumulate_dtype(weight.scalar_type()));
  const auto chunk_targets = targets.slice(0, begin, end);
  chunk.valid = chunk_targets != kIgnoreIndex;
  chunk.targets = chunk_targets.clamp_min(0);
  return chunk;
}

void check_inputs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "chunked_token_cross_entropy: hidden [N, H] and weight [V, H] expected, got ", hidden.sizes(),
              " and ", weight.sizes());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0) && targets.scalar_type() == torch::kInt64,
              "chunked_token_cross_entropy: int64 targets [", hidden.size(0), "] expected, got ", targets.sizes(),
              " ", targets.scalar_type());
  const auto kept = targets.masked_select(targets != kIgnoreIndex);
  if (kept.numel() == 0) return;
  const auto vocab = weight.size(0);
  const auto low = kept.min().item<int64_t>(), high = kept.max().item<int64_t>();
  if (low < 0 || high >= vocab)
    fail("label id {} is outside the model's vocabulary of {} tokens (does the tokenizer match the model?)",
         low < 0 ? low : high, vocab);
}

// grad_weight (float32 or float64) += grad_logits^T hidden. A bfloat16 head multiplies in bfloat16,
// as autocast's linear does, and only the sum is kept wide.
void accumulate_weight_gradient(torch::Tensor& grad_weight, const torch::Tensor& grad_logits,
                                const torch::Tensor& chunk_hidden) {
  if (chunk_hidden.scalar_type() == grad_weight.scalar_type()) {
    grad_weight.addmm_(grad_logits.t(), chunk_hidden);
  } else {
    grad_weight.add_(grad_logits.to(chunk_hidden.scalar_type()).t().mm(chunk_hidden));
  }
}

// d loss_i / d logits_i = softmax_i - onehot(target_i), written over the chunk's logits.
torch::Tensor unit_logit_gradient(Chunk& chunk, const torch::Tensor& chunk_logsumexp) {
  auto gradient = chunk.logits.sub_(chunk_logsumexp.unsqueeze(1)).exp_();
  gradient.scatter_add_(1, chunk.targets.unsqueeze(1), torch::full({gradient.size(0), 1}, -1.0, gradient.options()));
  return gradient.masked_fill_(~chunk.valid.unsqueeze(1), 0);
}

// When only the hidden rows need a gradient (a frozen head: LoRA, or a tied embedding that is not
// trained), forward also computes d loss_i / d hidden_i while each chunk's logits are at hand, and
// backward only scales those rows by the incoming per-row gradient: two head matmuls per chunk
// instead of three, and one softmax instead of two. The weight's gradient cannot be taken early,
// because it sums rows under scales that backward learns only later.
class ChunkedCrossEntropy : public torch::autograd::Function<ChunkedCrossEntropy> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& targets, int64_t chunk_tokens,
                               bool hidden_gradient_in_forward) {
    RECORD_USER_SCOPE("lathe::cross_entropy");
    const auto rows = hidden.size(0);
    auto losses = torch::zeros({rows}, hidden.options().dtype(accumulate_dtype(weight.scalar_type())));
    auto logsumexp = torch::empty_like(losses);
    torch::Tensor unit_grad_hidden;
    if (hidden_gradient_in_forward) unit_grad_hidden = torch::empty_like(hidden);
    for (int64_t begin = 0; begin < rows; begin += chunk_tokens) {
      const auto end = std::min(rows, begin + chunk_tokens);
      auto chunk = chunk_logits(hidden, weight, targets, begin, end);
      const auto chunk_lse = chunk.logits.logsumexp(1);
      const auto target_logit = chunk.logits.gather(1, chunk.targets.unsqueeze(1)).squeeze(1);
      logsumexp.slice(0, begin, end).copy_(chunk_lse);
      losses.slice(0, begin, end).copy_((chunk_lse - target_logit).masked_fill(~chunk.valid, 0));
      if (hidden_gradient_in_forward)
        unit_grad_hidden.slice(0, begin, end)
            .copy_(unit_logit_gradient(chunk, chunk_lse).to(weight.scalar_type()).mm(weight));
    }
    if (hidden_gradient_in_forward) {
      context->save_for_backward({unit_grad_hidden});
    } else {
      context->save_for_backward({hidden, weight, targets, logsumexp});
    }
    context->saved_data["chunk_tokens"] = chunk_tokens;
    context->saved_data["hidden_gradient_in_forward"] = hidden_gradient_in_forward;
    return losses;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list output_grads) {
    RECORD_USER_SCOPE("lathe::cross_entropy_backward");
    const auto saved = context->get_saved_variables();
    const auto& grad_losses = output_grads[0];
    if (context->saved_data["hidden_gradient_in_forward"].toBool()) {
      const auto& unit_grad_hidden = saved[0];
      auto grad_hidden = unit_grad_hidden * grad_losses.to(unit_grad_hidden.scalar_type()).unsqueeze(1);
      return {grad_hidden, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    const auto &hidden = saved[0], &weight = saved[1], &targets = saved[2], &logsumexp = saved[3];
    const auto chunk_tokens = context->saved_data["chunk_tokens"].toInt();
    const bool want_hidden = context->needs_input_grad(0), want_weight = context->needs_input_grad(1);

    const auto rows = hidden.size(0);
    const auto accumulate = accumulate_dtype(weight.scalar_type());
    torch::Tensor grad_hidden, grad_weight;
    if (want_hidden) grad_hidden = torch::empty_like(hidden);
    if (want_weight) grad_weight = torch::zeros(weight.sizes(), weight.options().dtype(accumulate));

    for (int64_t begin = 0; begin < rows && (want_hidden || want_weight); begin += chunk_tokens) {
      const auto end = std::min(rows, begin + chunk_tokens);
      auto chunk = chunk_logits(hidden, weight, targets, begin, end);
      auto grad_logits = unit_logit_gradient(chunk, logsumexp.slice(0, begin, end));
      grad_logits.mul_(grad_losses.slice(0, begin, end).to(accumulate).unsqueeze(1));
      if (want_hidden) grad_hidden.slice(0, begin, end).copy_(grad_logits.to(weight.scalar_type()).mm(weight));
      if (want_weight) accumulate_weight_gradient(grad_weight, grad_logits, chunk.hidden);
    }
    if (want_weight) grad_weight = grad_weight.to(weight.scalar_type());
    return {grad_hidden, grad_weight, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

int64_t default_chunk_tokens(int64_t vocab_size) {
  return std::max<int64_t>(1, kChunkLogitBytes / (std::max<int64_t>(1, vocab_size) * 4));
}

torch::Tensor chunked_token_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                          const torch::Tensor& targets, int64_t chunk_tokens) {
  check_inputs(hidden, weight, targets);
  if (chunk_tokens <= 0) chunk_tokens = default_chunk_tokens(weight.size(0));
  // Under bfloat16 autocast (the trainer's --torch_dtype bfloat16 with float32 master weights) the
  // head is cast once per call, through autograd, so its gradient comes back as autocast's linear
  // would give it.
  const bool autocast_head = at::autocast::is_cpu_enabled() && weight.is_floating_point() &&
                             weight.scalar_type() != at::autocast::get_autocast_cpu_dtype() &&
                             weight.scalar_type() != torch::kFloat64;
  const auto head = autocast_head ? weight.to(at::autocast::get_autocast_cpu_dtype()) : weight;
  const bool hidden_gradient_in_forward =
      torch::GradMode::is_enabled() && hidden.requires_grad() && !head.requires_grad();
  return ChunkedCrossEntropy::apply(hidden, head, targets, chunk_tokens, hidden_gradient_in_forward);
}

}  // namespace lathe
