// The loss path: the chunked cross entropy against PyTorch (tests/reference/loss_ref.py) and
// finite differences, the token losses and the embedding losses against hand-computed values, and
// the loss registry.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "lathe/plugin/loss.h"
#include "lathe/plugin/embedding_losses.h"
#include "lathe/plugin/token_losses.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kIgnore = -100;  // int, like the other literals in torch::tensor({...}) lists

// ---- PyTorch reference --------------------------------------------------------------------

struct Reference {
  torch::Tensor losses, grad_hidden, grad_weight;
  // bfloat16 inputs: PyTorch's own bfloat16 computation of the same problem on this CPU.
  torch::Tensor torch_grad_hidden, torch_grad_weight;
};

void write_file(const fs::path& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<char> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs loss_ref.py on the same tensors (passed through a file, so both sides see identical bits).
Reference pytorch_reference(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                            const torch::Tensor& upstream) {
  const auto dir = fs::temp_directory_path() / ("lathe-loss-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  c10::impl::GenericDict inputs(c10::StringType::get(), c10::TensorType::get());
  inputs.insert("hidden", hidden.detach());
  inputs.insert("weight", weight.detach());
  inputs.insert("targets", targets);
  inputs.insert("upstream", upstream);
  write_file(dir / "in.pt", torch::pickle_save(c10::IValue(inputs)));
  const auto command = "/usr/bin/python3 " + std::string(LATHE_SOURCE_DIR) + "/tests/reference/loss_ref.py " +
                       (dir / "in.pt").string() + " " + (dir / "out.pt").string() + " 2> " +
                       (dir / "err.txt").string();
  if (std::system(command.c_str()) != 0) {
    const auto error = read_file(dir / "err.txt");
    ADD_FAILURE() << "the PyTorch reference failed (needs /usr/bin/python3 with python3-torch): " << command << "\n"
                  << std::string(error.begin(), error.end());
    return {};
  }
  const auto outputs = torch::pickle_load(read_file(dir / "out.pt")).toGenericDict();
  fs::remove_all(dir);
  auto optional = [&](const char* key) { return outputs.contains(key) ? outputs.at(key).toTensor() : torch::Tensor(); };
  return {outputs.at("losses").toTensor(), outputs.at("grad_hidden").toTensor(), optional("grad_weight"),
          optional("torch_grad_hidden"), optional("torch_grad_weight")};
}

struct Problem {
  torch::Tensor hidden, weight, targets, upstream;
};

// Random rows with a few ignored targets; upstream weighs each token's loss differently so that
// the backward's per-row scaling is exercised.
Problem random_problem(int64_t rows, int64_t width, int64_t vocab, torch::Dtype dtype, uint64_t seed) {
  torch::manual_seed(seed);
  Problem problem;
  problem.hidden = torch::randn({rows, width}, torch::kFloat64).to(dtype).requires_grad_(true);
  problem.weight = torch::randn({vocab, width}, torch::kFloat64).to(dtype).requires_grad_(true);
  problem.targets = torch::randint(vocab, {rows}, torch::kInt64);
  problem.targets.index_put_({torch::arange(0, rows, 5)}, kIgnore);
  problem.upstream = torch::rand({rows}, torch::kFloat64).to(torch::kFloat32) + 0.5;
  return problem;
}

struct Result {
  torch::Tensor losses, grad_hidden, grad_weight;
};

Result run_kernel(const Problem& problem, int64_t chunk_tokens) {
  problem.hidden.mutable_grad() = torch::Tensor();
  problem.weight.mutable_grad() = torch::Tensor();
  auto losses = chunked_token_cross_entropy(problem.hidden, problem.weight, problem.targets, chunk_tokens);
  (losses * problem.upstream.to(losses.scalar_type())).sum().backward();
  return {losses.detach(), problem.hidden.grad().clone(), problem.weight.grad().clone()};
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

TEST(ChunkedCrossEntropy, MatchesPyTorchInFloat32) {
  const auto problem = random_problem(37, 16, 50, torch::kFloat32, 1);
  const auto reference = pytorch_reference(problem.hidden, problem.weight, problem.targets, problem.upstream);
  ASSERT_TRUE(reference.losses.defined());
  const auto result = run_kernel(problem, 7);
  EXPECT_EQ(result.losses.scalar_type(), torch::kFloat32);
  EXPECT_LT(max_difference(result.losses, reference.losses), 1e-5);
  EXPECT_LT(max_difference(result.grad_hidden, reference.grad_hidden), 1e-5);
  EXPECT_LT(max_difference(result.grad_weight, reference.grad_weight), 1e-5);
}

// The bound on a bfloat16 gradient: at most a quarter more error than PyTorch makes computing the
// same products in bfloat16 on this CPU, plus one bfloat16 rounding (2^-8) of the largest entry.
// How bfloat16 matrix products are summed differs between CPUs: libtorch 1.13 sums in float32 where
// the CPU has AVX512-BF16 (oneDNN), but in bfloat16 itself on AVX2-only CPUs for the layouts the
// backward uses (a [37, 50] x [50, 16] product measured 0.008 of sum |a||b| off there, against
// 0.0014 summed in float32). So a fixed bound held on one machine (0.05: measured 0.031 with
// AVX512-BF16) fails on the other (0.0511 on a Zen 3); PyTorch's own error moves with the CPU.
void expect_bfloat16_gradient(const torch::Tensor& lathe, const torch::Tensor& exact, const torch::Tensor& pytorch,
                              const char* what) {
  ASSERT_TRUE(pytorch.defined()) << what;
  const double lathe_error = max_difference(lathe, exact), pytorch_error = max_difference(pytorch, exact);
  const double rounding = std::ldexp(exact.abs().max().item<double>(), -8);
  EXPECT_LE(lathe_error, 1.25 * pytorch_error + rounding)
      << what << ": PyTorch's bfloat16 error " << pytorch_error << ", largest entry " << exact.abs().max().item<double>();
}

// bfloat16 logits are rounded to 2^-9 of their size, so a per-token loss (logsumexp minus one
// logit) may be off by about 2^-8 of the largest |logit|: held to 1% of it against the exact
// (float64) values (measured 0.038 with largest |logit| 15.6). The logits' product is a dot
// product per entry, summed in float32 on every CPU. Gradients: expect_bfloat16_gradient.
TEST(ChunkedCrossEntropy, BFloat16WithinStatedTolerance) {
  const auto problem = random_problem(37, 16, 50, torch::kBFloat16, 2);
  const auto reference = pytorch_reference(problem.hidden, problem.weight, problem.targets, problem.upstream);
  ASSERT_TRUE(reference.losses.defined());
  const auto result = run_kernel(problem, 7);
  EXPECT_EQ(result.losses.scalar_type(), torch::kFloat32);
  EXPECT_EQ(result.grad_hidden.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(result.grad_weight.scalar_type(), torch::kBFloat16);
  const double largest_logit =
      problem.hidden.to(torch::kFloat64).mm(problem.weight.to(torch::kFloat64).t()).abs().max().item<double>();
  EXPECT_LT(max_difference(result.losses, reference.losses), 0.01 * largest_logit)
      << "largest |logit| " << largest_logit;
  expect_bfloat16_gradient(result.grad_hidden, reference.grad_hidden, reference.torch_grad_hidden, "grad_hidden");
  expect_bfloat16_gradient(result.grad_weight, reference.grad_weight, reference.torch_grad_weight, "grad_weight");
}

// The LoRA case: a frozen bfloat16 head under float32 activations. The matmul runs in bfloat16
// (the head is not copied to float32), the gradient comes back in the activations' dtype.
TEST(ChunkedCrossEntropy, FrozenBFloat16HeadUnderFloat32Activations) {
  const auto problem = random_problem(37, 16, 50, torch::kFloat32, 8);
  const auto head = problem.weight.detach().to(torch::kBFloat16);
  const auto reference = pytorch_reference(problem.hidden, head, problem.targets, problem.upstream);
  ASSERT_TRUE(reference.losses.defined());
  const auto losses = chunked_token_cross_entropy(problem.hidden, head, problem.targets, 7);
  (losses * problem.upstream).sum().backward();
  EXPECT_EQ(problem.hidden.grad().scalar_type(), torch::kFloat32);
  const double largest_logit =
      problem.hidden.to(torch::kFloat64).mm(head.to(torch::kFloat64).t()).abs().max().item<double>();
  EXPECT_LT(max_difference(losses.detach(), reference.losses), 0.01 * largest_logit);
  expect_bfloat16_gradient(problem.hidden.grad(), reference.grad_hidden, reference.torch_grad_hidden, "grad_hidden");
}

// Each entry of `analytic` against the central difference of `objective` when that entry of
// `tensor` (float64) moves by 1e-6 either way.
void expect_central_differences(const torch::Tensor& tensor, const torch::Tensor& analytic,
                                const std::function<double()>& objective) {
  const double step = 1e-6;
  auto flat = tensor.detach().view(-1);
  const auto gradient = analytic.reshape(-1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double original = flat[i].item<double>();
    flat[i] = original + step;
    const double up = objective();
    flat[i] = original - step;
    const double down = objective();
    flat[i] = original;
    EXPECT_NEAR(gradient[i].item<double>(), (up - down) / (2 * step), 1e-7) << "entry " << i;
  }
}

TEST(ChunkedCrossEntropy, GradientsMatchFiniteDifferencesInFloat64) {
  const auto problem = random_problem(6, 4, 5, torch::kFloat64, 3);
  const auto result = run_kernel(problem, 4);
  ASSERT_EQ(result.losses.scalar_type(), torch::kFloat64);
  const auto objective = [&] {
    torch::NoGradGuard no_grad;
    const auto losses = chunked_token_cross_entropy(problem.hidden, problem.weight, problem.targets, 4);
    return (losses * problem.upstream.to(torch::kFloat64)).sum().item<double>();
  };
  expect_central_differences(problem.hidden, result.grad_hidden, objective);
  expect_central_differences(problem.weight, result.grad_weight, objective);
}

TEST(ChunkedCrossEntropy, ChunkSizeDoesNotChangeTheResult) {
  const auto problem = random_problem(23, 8, 30, torch::kFloat32, 4);
  const auto whole = run_kernel(problem, 1000);
  for (int64_t chunk : {1, 7, 23}) {
    const auto chunked = run_kernel(problem, chunk);
    EXPECT_LT(max_difference(chunked.losses, whole.losses), 1e-6) << "chunk " << chunk;
    EXPECT_LT(max_difference(chunked.grad_hidden, whole.grad_hidden), 1e-6) << "chunk " << chunk;
    EXPECT_LT(max_difference(chunked.grad_weight, whole.grad_weight), 1e-6) << "chunk " << chunk;
  }
}

TEST(ChunkedCrossEntropy, IgnoredTargetsGiveZeroLossAndGradient) {
  auto problem = random_problem(9, 4, 6, torch::kFloat32, 5);
  const auto result = run_kernel(problem, 2);
  const auto ignored = problem.targets == kIgnore;
  ASSERT_TRUE(ignored.any().item<bool>());
  EXPECT_TRUE(result.losses.masked_select(ignored).eq(0).all().item<bool>());
  EXPECT_TRUE(result.grad_hidden.index({ignored}).eq(0).all().item<bool>());

  problem.targets.fill_(kIgnore);
  const auto none = run_kernel(problem, 2);
  EXPECT_EQ(none.losses.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(none.grad_hidden.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(none.grad_weight.abs().sum().item<double>(), 0.0);
}

TEST(ChunkedCrossEntropy, FrozenWeightGetsNoGradient) {
  const auto problem = random_problem(5, 4, 6, torch::kFloat32, 6);
  const auto frozen = problem.weight.detach();
  chunked_token_cross_entropy(problem.hidden, frozen, problem.targets, 2).sum().backward();
  EXPECT_FALSE(frozen.grad().defined());
  EXPECT_TRUE(problem.hidden.grad().defined());
}

// A frozen head (LoRA) takes the other path: forward computes the hidden rows' gradient while each
// chunk's logits exist, backward only scales it by the incoming per-row gradient.
TEST(ChunkedCrossEntropy, FrozenHeadMatchesPyTorchInFloat32) {
  const auto problem = random_problem(37, 16, 50, torch::kFloat32, 9);
  const auto head = problem.weight.detach();
  const auto reference = pytorch_reference(problem.hidden, head, problem.targets, problem.upstream);
  ASSERT_TRUE(reference.losses.defined());
  const auto losses = chunked_token_cross_entropy(problem.hidden, head, problem.targets, 7);
  (losses * problem.upstream).sum().backward();
  EXPECT_LT(max_difference(losses.detach(), reference.losses), 1e-5);
  EXPECT_LT(max_difference(problem.hidden.grad(), reference.grad_hidden), 1e-5);
  const auto ignored = problem.targets == kIgnore;
  EXPECT_TRUE(problem.hidden.grad().index({ignored}).eq(0).all().item<bool>());
}

TEST(ChunkedCrossEntropy, FrozenHeadGradientMatchesFiniteDifferencesInFloat64) {
  const auto problem = random_problem(6, 4, 5, torch::kFloat64, 10);
  const auto head = problem.weight.detach();
  const auto upstream = problem.upstream.to(torch::kFloat64);
  (chunked_token_cross_entropy(problem.hidden, head, problem.targets, 4) * upstream).sum().backward();
  const auto objective = [&] {
    torch::NoGradGuard no_grad;
    return (chunked_token_cross_entropy(problem.hidden, head, problem.targets, 4) * upstream).sum().item<double>();
  };
  expect_central_differences(problem.hidden, problem.hidden.grad(), objective);
}

// bfloat16 training keeps float32 master weights under autocast: the head's matmul then runs in
// bfloat16, exactly as if the caller had cast the head itself, and the float32 head still gets its
// float32 gradient.
TEST(ChunkedCrossEntropy, UnderAutocastTheHeadMultipliesInBFloat16) {
  const auto problem = random_problem(37, 16, 50, torch::kFloat32, 11);
  const auto cast_by_hand = [&] {
    auto hidden = problem.hidden.detach().clone().requires_grad_(true);
    auto weight = problem.weight.detach().clone().requires_grad_(true);
    auto losses = chunked_token_cross_entropy(hidden, weight.to(torch::kBFloat16), problem.targets, 7);
    (losses * problem.upstream).sum().backward();
    return Result{losses.detach(), hidden.grad(), weight.grad()};
  }();
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  auto losses = chunked_token_cross_entropy(problem.hidden, problem.weight, problem.targets, 7);
  at::autocast::set_cpu_enabled(false);
  (losses * problem.upstream).sum().backward();
  EXPECT_EQ(problem.weight.grad().scalar_type(), torch::kFloat32);
  EXPECT_LE(max_difference(losses.detach(), cast_by_hand.losses), 0.0);
  EXPECT_LE(max_difference(problem.hidden.grad(), cast_by_hand.grad_hidden), 0.0);
  EXPECT_LE(max_difference(problem.weight.grad(), cast_by_hand.grad_weight), 0.0);
  const auto float32 = run_kernel(problem, 7);
  EXPECT_GT(max_difference(losses.detach(), float32.losses), 1e-4) << "the matmul did not run in bfloat16";
}

TEST(ChunkedCrossEntropy, TargetOutsideVocabularyIsAnError) {
  const auto hidden = torch::zeros({2, 3});
  const auto weight = torch::zeros({4, 3});
  try {
    chunked_token_cross_entropy(hidden, weight, torch::tensor({1, 4}, torch::kInt64));
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("label id 4 is outside the model's vocabulary of 4 tokens"));
  }
}

TEST(ChunkedCrossEntropy, DefaultChunkKeepsLogitsNear256MiB) {
  EXPECT_EQ(default_chunk_tokens(151936), 441);  // 441 rows x 151936 x 4 bytes = 255.6 MiB
  EXPECT_EQ(default_chunk_tokens(1), int64_t{64} << 20);
  EXPECT_EQ(default_chunk_tokens(1000000000), 1);
}

// ---- Shifting and the token losses --------------------------------------------------------

TEST(ShiftTokens, KeepsOnlyRowsThatPredictALabel) {
  // hidden[b, t] = 10 b + t, one feature.
  const auto hidden = (torch::arange(2).unsqueeze(1) * 10 + torch::arange(4).unsqueeze(0)).to(torch::kFloat32)
                          .unsqueeze(2);
  const auto labels = torch::tensor({{5, kIgnore, 7, 8}, {kIgnore, kIgnore, 3, kIgnore}}, torch::kInt64);
  const auto scale = torch::tensor({{9.f, 0.f, 2.f, 3.f}, {0.f, 0.f, 4.f, 0.f}});
  const auto shifted = shift_tokens(hidden, labels, scale);
  // Row 0: positions 1, 2 predict 7, 8; row 1: position 1 predicts 3. Label 5 at t = 0 is never a target.
  EXPECT_TRUE(torch::equal(shifted.hidden.view(-1), torch::tensor({1.f, 2.f, 11.f})));
  EXPECT_TRUE(torch::equal(shifted.targets, torch::tensor({7, 8, 3}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(shifted.weights, torch::tensor({2.f, 3.f, 4.f})));
  EXPECT_FALSE(shift_tokens(hidden, labels, torch::Tensor()).weights.defined());
}

// Head weight rows e0, e1, 0 and every hidden state (ln 2, 0): logits (ln 2, 0, 0), so the
// logsumexp is ln 4 and the per-token loss is ln 2 for target 0 and ln 4 for targets 1 and 2.
struct HandBatch {
  torch::Tensor hidden = torch::tensor({std::log(2.0), 0.0}).to(torch::kFloat32).expand({1, 4, 2}).clone();
  torch::Tensor weight = torch::tensor({{1.f, 0.f}, {0.f, 1.f}, {0.f, 0.f}});
  torch::Tensor labels = torch::tensor({{kIgnore, 0, 1, kIgnore}}, torch::kInt64);
  torch::Tensor scale = torch::tensor({{0.f, 3.f, 0.5f, 0.f}});
};

torch::Tensor call_loss(const std::string& name, ModelOutputs& outputs, const torch::Tensor& labels,
                        const torch::Tensor& scale, std::optional<int64_t> num_items) {
  const auto loss = loss_registry().create(name, Arguments{});
  return loss(outputs, labels, scale, num_items);
}

TEST(TokenLosses, CrossEntropyOnHandComputedValues) {
  HandBatch batch;
  ModelOutputs outputs(batch.hidden, batch.weight);
  const double ln2 = std::log(2.0);
  // Targets 0 (ln 2) and 1 (ln 4 = 2 ln 2); the scale is ignored.
  EXPECT_NEAR(call_loss("cross_entropy", outputs, batch.labels, batch.scale, std::nullopt).item<double>(),
              3 * ln2 / 2, 1e-6);
  EXPECT_NEAR(call_loss("cross_entropy", outputs, batch.labels, batch.scale, 4).item<double>(), 3 * ln2 / 4, 1e-6);
}

TEST(TokenLosses, LossScaleOnHandComputedValues) {
  HandBatch batch;
  ModelOutputs outputs(batch.hidden, batch.weight);
  const double ln2 = std::log(2.0);
  // 3 * ln 2 + 0.5 * 2 ln 2 = 4 ln 2, divided by the token count (2), not the weight sum (3.5).
  EXPECT_NEAR(call_loss("loss_scale", outputs, batch.labels, batch.scale, std::nullopt).item<double>(), 2 * ln2,
              1e-6);
  EXPECT_NEAR(call_loss("loss_scale", outputs, batch.labels, batch.scale, 8).item<double>(), ln2 / 2, 1e-6);
  // Without weights it is cross entropy.
  EXPECT_NEAR(call_loss("loss_scale", outputs, batch.labels, torch::Tensor(), std::nullopt).item<double>(),
              3 * ln2 / 2, 1e-6);
}

TEST(TokenLosses, NoTrainedTokenGivesZero) {
  HandBatch batch;
  batch.hidden.requires_grad_(true);
  ModelOutputs outputs(batch.hidden, batch.weight);
  const auto loss = call_loss("cross_entropy", outputs, torch::full({1, 4}, kIgnore, torch::kInt64), {}, {});
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_EQ(batch.hidden.grad().abs().sum().item<double>(), 0.0);
}

// The accumulation rule: micro-batches each divided by the whole step's token count sum to the
// loss of the one big batch, and so do their gradients.
TEST(TokenLosses, MicroBatchesWithNumItemsEqualOneBigBatch) {
  torch::manual_seed(7);
  const int64_t width = 8, vocab = 20;
  const auto hidden = torch::randn({4, 6, width});
  auto labels = torch::randint(vocab, {4, 6}, torch::kInt64);
  labels.index_put_({0, torch::indexing::Slice(0, 3)}, kIgnore);
  labels.index_put_({2, torch::indexing::Slice(0, 5)}, kIgnore);
  labels.index_put_({3, 5}, kIgnore);
  const auto weight = torch::randn({vocab, width}).requires_grad_(true);

  const auto run = [&](const torch::Tensor& rows, std::optional<int64_t> num_items) {
    const auto leaf = hidden.index({rows}).clone().requires_grad_(true);
    ModelOutputs outputs(leaf, weight);
    auto loss = call_loss("cross_entropy", outputs, labels.index({rows}), {}, num_items);
    loss.backward();
    return std::pair{loss.item<double>(), leaf.grad()};
  };
  const auto [big_loss, big_grad] = run(torch::arange(4), std::nullopt);
  const auto big_weight_grad = weight.grad().clone();
  weight.mutable_grad().zero_();

  const int64_t num_items = (labels.slice(1, 1) != kIgnore).sum().item<int64_t>();
  const auto [first_loss, first_grad] = run(torch::arange(0, 2), num_items);
  const auto [second_loss, second_grad] = run(torch::arange(2, 4), num_items);
  EXPECT_NEAR(first_loss + second_loss, big_loss, 1e-6);
  EXPECT_LT(max_difference(torch::cat({first_grad, second_grad}), big_grad), 1e-7);
  EXPECT_LT(max_difference(weight.grad(), big_weight_grad), 1e-7);
}

// ---- Embedding losses ---------------------------------------------------------------------

// A 2-D unit vector at cosine c from e0, scaled so that normalisation matters.
torch::Tensor at_cosine(double c, double scale = 3.0) {
  return torch::tensor({c * scale, std::sqrt(1 - c * c) * scale}).to(torch::kFloat32);
}

// Interleaved pairs (e0, vector at cosine c) for each cosine.
torch::Tensor pairs_at_cosines(const std::vector<double>& cosines) {
  std::vector<torch::Tensor> rows;
  for (double c : cosines) {
    rows.push_back(torch::tensor({1.f, 0.f}));
    rows.push_back(at_cosine(c));
  }
  return torch::stack(rows);
}

torch::Tensor call_embedding_loss(const std::string& name, const torch::Tensor& embeddings,
                                  const torch::Tensor& labels, const Arguments& arguments = {}) {
  ModelOutputs outputs(embeddings, torch::Tensor());
  return loss_registry().create(name, arguments)(outputs, labels, {}, {});
}

TEST(EmbeddingLosses, CosineSimilarity) {
  // cos = 1, 0, 0.6 against labels 0.8, 0.5, 0.6: squared errors 0.04, 0.25, 0.
  const auto loss = call_embedding_loss("cosine_similarity", pairs_at_cosines({1, 0, 0.6}),
                                        torch::tensor({0.8f, 0.5f, 0.6f}));
  EXPECT_NEAR(loss.item<double>(), 0.29 / 3, 1e-6);
}

TEST(EmbeddingLosses, Contrastive) {
  // d = 0, 1, 0.4, 0.2 with labels 1, 0, 1, 0: 0, 0.5 relu(-0.5)^2 = 0, 0.5 * 0.16, 0.5 * 0.3^2.
  const auto loss = call_embedding_loss("contrastive", pairs_at_cosines({1, 0, 0.6, 0.8}),
                                        torch::tensor({1.f, 0.f, 1.f, 0.f}));
  EXPECT_NEAR(loss.item<double>(), (0.08 + 0.045) / 4, 1e-6);
}

TEST(EmbeddingLosses, OnlineContrastiveUsesHardPairsOnly) {
  // Positives d = 0, 0.4; negatives d = 1, 0.2. Hard positives exceed min negative 0.2: {0.4};
  // hard negatives are below max positive 0.4: {0.2}. 0.4^2 + (0.5 - 0.2)^2.
  const auto loss = call_embedding_loss("online_contrastive", pairs_at_cosines({1, 0.6, 0, 0.8}),
                                        torch::tensor({1.f, 1.f, 0.f, 0.f}));
  EXPECT_NEAR(loss.item<double>(), 0.16 + 0.09, 1e-6);
  // One positive (d = 0.4): the negatives' threshold is their own mean (0.475), so only d = 0.45
  // is hard: (0.5 - 0.45)^2; no positive exceeds the smallest negative 0.45.
  const auto single = call_embedding_loss("online_contrastive", pairs_at_cosines({0.6, 0.5, 0.55}),
                                          torch::tensor({1.f, 0.f, 0.f}));
  EXPECT_NEAR(single.item<double>(), 0.0025, 1e-6);
}

// Group 0: anchor e0, positive e0, negative e1; group 1: anchor e1, positive e1 (scaled).
struct InfoNCEBatch {
  torch::Tensor rows = torch::tensor({{1.f, 0.f}, {2.f, 0.f}, {0.f, 1.f}, {0.f, 1.f}, {0.f, 2.f}});
  torch::Tensor labels = torch::tensor({1, 0, 1}, torch::kInt64);
};

TEST(EmbeddingLosses, InfoNCEWithInBatchNegatives) {
  InfoNCEBatch batch;
  // Scores (cos / 0.1) over candidates (p0, n0, p1): anchor 0 (10, 0, 0) -> target p0; anchor 1
  // (0, 10, 10) -> target p1.
  const double expected = (std::log(1 + 2 * std::exp(-10.0)) + std::log(2 + std::exp(-10.0))) / 2;
  EXPECT_NEAR(call_embedding_loss("infonce", batch.rows, batch.labels).item<double>(), expected, 1e-6);
}

TEST(EmbeddingLosses, InfoNCEOptionsFromPluginArgs) {
  InfoNCEBatch batch;
  Arguments own_group_only;
  own_group_only.plugin_args = {{"infonce", {{"use_batch", false}}}};
  // Anchor 0 sees (p0, n0): scores (10, 0); anchor 1 sees only p1: loss 0.
  EXPECT_NEAR(call_embedding_loss("infonce", batch.rows, batch.labels, own_group_only).item<double>(),
              std::log(1 + std::exp(-10.0)) / 2, 1e-6);

  Arguments no_hard_negatives;
  no_hard_negatives.plugin_args = {{"infonce", {{"hard_negatives", 0}, {"temperature", 0.5}}}};
  // Candidates (p0, p1): anchor 0 scores (2, 0), anchor 1 scores (0, 2).
  EXPECT_NEAR(call_embedding_loss("infonce", batch.rows, batch.labels, no_hard_negatives).item<double>(),
              std::log(1 + std::exp(-2.0)), 1e-6);

  Arguments bad;
  bad.plugin_args = {{"infonce", {{"temperature", "warm"}}}};
  EXPECT_THROW(loss_registry().create("infonce", bad), Error);
  // Another plugin's settings are not infonce's: its own namespace only.
  Arguments other;
  other.plugin_args = {{"custom_loss", {{"temperature", "warm"}}}};
  EXPECT_NO_THROW(loss_registry().create("infonce", other));
  Arguments flat;
  flat.plugin_args = {{"infonce", 0.5}};
  EXPECT_THROW(loss_registry().create("infonce", flat), Error);
}

TEST(EmbeddingLosses, InfoNCERejectsLabelsThatDoNotDescribeTheRows) {
  InfoNCEBatch batch;
  EXPECT_THROW(call_embedding_loss("infonce", batch.rows, torch::tensor({0, 1, 0}, torch::kInt64)), Error);
  EXPECT_THROW(call_embedding_loss("infonce", batch.rows, torch::tensor({1, 0}, torch::kInt64)), Error);
}

TEST(EmbeddingLosses, LastTokenPoolingWithLeftAndRightPadding) {
  const auto hidden = torch::arange(2 * 4).to(torch::kFloat32).view({2, 4, 1});
  const auto mask = torch::tensor({{1, 1, 1, 0}, {0, 0, 1, 1}});
  EXPECT_TRUE(torch::equal(last_token_embeddings(hidden, mask).view(-1), torch::tensor({2.f, 7.f})));
}

TEST(EmbeddingLosses, TokenAndEmbeddingLossesRefuseTheOtherShape) {
  HandBatch batch;
  ModelOutputs token_outputs(batch.hidden, batch.weight);
  try {
    loss_registry().create("contrastive", Arguments{})(token_outputs, batch.labels, {}, {});
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("loss 'contrastive' needs pooled embeddings"));
  }
  ModelOutputs pooled(torch::zeros({4, 2}), batch.weight);
  EXPECT_THROW(call_loss("cross_entropy", pooled, batch.labels, {}, {}), Error);
}

// ---- Registry ----------------------------------------------------------------------------

TEST(LossRegistry, ListsTheBuiltInsWithDescriptions) {
  std::vector<std::string> names;
  for (const auto* entry : loss_registry().entries()) {
    names.push_back(entry->name);
    EXPECT_FALSE(entry->description.empty()) << entry->name;
    EXPECT_EQ(entry->origin, "built-in");
  }
  for (const char* builtin :
       {"cross_entropy", "loss_scale", "cosine_similarity", "contrastive", "online_contrastive", "infonce"})
    EXPECT_NE(std::find(names.begin(), names.end(), builtin), names.end()) << builtin;
}

TEST(LossRegistry, UnknownNameListsTheRegisteredOnes) {
  try {
    loss_registry().get("focal");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("unknown loss 'focal'"));
    EXPECT_THAT(error.what(), HasSubstr("cross_entropy"));
    EXPECT_THAT(error.what(), HasSubstr("infonce"));
  }
}

TEST(LossRegistry, RegisteringANameTwiceIsAnError) {
  try {
    loss_registry().add("cross_entropy", "again", [](const PluginContext&) { return LossFunction(); }, "my_plugin.so");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("'cross_entropy' is registered twice (by built-in and by my_plugin.so)"));
  }
}

}  // namespace
}  // namespace lathe
