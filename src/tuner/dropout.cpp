// Why not torch::dropout on the CPU: libtorch built without MKL (Debian's) draws bernoulli_ one
// element at a time from a single mt19937 on one thread, and LoRA's dropout on the inputs of seven
// projections per layer was 6.9% of model (a)'s LoRA step (train_bench --trace, then
// bench/trace_summary.py). The mask here is splitmix64 of the element's index, split over threads.
#include "tuner/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <mutex>

namespace lathe {
namespace {

// splitmix64's output function (Steele, Lea and Flood; constants as Vigna publishes them): the
// index-th value of the generator started at `seed`.
uint64_t splitmix64(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t draw_seed() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
}

// The scaled keep mask of `x`'s shape for one seed: an element is kept when the top 32 bits of
// its hash reach p * 2^32.
torch::Tensor keep_mask(const torch::Tensor& x, double p, uint64_t seed) {
  const auto threshold = static_cast<uint64_t>(std::llround(p * 4294967296.0));
  const double kept_scale = 1.0 / (1.0 - p);
  auto mask = torch::empty(x.sizes(), x.options().requires_grad(false));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, mask.scalar_type(), "inverted_dropout", [&] {
    auto* values = mask.data_ptr<scalar_t>();
    const auto kept = static_cast<scalar_t>(kept_scale), dropped = static_cast<scalar_t>(0);
    at::parallel_for(0, mask.numel(), int64_t{1} << 15, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        values[i] = (splitmix64(seed, static_cast<uint64_t>(i)) >> 32) >= threshold ? kept : dropped;
    });
  });
  return mask;
}

struct DropoutThenLinear : torch::autograd::Function<DropoutThenLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& weight, double p) {
    const uint64_t seed = draw_seed();
    context->save_for_backward({x, weight});
    context->saved_data["p"] = p;
    context->saved_data["seed"] = static_cast<int64_t>(seed);
    torch::NoGradGuard no_grad;
    return torch::linear(x * keep_mask(x, p, seed), weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grads) {
    const auto saved = context->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1];
    const auto mask = keep_mask(x, context->saved_data["p"].toDouble(),
                                static_cast<uint64_t>(context->saved_data["seed"].toInt()));
    const auto grad = grads[0].reshape({-1, weight.size(0)});
    torch::Tensor grad_x, grad_weight;
    if (context->needs_input_grad(0)) grad_x = grads[0].matmul(weight).mul_(mask);
    if (context->needs_input_grad(1))
      grad_weight = grad.t().mm((x * mask).reshape({-1, weight.size(1)})).to(weight.scalar_type());
    return {grad_x, grad_weight, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor inverted_dropout(const torch::Tensor& x, double p) {
  if (!x.device().is_cpu() || p <= 0) return torch::dropout(x, p, /*train=*/true);
  return x * keep_mask(x, p, draw_seed());
}

torch::Tensor dropout_then_linear(const torch::Tensor& x, const torch::Tensor& weight, double p) {
  // Under autocast the product's dtype is autocast's, which the backward above does not follow.
  if (!x.device().is_cpu() || p <= 0 || p >= 1 || at::autocast::is_cpu_enabled())
    return torch::linear(inverted_dropout(x, p), weight);
  return DropoutThenLinear::apply(x, weight, p);
}

}  // namespace lathe
