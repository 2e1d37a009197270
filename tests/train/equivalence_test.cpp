// Two equalities the trainer relies on: gradient accumulation with the num_items_in_batch rule
// gives the loss and gradients of one large batch, and a packed row gives the same per-sequence
// loss and gradients as padded rows.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lathe/train/batch.h"
#include "lathe/plugin/loss.h"

#include "support/tiny_config.h"

namespace lathe {
namespace {

CausalLM tiny_model() {
  torch::manual_seed(11);
  CausalLM model(testing::tiny_config(
      {.vocab = 97, .hidden = 32, .intermediate = 48, .layers = 2, .heads = 4, .kv_heads = 2, .attention_bias = true}));
  torch::NoGradGuard no_grad;
  for (auto& parameter : model->parameters()) parameter.normal_(0.0, 0.3);
  return model;
}

std::vector<Example> examples() {
  std::vector<Example> result;
  const std::vector<int> lengths{7, 4, 9, 5};
  int token = 3;
  for (int length : lengths) {
    Example example;
    for (int t = 0; t < length; ++t) {
      example.input_ids.push_back(token % 97);
      // Prompt (first two tokens) untrained, answer trained.
      example.labels.push_back(t < 2 ? -100 : token % 97);
      token = (token * 7 + 5) % 97;
    }
    result.push_back(example);
  }
  return result;
}

torch::Tensor loss_of(CausalLM& model, const Batch& batch, int64_t num_items) {
  auto hidden =
      model->forward({batch.input_ids, batch.position_ids, batch.attention_mask, nullptr, batch.sequence_lengths});
  ModelOutputs outputs(*model, hidden);
  Arguments arguments;
  return loss_registry().create("cross_entropy", arguments)(outputs, batch.labels, batch.loss_scale, num_items);
}

std::vector<torch::Tensor> gradients(CausalLM& model) {
  std::vector<torch::Tensor> grads;
  for (auto& parameter : model->parameters()) {
    grads.push_back(parameter.grad().defined() ? parameter.grad().clone() : torch::zeros_like(parameter));
    if (parameter.grad().defined()) parameter.grad().zero_();
  }
  return grads;
}

void expect_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_LT((a[i] - b[i]).abs().max().item<double>(), tolerance) << "parameter " << i;
  }
}

TEST(Equivalence, AccumulationEqualsOneLargeBatch) {
  auto model = tiny_model();
  auto data = examples();
  std::vector<const Example*> all{&data[0], &data[1], &data[2], &data[3]};
  auto big = collate_padded(all, 0);
  const auto num_items = big.label_tokens;
  auto big_loss = loss_of(model, big, num_items);
  big_loss.backward();
  auto big_grads = gradients(model);

  double accumulated = 0;
  for (auto pair : {std::vector<const Example*>{&data[0], &data[1]}, std::vector<const Example*>{&data[2], &data[3]}}) {
    auto micro = collate_padded(pair, 0);
    auto loss = loss_of(model, micro, num_items);
    loss.backward();
    accumulated += loss.item<double>();
  }
  EXPECT_NEAR(accumulated, big_loss.item<double>(), 1e-5);
  expect_close(gradients(model), big_grads, 1e-5);
}

TEST(Equivalence, PackedEqualsPadded) {
  auto model = tiny_model();
  auto data = examples();
  std::vector<const Example*> all{&data[0], &data[1], &data[2], &data[3]};
  auto padded = collate_padded(all, 0);
  auto packed = collate_packed(all);
  ASSERT_EQ(padded.label_tokens, packed.label_tokens);
  auto padded_loss = loss_of(model, padded, padded.label_tokens);
  padded_loss.backward();
  auto padded_grads = gradients(model);
  auto packed_loss = loss_of(model, packed, packed.label_tokens);
  packed_loss.backward();
  EXPECT_NEAR(packed_loss.item<double>(), padded_loss.item<double>(), 1e-5);
  expect_close(gradients(model), padded_grads, 1e-5);

  // Per sequence too: each sequence alone gives the loss its tokens contribute in the pack.
  for (const auto& example : data) {
    auto alone = collate_padded({&example}, 0);
    auto in_pack = collate_packed({&example});
    EXPECT_NEAR(loss_of(model, alone, alone.label_tokens).item<double>(),
                loss_of(model, in_pack, in_pack.label_tokens).item<double>(), 1e-5);
  }
}

TEST(Equivalence, GradientCheckpointingGivesTheSameGradients) {
  auto data = examples();
  std::vector<const Example*> all{&data[0], &data[1], &data[2], &data[3]};
  for (const auto& batch : {collate_padded(all, 0), collate_packed(all)})
  for (bool frozen_embedding : {false, true}) {
    auto model = tiny_model();
    model->train();
    if (frozen_embedding) model->named_parameters()["model.embed_tokens.weight"].set_requires_grad(false);
    auto plain_loss = loss_of(model, batch, batch.label_tokens);
    plain_loss.backward();
    auto plain = gradients(model);
    model->set_gradient_checkpointing(true);
    auto checkpointed_loss = loss_of(model, batch, batch.label_tokens);
    checkpointed_loss.backward();
    EXPECT_NEAR(checkpointed_loss.item<double>(), plain_loss.item<double>(), 1e-6);
    expect_close(gradients(model), plain, 1e-6);
  }
}

}  // namespace
}  // namespace lathe
