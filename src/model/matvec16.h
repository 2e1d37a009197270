// Matrix-vector products that read 16-bit weights (bfloat16 or float16) and compute in float32:
// decoding one token reads every weight once, so holding them in 16 bits halves the bytes read.
// libtorch has no mixed-dtype product (its bfloat16 mv rounds the result to bfloat16 and, on CPUs
// without native bfloat16, is far slower than float32), hence this hand-written AVX2 kernel.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace lathe::fused {

// Rows of x the kernel takes at most (decoding a small batch); more rows go through a GEMM.
constexpr int64_t kMatvecMaxRows = 8;

// Whether this CPU runs the kernel (AVX2, FMA and F16C).
bool matvec16_available();

// y [rows, out] = x [rows, in] (float32, contiguous) times weight [out, in]^T (bfloat16 or float16,
// contiguous), accumulated in float32; rows <= kMatvecMaxRows, matvec16_available().
torch::Tensor matvec16(const torch::Tensor& x, const torch::Tensor& weight);

// The same for several weights of one dtype and input width (q, k and v; gate and up), in one
// pass of the thread pool rather than one per weight: y_i [rows, out_i] = x weights[i]^T.
std::vector<torch::Tensor> matvec16(const torch::Tensor& x, const std::vector<torch::Tensor>& weights);

}  // namespace lathe::fused
