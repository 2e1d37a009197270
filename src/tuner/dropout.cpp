// Why not torch::dropout on the CPU: libtorch built without MKL (Debian's) draws bernoulli_ one
// element at a time from a single mt19937 on one thread, and LoRA's dropout on the inputs of seven
// projections per layer was 6.9% of model (a)'s LoRA step (train_bench --trace, then
// bench/trace_summary.py). The mask here is splitmix64 of the element's index, split over threads.
#include "tuner/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
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

}  // namespace

torch::Tensor inverted_dropout(const torch::Tensor& x, double p) {
  if (!x.device().is_cpu() || p <= 0) return torch::dropout(x, p, /*train=*/true);
  const uint64_t seed = draw_seed();
  // An element is kept when the top 32 bits of its hash reach p * 2^32.
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
  return x * mask;
}

}  // namespace lathe
