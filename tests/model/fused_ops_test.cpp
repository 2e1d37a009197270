// The fused operators against the unfused computation they replace (plain libtorch operators
// differentiated by autograd): values and every input's gradient, in float32 and bfloat16, and the
// attention in float64 as well, where the two must agree to rounding.
#include "model/fused_ops.h"
#include "model/matvec16.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <limits>

namespace lathe {
namespace {

struct Tolerance {
  double absolute, relative;
};

Tolerance tolerance_for(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat64: return {1e-10, 1e-10};
    case torch::kBFloat16: return {2e-2, 2e-2};
    default: return {2e-5, 1e-4};
  }
}

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, torch::ScalarType dtype,
                  const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << what;
  const auto [absolute, relative] = tolerance_for(dtype);
  const auto a = actual.to(torch::kFloat64), e = expected.to(torch::kFloat64);
  const double difference = (a - e).abs().max().item<double>();
  const double scale = e.abs().max().item<double>();
  EXPECT_LE(difference, absolute + relative * scale) << what << ": max difference " << difference << " at scale " << scale;
}

// A leaf of `shape` in `dtype` with values from a fixed generator, needing a gradient.
torch::Tensor leaf(c10::IntArrayRef shape, torch::ScalarType dtype, double spread = 1.0) {
  return (torch::randn(shape, torch::kFloat64) * spread).to(dtype).requires_grad_(true);
}

struct Run {
  torch::Tensor output;
  std::vector<torch::Tensor> gradients;
};

// `compute` on copies of the leaves in `dtype`, back-propagating `upstream` (made once, from the
// first run's output shape, when undefined).
template <typename Compute>
Run run(const std::vector<torch::Tensor>& leaves, Compute compute, torch::ScalarType dtype, torch::Tensor& upstream) {
  std::vector<torch::Tensor> copies;
  for (const auto& tensor : leaves)
    copies.push_back(tensor.detach().to(dtype == torch::kFloat64 ? dtype : tensor.scalar_type()).requires_grad_(tensor.requires_grad()));
  Run result{compute(copies), {}};
  if (!upstream.defined()) upstream = torch::randn(result.output.sizes(), torch::kFloat64);
  result.output.backward(upstream.to(result.output.scalar_type()));
  for (const auto& copy : copies) result.gradients.push_back(copy.requires_grad() ? copy.grad() : torch::Tensor());
  return result;
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// In bfloat16 two computations of the same thing differ by their own roundings, so each is held to
// the float64 truth: the fused one may be off by no more than the unfused one is, give or take a
// quarter and one bfloat16 rounding of the largest value.
void expect_no_less_accurate(const torch::Tensor& fused, const torch::Tensor& unfused, const torch::Tensor& truth,
                             const std::string& what) {
  ASSERT_TRUE(fused.defined()) << what;
  ASSERT_EQ(fused.sizes(), truth.sizes()) << what;
  EXPECT_EQ(fused.scalar_type(), unfused.scalar_type()) << what;
  const double fused_error = max_difference(fused, truth), unfused_error = max_difference(unfused, truth);
  const double floor = 8e-3 * truth.abs().max().item<double>();
  EXPECT_LE(fused_error, 1.25 * unfused_error + floor)
      << what << ": fused error " << fused_error << ", unfused error " << unfused_error;
}

// Runs `fused` and `reference` on copies of the same leaves, back-propagates the same random
// upstream gradient through both, and compares the outputs and the leaves' gradients: directly in
// float32 and float64, through the float64 truth in bfloat16.
template <typename Fused, typename Reference>
void expect_same_values_and_gradients(const std::vector<torch::Tensor>& leaves, Fused fused, Reference reference,
                                      torch::ScalarType dtype, const std::string& what) {
  torch::Tensor upstream;
  const auto unfused = run(leaves, reference, dtype, upstream);
  const auto mine = run(leaves, fused, dtype, upstream);
  if (dtype != torch::kBFloat16) {
    expect_close(mine.output, unfused.output, dtype, what + " output");
    for (size_t i = 0; i < leaves.size(); ++i)
      if (leaves[i].requires_grad())
        expect_close(mine.gradients[i], unfused.gradients[i], dtype, what + " gradient of input " + std::to_string(i));
    return;
  }
  const auto truth = run(leaves, reference, torch::kFloat64, upstream);
  expect_no_less_accurate(mine.output, unfused.output, truth.output, what + " output");
  for (size_t i = 0; i < leaves.size(); ++i)
    if (leaves[i].requires_grad())
      expect_no_less_accurate(mine.gradients[i], unfused.gradients[i], truth.gradients[i],
                              what + " gradient of input " + std::to_string(i));
}

class FusedOps : public ::testing::TestWithParam<torch::ScalarType> {
 protected:
  void SetUp() override { torch::manual_seed(7); }
};

TEST_P(FusedOps, RmsNormEqualsTheUnfusedNorm) {
  const auto dtype = GetParam();
  const double eps = 1e-6;
  auto unfused = [&](const std::vector<torch::Tensor>& in) {
    const auto x32 = in[0].to(torch::kFloat32);
    return in[1] * (x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + eps)).to(in[0].scalar_type());
  };
  auto fused = [&](const std::vector<torch::Tensor>& in) { return fused::rms_norm(in[0], in[1], eps); };
  expect_same_values_and_gradients({leaf({3, 5, 48}, dtype, 3.0), leaf({48}, dtype)}, fused, unfused, dtype, "rms_norm");
  // A frozen weight (LoRA) and a float32 weight over bfloat16 activations.
  expect_same_values_and_gradients({leaf({7, 16}, dtype), leaf({16}, dtype).detach()}, fused, unfused, dtype,
                                   "rms_norm, frozen weight");
  expect_same_values_and_gradients({leaf({7, 16}, dtype), leaf({16}, torch::kFloat32)}, fused, unfused, dtype,
                                   "rms_norm, float32 weight");
}

TEST_P(FusedOps, SwiGluEqualsSiluTimesUp) {
  const auto dtype = GetParam();
  expect_same_values_and_gradients(
      {leaf({4, 9, 40}, dtype, 4.0), leaf({4, 9, 40}, dtype)},
      [](const std::vector<torch::Tensor>& in) { return fused::swiglu(in[0], in[1]); },
      [](const std::vector<torch::Tensor>& in) { return torch::silu(in[0]) * in[1]; }, dtype, "swiglu");
}

TEST_P(FusedOps, RotaryEqualsRotateHalf) {
  const auto dtype = GetParam();
  auto rotate_half = [](const torch::Tensor& x) {
    const auto half = x.size(-1) / 2;
    return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
  };
  const auto angles = torch::rand({1, 11, 1, 16}, torch::kFloat64) * 6.3;
  const auto cos = angles.cos().to(dtype), sin = angles.sin().to(dtype);
  expect_same_values_and_gradients(
      {leaf({1, 11, 3, 16}, dtype)},
      [&](const std::vector<torch::Tensor>& in) { return fused::rotary(in[0], cos, sin); },
      [&](const std::vector<torch::Tensor>& in) { return in[0] * cos + rotate_half(in[0]) * sin; }, dtype, "rotary");
  // Heads before tokens (a transposed view) and float32 tables over 16-bit activations.
  const auto cos32 = angles.cos().to(torch::kFloat32).transpose(1, 2), sin32 = angles.sin().to(torch::kFloat32).transpose(1, 2);
  expect_same_values_and_gradients(
      {leaf({1, 11, 3, 16}, dtype)},
      [&](const std::vector<torch::Tensor>& in) { return fused::rotary(in[0].transpose(1, 2), cos32, sin32); },
      [&](const std::vector<torch::Tensor>& in) {
        return in[0].transpose(1, 2) * cos32 + rotate_half(in[0].transpose(1, 2)) * sin32;
      },
      dtype, "rotary, transposed");
}

// Causal attention as transformers' eager code computes it: k and v repeated for each query head,
// the full [tokens, tokens] scores masked, softmax, and the weighted sum.
torch::Tensor unfused_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                                int64_t window) {
  const auto tokens = q.size(0), heads = q.size(1), groups = heads / k.size(1);
  const auto queries = q.transpose(0, 1);                                  // [heads, tokens, dim]
  const auto keys = k.repeat_interleave(groups, 1).transpose(0, 1);        // [heads, tokens, dim]
  const auto values = v.repeat_interleave(groups, 1).transpose(0, 1);
  const auto positions = torch::arange(tokens);
  auto invisible = positions.view({1, -1}) > positions.view({-1, 1});
  if (window > 0) invisible = invisible.logical_or(positions.view({-1, 1}) - positions.view({1, -1}) >= window);
  auto scores = torch::matmul(queries, keys.transpose(1, 2)) * scale;
  scores = scores.to(q.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
  scores = scores.masked_fill(invisible, -std::numeric_limits<double>::infinity());
  const auto probabilities = torch::softmax(scores, -1).to(q.scalar_type());
  return torch::matmul(probabilities, values).transpose(0, 1).reshape({tokens, -1});
}

struct AttentionCase {
  int64_t tokens, heads, kv_heads, dim, window;
};

TEST_P(FusedOps, CausalAttentionEqualsTheMaskedSoftmaxAcrossBlocksAndWindows) {
  const auto dtype = GetParam();
  // Within one block of queries, exactly two, across several; grouped and plain heads; windows
  // narrower than a block, wider than one and wider than the sequence.
  const std::vector<AttentionCase> cases = {{1, 2, 1, 8, 0},    {5, 4, 2, 8, 0},     {128, 4, 2, 16, 0},
                                            {256, 2, 2, 8, 0},  {300, 6, 2, 16, 0},  {300, 4, 1, 8, 7},
                                            {390, 4, 2, 8, 200}, {130, 2, 1, 8, 500}};
  for (const auto& c : cases) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
    const auto what = "attention over " + std::to_string(c.tokens) + " tokens, " + std::to_string(c.heads) + "/" +
                      std::to_string(c.kv_heads) + " heads, window " + std::to_string(c.window);
    expect_same_values_and_gradients(
        {leaf({c.tokens, c.heads, c.dim}, dtype, 2.0), leaf({c.tokens, c.kv_heads, c.dim}, dtype, 2.0),
         leaf({c.tokens, c.kv_heads, c.dim}, dtype)},
        [&](const std::vector<torch::Tensor>& in) { return fused::causal_attention(in[0], in[1], in[2], scale, c.window); },
        [&](const std::vector<torch::Tensor>& in) { return unfused_attention(in[0], in[1], in[2], scale, c.window); },
        dtype, what);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedOps, ::testing::Values(torch::kFloat32, torch::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(FusedAttention, EqualsTheReferenceInFloat64ToRounding) {
  torch::manual_seed(3);
  const double scale = 0.3;
  expect_same_values_and_gradients(
      {leaf({333, 6, 8}, torch::kFloat64, 2.0), leaf({333, 3, 8}, torch::kFloat64, 2.0), leaf({333, 3, 8}, torch::kFloat64)},
      [&](const std::vector<torch::Tensor>& in) { return fused::causal_attention(in[0], in[1], in[2], scale, 150); },
      [&](const std::vector<torch::Tensor>& in) { return unfused_attention(in[0], in[1], in[2], scale, 150); },
      torch::kFloat64, "float64 attention");
}

TEST(FusedAttention, UnderAutocastRunsInBFloat16AndGivesFloat32Gradients) {
  torch::manual_seed(5);
  const auto q = leaf({200, 4, 16}, torch::kFloat32), k = leaf({200, 2, 16}, torch::kFloat32),
             v = leaf({200, 2, 16}, torch::kFloat32);
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(torch::kBFloat16);
  const auto output = fused::causal_attention(q, k, v, 0.25);
  at::autocast::set_cpu_enabled(false);
  EXPECT_EQ(output.scalar_type(), torch::kBFloat16);
  output.to(torch::kFloat32).sum().backward();
  for (const auto& input : {q, k, v}) EXPECT_EQ(input.grad().scalar_type(), torch::kFloat32);
  const auto bfloat = [](const torch::Tensor& t) { return t.detach().to(torch::kBFloat16); };
  expect_close(output, unfused_attention(bfloat(q), bfloat(k), bfloat(v), 0.25, 0), torch::kBFloat16, "autocast output");
}

TEST(FusedAttention, RefusesMismatchedShapes) {
  const auto q = torch::zeros({4, 3, 8}), k = torch::zeros({4, 2, 8});
  EXPECT_THROW(fused::causal_attention(q, k, k, 1.0), c10::Error);
  EXPECT_THROW(fused::causal_attention(torch::zeros({4, 4, 8}), k, torch::zeros({4, 2, 4}), 1.0), c10::Error);
}

// Weights held in 16 bits, computed with in float: the reference is torch::linear on the same
// weight values converted to x's dtype (exact), so only the order of the sums may differ.
class Linear16 : public ::testing::TestWithParam<torch::ScalarType> {};

INSTANTIATE_TEST_SUITE_P(WeightDtypes, Linear16, ::testing::Values(torch::kBFloat16, torch::kHalf),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST_P(Linear16, KernelEqualsFloatProductForFewRowsAndAnyWidth) {
  if (!fused::matvec16_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C";
  torch::manual_seed(3);
  for (const int64_t in : {1, 15, 16, 37, 64, 200}) {
    for (const int64_t rows : {1, 2, 3, 4, 5, 8}) {
      const auto weight = torch::randn({29, in}).to(GetParam());
      const auto x = torch::randn({rows, in});
      const auto expected = torch::mm(x.to(torch::kFloat64), weight.to(torch::kFloat64).t()).to(torch::kFloat32);
      const auto got = fused::matvec16(x, weight);
      expect_close(got, expected, torch::kFloat32, "in " + std::to_string(in) + ", rows " + std::to_string(rows));
    }
  }
}

TEST_P(Linear16, KernelTakesSeveralWeightsInOneCall) {
  if (!fused::matvec16_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C";
  torch::manual_seed(5);
  // Widths that split the 16-output tasks across weights (q, k, v of uneven sizes), and an empty one.
  const std::vector<torch::Tensor> weights{torch::randn({37, 40}).to(GetParam()), torch::randn({8, 40}).to(GetParam()),
                                           torch::randn({0, 40}).to(GetParam()), torch::randn({21, 40}).to(GetParam())};
  for (const int64_t rows : {1, 3, 8}) {
    const auto x = torch::randn({rows, 40});
    const auto got = fused::matvec16(x, weights);
    ASSERT_EQ(got.size(), weights.size());
    for (size_t i = 0; i < weights.size(); ++i) {
      const auto expected =
          torch::mm(x.to(torch::kFloat64), weights[i].to(torch::kFloat64).t()).to(torch::kFloat32);
      ASSERT_EQ(got[i].sizes(), expected.sizes());
      if (expected.numel() > 0)
        expect_close(got[i], expected, torch::kFloat32, "weight " + std::to_string(i) + ", rows " + std::to_string(rows));
    }
  }
  const std::vector<torch::Tensor> mixed{weights[0], weights[1].to(torch::kFloat32)};
  EXPECT_THROW(fused::matvec16(torch::randn({1, 40}), mixed), c10::Error);
}

TEST_P(Linear16, ValuesAndGradientsEqualTorchLinearOnTheFloatWeights) {
  torch::manual_seed(4);
  const auto weight = torch::randn({300, 48}).to(GetParam());  // 300 outputs: several weight slabs
  for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
    for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 1, 48}, {3, 48}, {2, 7, 48}, {1, 900, 48}}) {
      const auto x = leaf(shape, dtype), bias = leaf({300}, dtype);
      torch::Tensor upstream;
      const auto fused_run = run({x, bias}, [&](const auto& in) { return fused::linear16(in[0], weight, in[1]); },
                                 dtype, upstream);
      const auto reference = run({x, bias}, [&](const auto& in) { return torch::linear(in[0], weight.to(dtype), in[1]); },
                                 dtype, upstream);
      const auto what = std::string(c10::toString(dtype)) + " x " + std::to_string(x.numel() / 48) + " rows";
      expect_close(fused_run.output, reference.output, dtype == torch::kFloat64 ? torch::kFloat32 : dtype, what);
      expect_close(fused_run.gradients[0], reference.gradients[0], torch::kFloat32, what + ", grad x");
      expect_close(fused_run.gradients[1], reference.gradients[1], torch::kFloat32, what + ", grad bias");
    }
  }
  // Outside autograd (decoding) and without a bias.
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 48});
  expect_close(fused::linear16(x, weight, {}), torch::linear(x, weight.to(torch::kFloat32)), torch::kFloat32, "no grad");
}

TEST_P(Linear16, RefusesATrainableWeightAndOtherDtypes) {
  auto weight = torch::randn({4, 8}).to(GetParam()).requires_grad_(true);
  try {
    fused::linear16(torch::randn({2, 8}), weight, {});
    FAIL() << "a trainable 16-bit weight was accepted";
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what_without_backtrace()).find("frozen"), std::string::npos) << error.what();
  }
  EXPECT_THROW(fused::linear16(torch::randn({2, 8}), torch::randn({4, 8}), {}), c10::Error);  // a float32 weight
  EXPECT_THROW(fused::linear16(torch::randn({2, 7}), weight.detach(), {}), c10::Error);       // widths differ
}

}  // namespace
}  // namespace lathe
