// Written with intrinsics under a function-level target, so the library still builds for (and
// loads on) any x86-64 CPU; matvec16_available() tells the caller whether to take this path.
#include "model/matvec16.h"

#include <ATen/Parallel.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lathe::fused {

#if defined(__x86_64__)
namespace {

template <bool kBFloat16>
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const uint16_t* p) {
  const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBFloat16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
  else return _mm256_cvtph_ps(half);
}

template <bool kBFloat16>
inline float to_float(uint16_t bits) {
  if constexpr (kBFloat16) {
    const uint32_t word = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &word, sizeof value);
    return value;
  } else {
    return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
  }
}

__attribute__((target("avx2,fma,f16c"))) inline float horizontal_sum(__m256 v) {
  const __m128 pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 two = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}

// Outputs [o, o + kOutputs) for kRows rows of x, kUnroll steps of 8 weights per iteration: at most
// 8 of AVX2's 16 registers accumulate, each weight load serves every row and each x load every
// output, and enough sums are independent to hide the multiply-add latency.
template <bool kBFloat16, int kOutputs, int kRows, int kUnroll>
__attribute__((target("avx2,fma,f16c"))) void block_product(const uint16_t* weight, int64_t in, const float* x,
                                                              float* y, int64_t out, int64_t o) {
  constexpr int kWidth = 8 * kUnroll;
  const int64_t vector_end = in - in % kWidth;
  __m256 sums[kOutputs][kRows][kUnroll];
  for (int k = 0; k < kOutputs; ++k)
    for (int r = 0; r < kRows; ++r)
      for (int u = 0; u < kUnroll; ++u) sums[k][r][u] = _mm256_setzero_ps();
  for (int64_t i = 0; i < vector_end; i += kWidth) {
    // The weights stream from memory once per token: asking for them 1 KiB ahead keeps more
    // loads in flight than the hardware prefetcher does (about 10% faster on a Xeon with AMX).
    // A prefetch never faults, so running past the end of the weight is harmless.
#pragma GCC unroll 4
    for (int k = 0; k < kOutputs; ++k) _mm_prefetch(reinterpret_cast<const char*>(weight + (o + k) * in + i + 512), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int u = 0; u < kUnroll; ++u) {
      __m256 w[kOutputs];
#pragma GCC unroll 4
      for (int k = 0; k < kOutputs; ++k) w[k] = load8<kBFloat16>(weight + (o + k) * in + i + 8 * u);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        const __m256 xs = _mm256_loadu_ps(x + r * in + i + 8 * u);
#pragma GCC unroll 4
        for (int k = 0; k < kOutputs; ++k) sums[k][r][u] = _mm256_fmadd_ps(w[k], xs, sums[k][r][u]);
      }
    }
  }
  for (int k = 0; k < kOutputs; ++k) {
    const uint16_t* row = weight + (o + k) * in;
    for (int r = 0; r < kRows; ++r) {
      __m256 total = sums[k][r][0];
      for (int u = 1; u < kUnroll; ++u) total = _mm256_add_ps(total, sums[k][r][u]);
      float sum = horizontal_sum(total);
      for (int64_t i = vector_end; i < in; ++i) sum += to_float<kBFloat16>(row[i]) * x[r * in + i];
      y[r * out + o + k] = sum;
    }
  }
}

// Outputs [begin, end) for kRows (1-4) rows: one output at a time, four steps deep, for one row;
// two outputs at a time for more.
template <bool kBFloat16, int kRows>
void rows_times_weights(const uint16_t* weight, int64_t in, const float* x, float* y, int64_t out, int64_t begin,
                        int64_t end) {
  constexpr int kOutputs = kRows == 1 ? 1 : 2, kUnroll = kRows == 1 ? 4 : kRows == 2 ? 2 : 1;
  int64_t o = begin;
  for (; o + kOutputs <= end; o += kOutputs)
    block_product<kBFloat16, kOutputs, kRows, kUnroll>(weight, in, x, y, out, o);
  for (; o < end; ++o) block_product<kBFloat16, 1, kRows, kUnroll>(weight, in, x, y, out, o);
}

template <bool kBFloat16>
void rows_times_weights(const uint16_t* weight, int64_t in, const float* x, int64_t rows, float* y, int64_t out,
                        int64_t begin, int64_t end) {
  switch (rows) {
    case 1: rows_times_weights<kBFloat16, 1>(weight, in, x, y, out, begin, end); break;
    case 2: rows_times_weights<kBFloat16, 2>(weight, in, x, y, out, begin, end); break;
    case 3: rows_times_weights<kBFloat16, 3>(weight, in, x, y, out, begin, end); break;
    default: rows_times_weights<kBFloat16, 4>(weight, in, x, y, out, begin, end); break;
  }
}

// One weight of a group: its rows start at `first` in the group's concatenated outputs.
struct GroupMember {
  const uint16_t* weight;
  float* y;
  int64_t out, first;
};

template <bool kBFloat16>
void product(const std::vector<GroupMember>& members, int64_t in, const float* x, int64_t rows) {
  const auto& last = members.back();
  // Tasks of at least 16 outputs over the whole group, so one wake of the thread pool serves every
  // weight; within a task, spans of 16 outputs (at most 16 weight rows, which stay in cache) are
  // taken by every group of four rows of x before the next span.
  at::parallel_for(0, last.first + last.out, 16, [&](int64_t begin, int64_t end) {
    for (const auto& member : members) {
      const auto local_begin = std::max(begin, member.first) - member.first;
      const auto local_end = std::min(end, member.first + member.out) - member.first;
      for (int64_t span = local_begin; span < local_end; span += 16) {
        const auto span_end = std::min(local_end, span + 16);
        for (int64_t r = 0; r < rows; r += 4)
          rows_times_weights<kBFloat16>(member.weight, in, x + r * in, std::min<int64_t>(4, rows - r),
                                        member.y + r * member.out, member.out, span, span_end);
      }
    }
  });
}

}  // namespace

bool matvec16_available() {
  static const bool available = [] {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const bool fma = ecx & bit_FMA, f16c = ecx & bit_F16C, osxsave = ecx & bit_OSXSAVE;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    return fma && f16c && osxsave && (ebx & bit_AVX2);
  }();
  return available;
}

std::vector<torch::Tensor> matvec16(const torch::Tensor& x, const std::vector<torch::Tensor>& weights) {
  TORCH_CHECK(matvec16_available(), "matvec16 needs AVX2, FMA and F16C");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.size(0) <= kMatvecMaxRows,
              "matvec16 needs x [rows <= ", kMatvecMaxRows, ", in] contiguous float32, got ", x.sizes(), " ",
              x.scalar_type());
  TORCH_CHECK(!weights.empty(), "matvec16 needs at least one weight");
  const auto dtype = weights[0].scalar_type();
  const auto rows = x.size(0), in = x.size(1);
  std::vector<torch::Tensor> outputs;
  std::vector<GroupMember> members;
  int64_t first = 0;
  for (const auto& weight : weights) {
    TORCH_CHECK(weight.dim() == 2 && weight.size(1) == in && weight.is_contiguous() && weight.scalar_type() == dtype &&
                    (dtype == torch::kBFloat16 || dtype == torch::kHalf),
                "matvec16 needs weights [out, ", in, "] contiguous, all bfloat16 or all float16, got ", weight.sizes(),
                " ", weight.scalar_type());
    outputs.push_back(torch::empty({rows, weight.size(0)}, x.options()));
    if (weight.size(0) == 0) continue;
    members.push_back({reinterpret_cast<const uint16_t*>(weight.data_ptr()), outputs.back().data_ptr<float>(),
                       weight.size(0), first});
    first += weight.size(0);
  }
  if (rows == 0 || members.empty()) return outputs;
  if (dtype == torch::kBFloat16) product<true>(members, in, x.data_ptr<float>(), rows);
  else product<false>(members, in, x.data_ptr<float>(), rows);
  return outputs;
}

torch::Tensor matvec16(const torch::Tensor& x, const torch::Tensor& weight) {
  return matvec16(x, std::vector<torch::Tensor>{weight})[0];
}

#else

bool matvec16_available() { return false; }

std::vector<torch::Tensor> matvec16(const torch::Tensor&, const std::vector<torch::Tensor>&) {
  TORCH_CHECK(false, "matvec16 is built for x86-64 only");
}

torch::Tensor matvec16(const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, "matvec16 is built for x86-64 only");
}

#endif

}  // namespace lathe::fused
