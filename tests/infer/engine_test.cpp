// The generation engine against an independent reference: every greedy token is recomputed by a
// plain forward pass over the whole sequence (no cache, no batch, no padding), and the
// log-probabilities are the log-softmax of those logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "lathe/infer/engine.h"
#include "lathe/common/error.h"
#include "support/tiny_config.h"

namespace lathe::testing {
namespace {

constexpr int64_t kVocab = 64;

CausalLM tiny_model() {
  torch::manual_seed(3);
  auto config = tiny_config({.vocab = kVocab, .hidden = 32, .intermediate = 64, .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 8});
  config.max_position_embeddings = 96;
  CausalLM model(config);
  torch::NoGradGuard no_grad;
  // Larger weights than Hugging Face's initialisation, so that logits are far from ties.
  for (auto& parameter : model->parameters()) {
    if (parameter.dim() == 2) parameter.normal_(0.0, 0.25);
  }
  model->eval();
  return model;
}

// Logits of the next token after `tokens`, from a forward pass over all of them.
torch::Tensor reference_logits(CausalLM& model, const std::vector<int32_t>& tokens) {
  torch::NoGradGuard no_grad;
  const auto length = static_cast<int64_t>(tokens.size());
  auto ids = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), torch::kLong).view({1, length});
  ForwardInputs inputs{ids, torch::arange(length, torch::kLong).view({1, length}), {}, nullptr};
  return model->logits(model->forward(inputs).select(1, length - 1))[0].to(torch::kFloat32);
}

std::vector<int32_t> reference_greedy(CausalLM& model, std::vector<int32_t> tokens, int64_t count) {
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < count; ++i) {
    const auto token = static_cast<int32_t>(reference_logits(model, tokens).argmax().item<int64_t>());
    tokens.push_back(token);
    generated.push_back(token);
  }
  return generated;
}

std::vector<std::vector<int32_t>> prompts() {
  return {{5, 9, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {40}, {7, 7, 7, 7, 7}, {63, 0, 12, 33, 21, 8, 17}};
}

SamplingParams greedy(int64_t max_new_tokens) {
  SamplingParams params;
  params.max_new_tokens = max_new_tokens;
  return params;
}

TEST(Engine, GreedyBatchEqualsEachPromptAlone) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 8});
  auto results = engine.generate_all(prompts(), greedy(12));
  ASSERT_EQ(results.size(), prompts().size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].ids, reference_greedy(model, prompts()[i], 12)) << "prompt " << i;
    EXPECT_EQ(results[i].finish_reason, "length");
  }
}

TEST(Engine, TemperatureZeroAndTopK1AreGreedy) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 4});
  auto zero = greedy(10);
  zero.temperature = 0.0;
  zero.top_p = 0.3;  // ignored when greedy
  auto top1 = greedy(10);
  top1.temperature = 1.7;
  top1.top_k = 1;
  top1.seed = 11;
  auto greedy_results = engine.generate_all(prompts(), zero);
  auto top1_results = engine.generate_all(prompts(), top1);
  for (std::size_t i = 0; i < prompts().size(); ++i) {
    const auto expected = reference_greedy(model, prompts()[i], 10);
    EXPECT_EQ(greedy_results[i].ids, expected) << i;
    EXPECT_EQ(top1_results[i].ids, expected) << i;
  }
}

// Five requests of different lengths through two slots: rows leave at different steps and queued
// ones join a batch that is still decoding; two more are submitted from another thread meanwhile.
TEST(Engine, ContinuousBatchingKeepsGreedyOutputs) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 2});
  const auto all = prompts();
  const std::vector<int64_t> lengths = {3, 20, 9, 14, 6};
  std::vector<std::future<Generation>> futures(all.size());
  std::promise<void> first_token;
  bool signalled = false;
  auto signal_once = [&](const TokenLogprob&) {
    if (!signalled) {
      signalled = true;
      first_token.set_value();
    }
    return true;
  };
  for (std::size_t i = 0; i < 3; ++i) futures[i] = engine.submit(all[i], greedy(lengths[i]), i == 1 ? StreamCallback(signal_once) : StreamCallback());
  first_token.get_future().wait();
  std::thread late([&] {
    for (std::size_t i = 3; i < all.size(); ++i) futures[i] = engine.submit(all[i], greedy(lengths[i]));
  });
  late.join();
  for (std::size_t i = 0; i < all.size(); ++i) {
    auto result = futures[i].get();
    EXPECT_EQ(result.ids, reference_greedy(model, all[i], lengths[i])) << "request " << i;
  }
  EXPECT_EQ(engine.max_batch_size(), 2);
  EXPECT_EQ(engine.waiting_requests(), 0);
}

TEST(Engine, StopTokensEndARequest) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 4});
  const auto expected = reference_greedy(model, prompts()[1], 12);
  auto params = greedy(12);
  params.stop_token_ids = {expected[4]};
  auto result = engine.submit(prompts()[1], params).get();
  const auto first = std::find(expected.begin(), expected.end(), expected[4]) - expected.begin();
  EXPECT_EQ(result.ids, std::vector<int32_t>(expected.begin(), expected.begin() + first + 1));
  EXPECT_EQ(result.finish_reason, "stop");
}

TEST(Engine, FixedSeedReproducesSamplesAndSeedsDiffer) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 4});
  auto params = greedy(24);
  params.temperature = 2.0;
  params.seed = 5;
  const auto a = engine.submit(prompts()[0], params).get().ids;
  const auto b = engine.submit(prompts()[0], params).get().ids;
  params.seed = 6;
  const auto c = engine.submit(prompts()[0], params).get().ids;
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// Requests submitted together into an idle engine are prefilled together: every first token is
// out before any request takes its second step. Submitted one by one, the decoding thread could
// start on the first before the rest were queued, and the batches (so the rounding that sampling
// sees) would depend on thread timing; this is what makes seeded batch runs reproducible.
TEST(Engine, RequestsSubmittedTogetherArePrefilledTogether) {
  auto model = tiny_model();
  const auto all = prompts();
  GenerationEngine engine(model, {.max_batch_size = static_cast<int64_t>(all.size())});
  std::mutex mutex;
  std::vector<std::size_t> order;  // the request of each streamed token, in arrival order
  std::vector<GenerationRequest> requests;
  for (std::size_t i = 0; i < all.size(); ++i) {
    requests.push_back({all[i], greedy(6), [&, i](const TokenLogprob&) {
                          std::lock_guard lock(mutex);
                          order.push_back(i);
                          return true;
                        }});
  }
  for (auto& future : engine.submit_all(std::move(requests))) future.get();
  ASSERT_EQ(order.size(), all.size() * 6);
  std::set<std::size_t> first_tokens(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(all.size()));
  EXPECT_EQ(first_tokens.size(), all.size()) << "each request's first token precedes every second token";
}

TEST(Engine, NSamplesPerPromptUseConsecutiveSeeds) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 3});
  auto params = greedy(8);
  params.temperature = 1.5;
  params.seed = 7;
  params.n = 3;
  const std::vector<std::vector<int32_t>> two = {prompts()[0], prompts()[3]};
  auto results = engine.generate_all(two, params);
  ASSERT_EQ(results.size(), 6u);
  for (std::size_t p = 0; p < two.size(); ++p) {
    for (uint64_t j = 0; j < 3; ++j) {
      auto one = params;
      one.n = 1;
      one.seed = 7 + j;
      EXPECT_EQ(results[p * 3 + j].ids, engine.submit(two[p], one).get().ids) << p << "," << j;
    }
  }
  EXPECT_NE(results[0].ids, results[1].ids);
}

TEST(Engine, LogprobsAreTheLogSoftmaxOfTheModelsLogits) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 4});
  auto params = greedy(6);
  params.logprobs = true;
  params.top_logprobs = 3;
  params.temperature = 1.0;  // sampled: logprobs still come from the unmodified logits
  params.repetition_penalty = 1.5;
  params.seed = 1;
  std::vector<std::future<Generation>> futures;
  for (const auto& prompt : prompts()) futures.push_back(engine.submit(prompt, params));
  for (std::size_t i = 0; i < futures.size(); ++i) {
    auto result = futures[i].get();
    ASSERT_EQ(result.logprobs.size(), result.ids.size());
    auto tokens = prompts()[i];
    for (std::size_t t = 0; t < result.ids.size(); ++t) {
      const auto expected = torch::log_softmax(reference_logits(model, tokens), 0);
      const auto& entry = result.logprobs[t];
      EXPECT_EQ(entry.token, result.ids[t]);
      EXPECT_NEAR(entry.logprob, expected[entry.token].item<float>(), 1e-4);
      auto [values, ids] = expected.topk(3);
      ASSERT_EQ(entry.top.size(), 3u);
      for (int64_t k = 0; k < 3; ++k) {
        EXPECT_EQ(entry.top[k].first, ids[k].item<int64_t>());
        EXPECT_NEAR(entry.top[k].second, values[k].item<float>(), 1e-4);
      }
      tokens.push_back(result.ids[t]);
    }
  }
}

// One character per token, so that a stop string's position maps to a token count.
std::string letters(const std::vector<int32_t>& ids) {
  std::string text;
  for (auto id : ids) text += static_cast<char>('A' + id % 58);
  return text;
}

TEST(Engine, StopStringsCutTheText) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 4, .decode = letters});
  const auto expected = reference_greedy(model, prompts()[4], 16);
  const auto full_text = letters(expected);
  const auto stop = full_text.substr(5, 2);
  const auto at = full_text.find(stop);
  auto params = greedy(16);
  params.stop = {"never there", stop};
  auto result = engine.submit(prompts()[4], params).get();
  EXPECT_EQ(result.finish_reason, "stop");
  EXPECT_EQ(result.stop_string, stop);
  EXPECT_EQ(result.ids, std::vector<int32_t>(expected.begin(), expected.begin() + static_cast<int64_t>(at) + 2));
  EXPECT_EQ(result.text, full_text.substr(0, at));

  auto without = engine.submit(prompts()[4], greedy(16)).get();
  EXPECT_EQ(without.text, full_text);
  EXPECT_EQ(without.finish_reason, "length");
}

TEST(Engine, CancelByCallbackFreesTheSlot) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 1});
  int seen = 0;
  auto cancelled = engine.submit(prompts()[0], greedy(60), [&](const TokenLogprob&) { return ++seen < 3; });
  auto next = engine.submit(prompts()[2], greedy(5));  // runs only once the single slot is free
  auto result = cancelled.get();
  EXPECT_EQ(result.finish_reason, "abort");
  EXPECT_EQ(result.ids.size(), 3u);
  EXPECT_EQ(next.get().ids, reference_greedy(model, prompts()[2], 5));
}

TEST(Engine, RejectsWhatCannotBeGenerated) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 2});
  EXPECT_THROW(engine.submit({}, greedy(4)).get(), Error);
  EXPECT_THROW(engine.submit({1, 2, kVocab}, greedy(4)).get(), Error);
  EXPECT_THROW(engine.submit(std::vector<int32_t>(90, 1), greedy(7)).get(), Error);  // 97 > 96 positions
  auto bad = greedy(4);
  bad.top_p = 0.0;
  EXPECT_THROW(engine.submit({1}, bad).get(), Error);
  auto stops = greedy(4);
  stops.stop = {"x"};  // no decoder given
  EXPECT_THROW(engine.submit({1}, stops).get(), Error);
  EXPECT_EQ(engine.submit(std::vector<int32_t>(90, 1), greedy(6)).get().ids.size(), 6u);  // fits exactly
}

TEST(Engine, FittingShortensMaxNewTokens) {
  auto model = tiny_model();
  GenerationEngine engine(model, {.max_batch_size = 2, .fit_max_new_tokens = true});
  auto result = engine.submit(std::vector<int32_t>(90, 1), greedy(50)).get();
  EXPECT_EQ(result.ids.size(), 6u);
  EXPECT_EQ(result.finish_reason, "length");
  EXPECT_THROW(engine.submit(std::vector<int32_t>(96, 1), greedy(50)).get(), Error);
}

TEST(Engine, DestructionAbortsWhatIsLeft) {
  auto model = tiny_model();
  std::vector<std::future<Generation>> futures;
  {
    GenerationEngine engine(model, {.max_batch_size = 1});
    for (int i = 0; i < 3; ++i) futures.push_back(engine.submit(prompts()[0], greedy(80)));
  }
  // Every future is fulfilled (no broken promise): finished, or cut short.
  for (auto& future : futures) {
    const auto result = future.get();
    EXPECT_TRUE(result.finish_reason == "abort" || (result.finish_reason == "length" && result.ids.size() == 80u))
        << result.finish_reason;
  }
}

TEST(Engine, GenerateWrapperEqualsTheReference) {
  auto model = tiny_model();
  std::vector<std::pair<std::size_t, int32_t>> streamed;
  auto results = generate(model, prompts(), greedy(7), [&](std::size_t row, int32_t token) {
    streamed.emplace_back(row, token);
    return true;
  });
  std::size_t total = 0;
  for (std::size_t i = 0; i < prompts().size(); ++i) {
    EXPECT_EQ(results[i].ids, reference_greedy(model, prompts()[i], 7)) << i;
    total += results[i].ids.size();
  }
  EXPECT_EQ(streamed.size(), total);
}

}  // namespace
}  // namespace lathe::testing
