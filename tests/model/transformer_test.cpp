// The transformer against an independent PyTorch implementation (tests/reference/model_ref.py),
// and against itself: KV-cache decoding vs full recomputation, padded and packed batches vs
// sequences alone, plus weight-loading errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lathe/common/error.h"
#include "lathe/model/model.h"
#include "support/errors.h"
#include "support/tiny_config.h"

namespace lathe {
namespace {
using testing::error_of;

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kReference = fs::path(LATHE_SOURCE_DIR) / "tests/reference/model_ref.py";
constexpr int64_t kVocab = 300;

fs::path scratch_dir(const std::string& name) {
  const auto dir = fs::path(LATHE_BINARY_DIR) / "test_model_scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ModelConfig family_config(const std::string& model_type) {
  auto config = testing::tiny_config(
      {.vocab = kVocab, .hidden = 64, .intermediate = 128, .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 16});
  config.model_type = model_type;
  config.rms_norm_eps = 1e-6;
  config.eos_token_ids = {2};
  return config;
}

// One tiny model per family, each switching on what sets that family apart.
std::vector<std::pair<std::string, ModelConfig>> tiny_models() {
  auto llama = family_config("llama");  // Llama 3.1 rope scaling: the three frequency bands all occur
  llama.rope_theta = 500000.0;
  llama.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
  auto llama_bias = family_config("llama");  // attention_bias: q, k, v and o biases
  llama_bias.attention_bias = true;
  auto mistral = family_config("mistral");  // a single kv head, linear rope scaling
  mistral.num_key_value_heads = 1;
  mistral.rope_theta = 1000000.0;
  mistral.rope_scaling = {"linear", 2.0};
  auto qwen2 = family_config("qwen2");  // q/k/v biases, tied head, three layers
  qwen2.attention_bias = true;
  qwen2.tie_word_embeddings = true;
  qwen2.num_hidden_layers = 3;
  qwen2.rms_norm_eps = 1e-5;
  auto qwen3 = family_config("qwen3");  // q/k norms, head_dim not hidden/heads
  qwen3.qk_norm = true;
  qwen3.head_dim = 32;
  qwen3.num_attention_heads = 6;
  qwen3.rope_theta = 1000000.0;
  return {{"llama", llama}, {"llama_bias", llama_bias}, {"mistral", mistral}, {"qwen2", qwen2}, {"qwen3", qwen3}};
}

// Larger than transformers' 0.02 initialisation, so logits spread over several units and a wrong
// rotation, mask or bias shows in every position.
CausalLM random_model(const ModelConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  CausalLM model(config);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    auto& p = item.value();
    if (item.key().ends_with("norm.weight")) p.copy_(1.0 + 0.2 * torch::randn_like(p));
    else if (item.key().ends_with(".bias")) p.copy_(0.2 * torch::randn_like(p));
    else if (item.key().ends_with("embed_tokens.weight")) p.normal_(0.0, 1.0);
    else p.normal_(0.0, 1.5 / std::sqrt(static_cast<double>(p.size(1))));
  }
  return model;
}

torch::Tensor random_ids(int64_t batch, int64_t length, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(3, kVocab, {batch, length}, torch::kInt64);
}

std::vector<std::vector<int64_t>> rows_of(const torch::Tensor& t) {
  std::vector<std::vector<int64_t>> rows;
  const auto c = t.to(torch::kInt64).contiguous();
  for (int64_t b = 0; b < c.size(0); ++b) {
    const auto* begin = c[b].data_ptr<int64_t>();
    rows.emplace_back(begin, begin + c.size(1));
  }
  return rows;
}

// A batch laid out three ways; `real` marks the positions that carry tokens.
struct Case {
  std::string name;
  torch::Tensor input_ids, position_ids, attention_mask, real;
  json reference_input;
};

std::vector<Case> comparison_cases() {
  std::vector<Case> cases;
  {
    Case plain{"plain", random_ids(2, 12, 11)};
    plain.real = torch::ones({2, 12}, torch::kBool);
    plain.reference_input = {{"input_ids", rows_of(plain.input_ids)}};
    cases.push_back(plain);
  }
  {
    Case padded{"padded", random_ids(3, 12, 12)};
    padded.real = torch::ones({3, 12}, torch::kBool);
    padded.real.index_put_({1, torch::indexing::Slice(0, 4)}, false);
    padded.real.index_put_({2, torch::indexing::Slice(0, 9)}, false);
    padded.input_ids.masked_fill_(padded.real.logical_not(), 0);
    padded.attention_mask = causal_padding_mask(padded.real, 12);
    padded.position_ids = padding_position_ids(padded.real);
    padded.reference_input = {{"input_ids", rows_of(padded.input_ids)},
                              {"attention_mask", rows_of(padded.real)}};
    cases.push_back(padded);
  }
  {
    const std::vector<int64_t> lengths{5, 9, 4};
    Case packed{"packed", random_ids(1, 18, 13)};
    packed.real = torch::ones({1, 18}, torch::kBool);
    packed.attention_mask = packed_causal_mask(lengths);
    packed.position_ids = packed_position_ids(lengths);
    packed.reference_input = {{"input_ids", rows_of(packed.input_ids)}, {"sequence_lengths", lengths}};
    cases.push_back(packed);
  }
  return cases;
}

torch::Tensor lathe_logits(CausalLM& model, const Case& c) {
  torch::NoGradGuard no_grad;
  const auto hidden = model->forward({c.input_ids, c.position_ids, c.attention_mask});
  return model->logits(hidden).to(torch::kFloat32).masked_fill(c.real.logical_not().unsqueeze(-1), 0.0);
}

std::string quote(const fs::path& p) { return "'" + p.string() + "'"; }

// Runs the Python reference on a saved model folder; returns its logits per dtype and case name.
using ReferenceLogits = std::map<std::string, std::map<std::string, torch::Tensor>>;
ReferenceLogits reference_logits(const fs::path& model_dir, const std::vector<Case>& cases,
                                 const std::vector<std::string>& dtypes) {
  const auto work = model_dir.parent_path() / (model_dir.filename().string() + "_reference");
  fs::create_directories(work);
  json input = json::array();
  for (const auto& c : cases) {
    json entry = c.reference_input;
    entry["name"] = c.name;
    input.push_back(entry);
  }
  std::ofstream(work / "cases.json") << input.dump();
  const auto log = work / "stderr.txt";
  std::string dtype_list;
  for (const auto& dtype : dtypes) dtype_list += (dtype_list.empty() ? "" : ",") + dtype;
  const std::string command = "/usr/bin/python3 " + quote(kReference) + " " + quote(model_dir) + " " +
                              quote(work / "cases.json") + " " + quote(work) + " " + dtype_list + " 2> " + quote(log);
  if (std::system(command.c_str()) != 0) {
    std::ifstream err(log);
    const std::string text((std::istreambuf_iterator<char>(err)), {});
    ADD_FAILURE() << "the PyTorch reference failed (it needs /usr/bin/python3 with Debian's python3-torch):\n"
                  << command << "\n" << text;
    return {};
  }
  ReferenceLogits logits;
  for (const auto& dtype : dtypes) {
    for (const auto& c : cases) {
      const auto file = work / (c.name + "." + dtype + ".f32");
      const auto count = c.input_ids.numel() * kVocab;
      auto values = torch::empty({c.input_ids.size(0), c.input_ids.size(1), kVocab}, torch::kFloat32);
      std::ifstream in(file, std::ios::binary);
      in.read(reinterpret_cast<char*>(values.data_ptr<float>()), static_cast<std::streamsize>(count * sizeof(float)));
      EXPECT_EQ(in.gcount(), static_cast<std::streamsize>(count * sizeof(float))) << file;
      logits[dtype][c.name] = values;
    }
  }
  return logits;
}

float max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32) - b.to(torch::kFloat32)).abs().max().item<float>();
}

// --------------------------------------------------------------------------------------------

class ReferenceComparison : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceComparison, LogitsMatchPyTorchInFloat32AndBFloat16) {
  const auto models = tiny_models();
  const auto& config = std::find_if(models.begin(), models.end(), [&](auto& m) { return m.first == GetParam(); })->second;
  const auto dir = scratch_dir("reference_" + GetParam()) / "model";
  auto model = random_model(config, 7);
  save_pretrained(model, dir);
  const auto cases = comparison_cases();

  auto float32 = load_pretrained(dir, torch::kFloat32);
  auto bfloat16 = load_pretrained(dir, torch::kBFloat16);
  EXPECT_EQ(bfloat16->output_weight().scalar_type(), torch::kBFloat16);
  auto reference = reference_logits(dir, cases, {"float32", "bfloat16"});
  ASSERT_EQ(reference.size(), 2u);

  for (const auto& c : cases) {
    const auto& expected32 = reference["float32"][c.name];
    const auto& expected16 = reference["bfloat16"][c.name];
    const float scale = expected32.abs().max().item<float>();
    EXPECT_GT(scale, 2.0f) << "logits too small to show differences";

    const float diff32 = max_abs_diff(lathe_logits(float32, c), expected32);
    EXPECT_LE(diff32, 1e-4f) << GetParam() << " " << c.name;

    // bfloat16 keeps 8 significant bits, so one rounding of a logit near `scale` moves it by up to
    // scale/256; Lathe and the reference round at different places (batched vs per-sequence
    // matmuls, fused linear). Measured: at most 3.1% of the largest logit (about 7 ulps).
    const auto ours16 = lathe_logits(bfloat16, c);
    const float diff16 = max_abs_diff(ours16, expected16);
    EXPECT_LE(diff16, 0.05f * scale) << GetParam() << " " << c.name;
    std::printf("[%s/%s] max|logit| %.3f  float32 diff %.2e  bfloat16 diff %.3e (%.2f%% of max) [vs float32 "
                "reference %.3e]\n",
                GetParam().c_str(), c.name.c_str(), scale, diff32, diff16, 100 * diff16 / scale,
                max_abs_diff(ours16, expected32));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ReferenceComparison,
                         ::testing::Values("llama", "llama_bias", "mistral", "qwen2", "qwen3"));


// --------------------------------------------------------------------------------------------
// The model against itself.

ModelConfig family(const std::string& name) {
  for (auto& [model_name, config] : tiny_models())
    if (model_name == name) return config;
  throw std::logic_error("no tiny model " + name);
}

torch::Tensor full_logits(CausalLM& model, const torch::Tensor& ids) {
  return model->logits(model->forward({ids}));
}

TEST(KVCache, GreedyDecodingEqualsRecomputingTheSequence) {
  torch::NoGradGuard no_grad;
  for (const auto* name : {"llama", "qwen3"}) {
    auto model = random_model(family(name), 3);
    auto sequence = random_ids(1, 5, 21);
    KVCache cache;
    auto step_logits = model->logits(model->forward({sequence, {}, {}, &cache})).select(1, -1);
    for (int step = 0; step < 12; ++step) {
      const auto recomputed = full_logits(model, sequence).select(1, -1);
      EXPECT_LE(max_abs_diff(step_logits, recomputed), 1e-4f) << name << " step " << step;
      const auto next = recomputed.argmax(-1, /*keepdim=*/true);
      ASSERT_TRUE(step_logits.argmax(-1, true).equal(next)) << name << " step " << step;
      sequence = torch::cat({sequence, next}, 1);
      step_logits = model->logits(model->forward({next, {}, {}, &cache})).select(1, -1);
      EXPECT_EQ(cache.length(), sequence.size(1));
    }
    EXPECT_EQ(cache.keys.size(), static_cast<size_t>(family(name).num_hidden_layers));
  }
}

// The generation engine's pattern: a left-padded prompt batch, then one token per row per step
// with the padding mask growing; each row must equal that row decoded alone.
TEST(KVCache, LeftPaddedBatchDecodingEqualsEachRowAlone) {
  torch::NoGradGuard no_grad;
  auto model = random_model(family("qwen2"), 4);
  const std::vector<int64_t> lengths{7, 3, 5};
  const int64_t width = 7, steps = 6;
  auto ids = random_ids(3, width, 31);
  auto padding = torch::ones({3, width}, torch::kBool);
  for (int64_t b = 0; b < 3; ++b) padding.index_put_({b, torch::indexing::Slice(0, width - lengths[b])}, false);
  ids.masked_fill_(padding.logical_not(), 0);

  KVCache cache;
  auto positions = padding_position_ids(padding);
  auto last = model->logits(model->forward({ids, positions, causal_padding_mask(padding, width), &cache})).select(1, -1);
  auto next_position = positions.select(1, -1).unsqueeze(1) + 1;
  std::vector<torch::Tensor> batch_logits{last};
  for (int64_t step = 0; step < steps; ++step) {
    const auto next = last.argmax(-1, true);
    padding = torch::cat({padding, torch::ones({3, 1}, torch::kBool)}, 1);
    last = model->logits(model->forward({next, next_position, causal_padding_mask(padding, 1), &cache})).select(1, -1);
    next_position += 1;
    batch_logits.push_back(last);
  }

  for (int64_t b = 0; b < 3; ++b) {
    auto row = ids[b].slice(0, width - lengths[b]).unsqueeze(0);
    KVCache alone;
    auto logits = model->logits(model->forward({row, {}, {}, &alone})).select(1, -1);
    for (int64_t step = 0; step <= steps; ++step) {
      EXPECT_LE(max_abs_diff(logits[0], batch_logits[step][b]), 1e-4f) << "row " << b << " step " << step;
      if (step == steps) break;
      logits = model->logits(model->forward({logits.argmax(-1, true), {}, {}, &alone})).select(1, -1);
    }
  }

  // Finished rows leave the batch: the remaining rows continue unchanged.
  const auto kept = torch::tensor({0, 2}, torch::kInt64);
  const auto keys_before = cache.keys[1].clone();
  const auto values_before = cache.values[1].clone();
  cache.select_rows(kept);
  EXPECT_TRUE(cache.keys[1].equal(keys_before.index_select(0, kept)));
  EXPECT_TRUE(cache.values[1].equal(values_before.index_select(0, kept)));
  EXPECT_EQ(cache.length(), width + steps);
}

TEST(Batching, LeftPaddedRowsEqualUnpaddedSequences) {
  torch::NoGradGuard no_grad;
  auto model = random_model(family("llama"), 5);
  const auto c = comparison_cases()[1];
  const auto batch = lathe_logits(model, c);
  for (int64_t b = 0; b < c.input_ids.size(0); ++b) {
    const auto real = c.real[b];
    const auto alone = full_logits(model, c.input_ids[b].masked_select(real).unsqueeze(0))[0];
    EXPECT_LE(max_abs_diff(batch[b].index({real}), alone), 1e-4f) << "row " << b;
  }
}

TEST(Batching, PackedRowEqualsSeparateSequences) {
  torch::NoGradGuard no_grad;
  auto model = random_model(family("mistral"), 6);
  const auto c = comparison_cases()[2];
  const auto packed = lathe_logits(model, c)[0];
  int64_t start = 0;
  for (const int64_t length : {5, 9, 4}) {
    const auto alone = full_logits(model, c.input_ids.slice(1, start, start + length))[0];
    EXPECT_LE(max_abs_diff(packed.slice(0, start, start + length), alone), 1e-4f) << "sequence at " << start;
    start += length;
  }
}

// Padding-free packing: sequence_lengths instead of a mask. Logits and every parameter's gradient
// (of a fixed random projection of the logits) equal those of each sequence run alone and of the
// same row under the packed [total, total] mask, in float32.
struct LogitsAndGradients {
  torch::Tensor logits;
  std::vector<torch::Tensor> gradients;
};

LogitsAndGradients logits_and_gradients(CausalLM& model, const std::function<torch::Tensor()>& logits_of,
                                        const torch::Tensor& projection) {
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  const auto logits = logits_of();
  (logits * projection).sum().backward();
  LogitsAndGradients result{logits.detach()};
  for (auto& p : model->parameters()) result.gradients.push_back(p.grad().clone());
  return result;
}

// Largest difference relative to the reference's scale (at least 1), so the bound means the same
// for logits of several units and for gradients summed over many positions.
double relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  const auto scale = std::max(1.0, expected.abs().max().item<double>());
  return (actual - expected).abs().max().item<double>() / scale;
}

TEST(Batching, PaddingFreeRowEqualsSequencesAloneAndTheMaskWithGradients) {
  const std::vector<int64_t> lengths{5, 9, 1, 4};
  const int64_t total = 19;
  for (const auto& [name, config] : tiny_models()) {
    auto model = random_model(config, 8);
    const auto ids = random_ids(1, total, 21);
    const auto positions = packed_position_ids(lengths);
    torch::manual_seed(5);
    const auto projection = torch::randn({1, total, kVocab});

    const auto padding_free = logits_and_gradients(model, [&] {
      return model->logits(model->forward({ids, positions, {}, nullptr, lengths}));
    }, projection);
    const auto masked = logits_and_gradients(model, [&] {
      return model->logits(model->forward({ids, positions, packed_causal_mask(lengths)}));
    }, projection);
    const auto alone = logits_and_gradients(model, [&] {
      std::vector<torch::Tensor> pieces;
      int64_t start = 0;
      for (const auto length : lengths) {
        pieces.push_back(model->logits(model->forward({ids.slice(1, start, start + length)})));
        start += length;
      }
      return torch::cat(pieces, 1);
    }, projection);

    for (const auto* reference : {&masked, &alone}) {
      const char* against = reference == &masked ? "mask" : "alone";
      EXPECT_LE(relative_difference(padding_free.logits, reference->logits), 1e-5) << name << " vs " << against;
      for (size_t i = 0; i < padding_free.gradients.size(); ++i)
        EXPECT_LE(relative_difference(padding_free.gradients[i], reference->gradients[i]), 1e-5)
            << name << " vs " << against << ", parameter " << i;
    }
  }
}

// Gradient checkpointing recomputes each layer in backward; the recomputation must see what the
// forward saw, sliding window included (a window shorter than the sequences, so it matters), for
// packed rows and for masked batches alike.
TEST(Checkpointing, RecomputedLayersKeepTheSlidingWindow) {
  auto config = tiny_models()[3].second;  // qwen2
  ASSERT_EQ(config.model_type, "qwen2");
  config.sliding_window = 3;
  config.sliding_layers.assign(static_cast<size_t>(config.num_hidden_layers), true);
  config.sliding_layers[0] = false;  // one full-attention layer, as max_window_layers gives
  auto model = random_model(config, 8);
  model->train();
  const std::vector<int64_t> lengths{5, 9, 1, 4};
  const int64_t total = 19;
  const auto ids = random_ids(1, total, 21);
  const auto positions = packed_position_ids(lengths);
  torch::manual_seed(5);
  const auto projection = torch::randn({1, total, kVocab});
  const std::vector<std::pair<std::string, std::function<torch::Tensor()>>> paths{
      {"packed", [&] { return model->logits(model->forward({ids, positions, {}, nullptr, lengths})); }},
      {"causal", [&] { return model->logits(model->forward({ids})); }}};
  for (const auto& [path, logits_of] : paths) {
    model->set_gradient_checkpointing(false);
    const auto plain = logits_and_gradients(model, logits_of, projection);
    model->set_gradient_checkpointing(true);
    const auto checkpointed = logits_and_gradients(model, logits_of, projection);
    EXPECT_LE(relative_difference(checkpointed.logits, plain.logits), 1e-6) << path;
    for (size_t i = 0; i < plain.gradients.size(); ++i)
      EXPECT_LE(relative_difference(checkpointed.gradients[i], plain.gradients[i]), 1e-5) << path << ", parameter " << i;
  }
  // The window must have been in force: without it the logits differ.
  model->set_gradient_checkpointing(false);
  auto unwindowed = config;
  unwindowed.sliding_window.reset();
  unwindowed.sliding_layers.clear();
  auto full = random_model(unwindowed, 8);
  torch::NoGradGuard no_grad;
  EXPECT_GT(relative_difference(full->logits(full->forward({ids})), model->logits(model->forward({ids}))), 1e-3);
}

// --------------------------------------------------------------------------------------------
// Projections held in 16 bits under float32 computation compute what the float32 model computes
// with its weights rounded to those 16 bits: logits, KV-cache decoding and the gradients of what
// still trains (the norms here).

void round_projections(CausalLM& model, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters())
    if (item.value().dim() == 2) item.value().copy_(item.value().to(dtype).to(torch::kFloat32));
}

TEST(HeldProjections, ComputeAsTheFloatModelWithRoundedWeights) {
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (const auto* name : {"llama", "qwen2"}) {  // an untied head, then a tied one with biases
      auto held = random_model(family(name), 6), rounded = random_model(family(name), 6);
      round_projections(rounded, dtype);
      held->hold_projections_in(dtype, /*embedding=*/true);
      const auto parameters = held->named_parameters();
      EXPECT_EQ(parameters["model.layers.0.mlp.down_proj.weight"].scalar_type(), dtype);
      EXPECT_FALSE(parameters["model.layers.0.mlp.down_proj.weight"].requires_grad());
      EXPECT_EQ(parameters["model.embed_tokens.weight"].scalar_type(), dtype);
      EXPECT_EQ(parameters["model.norm.weight"].scalar_type(), torch::kFloat32);
      const std::string what = std::string(name) + " in " + c10::toString(dtype);

      const auto ids = random_ids(2, 9, 17);
      torch::manual_seed(2);
      const auto projection = torch::randn({2, 9, kVocab});
      const auto norm_gradients = [&](CausalLM& model) {
        for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
        const auto logits = full_logits(model, ids);
        (logits * projection).sum().backward();
        std::vector<torch::Tensor> gradients{logits.detach()};
        for (auto& item : model->named_parameters())
          if (item.key().ends_with("norm.weight")) gradients.push_back(item.value().grad());
        return gradients;
      };
      const auto from_held = norm_gradients(held), from_rounded = norm_gradients(rounded);
      ASSERT_EQ(from_held.size(), from_rounded.size());
      for (size_t i = 0; i < from_held.size(); ++i)
        EXPECT_LE(relative_difference(from_held[i], from_rounded[i]), 1e-5) << what << ", tensor " << i;

      torch::NoGradGuard no_grad;
      KVCache held_cache, rounded_cache;
      auto next = random_ids(1, 4, 5);
      for (int step = 0; step < 6; ++step) {
        const auto a = held->logits(held->forward({next, {}, {}, &held_cache})).select(1, -1);
        const auto b = rounded->logits(rounded->forward({next, {}, {}, &rounded_cache})).select(1, -1);
        EXPECT_LE(relative_difference(a, b), 1e-5) << what << ", decoding step " << step;
        next = b.argmax(-1, /*keepdim=*/true);
      }
    }
  }
}

TEST(Batching, SequenceLengthsMustDescribeOnePackedRow) {
  auto model = random_model(tiny_models()[0].second, 8);
  torch::NoGradGuard no_grad;
  const auto ids = random_ids(1, 6, 3);
  EXPECT_THROW(model->forward({ids, {}, {}, nullptr, {2, 3}}), c10::Error);                      // sums to 5
  EXPECT_THROW(model->forward({random_ids(2, 6, 3), {}, {}, nullptr, {2, 4}}), c10::Error);      // two rows
  EXPECT_THROW(model->forward({ids, {}, packed_causal_mask({2, 4}), nullptr, {2, 4}}), c10::Error);  // both
}

// --------------------------------------------------------------------------------------------
// Masks, by hand.

TEST(Masks, CausalPaddingMask) {
  const auto padding = torch::tensor({0, 1, 1}, torch::kBool).view({1, 3});
  const auto mask = causal_padding_mask(padding, 2);
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{1, 1, 2, 3}));
  const auto expected = torch::tensor({0, 1, 0, 0, 1, 1}, torch::kBool).view({1, 1, 2, 3});
  EXPECT_TRUE(mask.equal(expected)) << mask;
  EXPECT_TRUE(padding_position_ids(padding).equal(torch::tensor({0, 0, 1}, torch::kInt64).view({1, 3})));
}

TEST(Masks, PackedMaskAndPositions) {
  const auto mask = packed_causal_mask({2, 1, 2});
  const auto expected = torch::tensor({1, 0, 0, 0, 0,
                                       1, 1, 0, 0, 0,
                                       0, 0, 1, 0, 0,
                                       0, 0, 0, 1, 0,
                                       0, 0, 0, 1, 1}, torch::kBool).view({1, 1, 5, 5});
  EXPECT_TRUE(mask.equal(expected)) << mask;
  EXPECT_TRUE(packed_position_ids({2, 1, 2}).equal(torch::tensor({0, 1, 0, 0, 1}, torch::kInt64).view({1, 5})));
}

// --------------------------------------------------------------------------------------------
// Loading and saving.


TEST(Pretrained, SaveThenLoadGivesTheSameStateAndTiedHeadIsNotStored) {
  auto tied = random_model(family("qwen2"), 8);
  const auto dir = scratch_dir("roundtrip");
  save_pretrained(tied, dir);
  auto loaded = load_pretrained(dir);
  const auto state = loaded->state();
  EXPECT_EQ(state.count("lm_head.weight"), 0u);
  EXPECT_EQ(state.count("model.layers.2.self_attn.q_proj.bias"), 1u);
  EXPECT_EQ(state.count("model.layers.2.self_attn.o_proj.bias"), 0u);
  for (const auto& [name, tensor] : tied->state()) EXPECT_TRUE(tensor.equal(state.at(name))) << name;
  EXPECT_TRUE(loaded->output_weight().equal(tied->state().at("model.embed_tokens.weight")));

  // A tied checkpoint that stores the head anyway still loads.
  auto with_head = tied->state();
  with_head["lm_head.weight"] = with_head["model.embed_tokens.weight"];
  loaded->load_state(with_head, "memory");

  const auto json_config = ModelConfig::load(dir / "config.json");
  EXPECT_EQ(json_config.model_type, "qwen2");
  EXPECT_TRUE(json_config.tie_word_embeddings);
}

// AutoModelForSequenceClassification's reading of a causal LM: the same body, the output head
// dropped, a seeded normal(0, 0.02) score head; the classifier's own folder then loads as it is.
TEST(Pretrained, ACausalLmLoadsAsASequenceClassifier) {
  auto causal = random_model(family("llama"), 11);  // untied: its lm_head must go
  const auto dir = scratch_dir("classifier");
  save_pretrained(causal, dir / "causal");
  torch::manual_seed(3);
  auto classifier = load_pretrained(dir / "causal", torch::kFloat32, {}, ClassifierConversion{1, 5});
  ASSERT_TRUE(classifier->is_classifier());
  EXPECT_EQ(classifier->config().pad_token_id, 5);
  const auto state = classifier->state();
  EXPECT_EQ(state.count("lm_head.weight"), 0u);
  ASSERT_EQ(state.count("score.weight"), 1u);
  const auto head = state.at("score.weight");
  EXPECT_EQ(head.sizes(), (std::vector<int64_t>{1, causal->config().hidden_size}));
  EXPECT_NEAR(head.std().item<double>(), 0.02, 0.01);
  for (const auto& [name, tensor] : causal->state()) {
    if (name != "lm_head.weight") EXPECT_TRUE(tensor.equal(state.at(name))) << name;
  }
  torch::manual_seed(3);
  auto again = load_pretrained(dir / "causal", torch::kFloat32, {}, ClassifierConversion{1, 5});
  EXPECT_TRUE(again->output_weight().equal(head)) << "the head follows torch's seed";

  const auto ids = torch::tensor({{3, 1, 4, 1, 5}});
  EXPECT_EQ(classifier->logits(classifier->forward({ids})).sizes(), (std::vector<int64_t>{1, 5, 1}));
  save_pretrained(classifier, dir / "classifier");
  auto loaded = load_pretrained(dir / "classifier", torch::kFloat32, {}, ClassifierConversion{1});
  EXPECT_TRUE(loaded->is_classifier());
  EXPECT_TRUE(loaded->output_weight().equal(head)) << "a classifier's folder keeps its head";
  EXPECT_TRUE(load_pretrained(dir / "classifier")->is_classifier());
}

TEST(Pretrained, ShardedSaveLoads) {
  auto model = random_model(family("llama"), 9);
  const auto dir = scratch_dir("sharded");
  save_pretrained(model, dir, 64 * 1024);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  auto loaded = load_pretrained(dir);
  for (const auto& [name, tensor] : model->state()) EXPECT_TRUE(tensor.equal(loaded->state().at(name))) << name;
}

TEST(Pretrained, ConfigWeightsMismatchNamesTensorAndBothShapes) {
  auto model = random_model(family("llama"), 10);
  const auto dir = scratch_dir("mismatch");
  save_pretrained(model, dir);
  auto config = json::parse(std::ifstream(dir / "config.json"));
  config["intermediate_size"] = 96;
  std::ofstream(dir / "config.json") << config.dump();
  const auto message = error_of([&] { load_pretrained(dir); });
  EXPECT_NE(message.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[64, 128]"), std::string::npos) << message;  // in the checkpoint
  EXPECT_NE(message.find("[64, 96]"), std::string::npos) << message;   // from config.json
}

TEST(Pretrained, MissingAndUnexpectedTensorsAreNamed) {
  auto model = random_model(family("qwen3"), 11);
  auto state = model->state();
  state.erase("model.layers.1.self_attn.k_norm.weight");
  auto message = error_of([&] { model->load_state(state, "ckpt"); });
  EXPECT_NE(message.find("ckpt: missing tensor model.layers.1.self_attn.k_norm.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[32]"), std::string::npos) << message;

  state = model->state();
  state["model.layers.2.mlp.up_proj.weight"] = torch::zeros({128, 64});
  message = error_of([&] { model->load_state(state, "ckpt"); });
  EXPECT_NE(message.find("model.layers.2.mlp.up_proj.weight"), std::string::npos) << message;
}

TEST(Pretrained, LoadStateConvertsDtype) {
  auto model = random_model(family("llama"), 12);
  auto bf16 = CausalLM(family("llama"), torch::kBFloat16);
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, tensor] : model->state()) state[name] = tensor.detach();
  bf16->load_state(state, "memory");
  const auto weight = bf16->state().at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(weight.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(weight.equal(state.at("model.layers.0.self_attn.q_proj.weight").to(torch::kBFloat16)));
}

// --weight_dtype: auto holds the projections in the checkpoint's own 16-bit dtype where that is
// lossless, and a float32 checkpoint stays float32; the loaded values are the file's exactly.
TEST(Pretrained, ProjectionsHeldInTheCheckpointsSixteenBitDtype) {
  auto bf16 = CausalLM(family("qwen2"), torch::kBFloat16);
  const auto bf16_dir = scratch_dir("bf16_checkpoint");
  save_pretrained(bf16, bf16_dir);
  auto f32 = random_model(family("qwen2"), 8);
  const auto f32_dir = scratch_dir("f32_checkpoint");
  save_pretrained(f32, f32_dir);

  EXPECT_EQ(stored_projection_dtype(bf16_dir), torch::kBFloat16);
  EXPECT_EQ(stored_projection_dtype(f32_dir), std::nullopt);
  EXPECT_EQ(projection_dtype("auto", "float32", bf16_dir, true), torch::kBFloat16);
  EXPECT_EQ(projection_dtype("auto", "float32", bf16_dir, /*lossless_auto=*/false), std::nullopt);
  EXPECT_EQ(projection_dtype("auto", "bfloat16", bf16_dir, true), std::nullopt);  // already bfloat16
  EXPECT_EQ(projection_dtype("auto", "float32", f32_dir, true), std::nullopt);
  EXPECT_EQ(projection_dtype("float16", "float32", f32_dir, true), torch::kHalf);
  EXPECT_EQ(projection_dtype("float32", "float32", f32_dir, true), std::nullopt);
  auto message = error_of([&] { projection_dtype("float16", "bfloat16", f32_dir, true); });
  EXPECT_NE(message.find("--weight_dtype float16"), std::string::npos) << message;
  EXPECT_NE(message.find("--torch_dtype float32"), std::string::npos) << message;

  auto held = load_pretrained(bf16_dir, torch::kFloat32, {torch::kBFloat16, /*embedding=*/false});
  const auto state = held->state(), file = bf16->state();
  EXPECT_EQ(state.at("model.layers.1.self_attn.k_proj.weight").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(state.at("model.layers.1.self_attn.k_proj.bias").scalar_type(), torch::kFloat32);
  EXPECT_EQ(state.at("model.embed_tokens.weight").scalar_type(), torch::kFloat32);  // not asked for
  for (const auto& [name, tensor] : file) EXPECT_TRUE(tensor.to(torch::kFloat32).equal(state.at(name).to(torch::kFloat32))) << name;
}

TEST(Pretrained, MissingFolderConfigAndUnsupportedArchitecture) {
  const auto dir = scratch_dir("bad_folders");
  auto message = error_of([&] { load_pretrained(dir / "absent"); });
  EXPECT_NE(message.find("absent: model folder not found"), std::string::npos) << message;

  message = error_of([&] { load_pretrained(dir); });
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;

  std::ofstream(dir / "config.json") << R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                            "vocab_size": 10, "n_embd": 8})";
  message = error_of([&] { load_pretrained(dir); });
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("GPT2LMHeadModel"), std::string::npos) << message;
  EXPECT_NE(message.find("LlamaForCausalLM"), std::string::npos) << message;
  EXPECT_NE(message.find("Qwen3ForCausalLM"), std::string::npos) << message;
}

TEST(Linear, AdapterReplacesTheComputationAndIsNamedUnderTheLayer) {
  struct Doubling : LinearAdapter {
    Doubling() { scale = register_parameter("scale", torch::full({1}, 2.0)); }
    torch::Tensor forward(LinearImpl& base, const torch::Tensor& x) override { return base.base_forward(x) * scale; }
    torch::Tensor scale;
  };
  auto model = random_model(family("llama"), 13);
  const auto ids = random_ids(1, 4, 41);
  torch::NoGradGuard no_grad;
  const auto before = model->forward({ids});
  auto& q_proj = *model->named_modules()["model.layers.0.self_attn.q_proj"]->as<LinearImpl>();
  q_proj.set_adapter("double", std::make_shared<Doubling>());
  EXPECT_EQ(model->named_parameters().contains("model.layers.0.self_attn.q_proj.double.scale"), true);
  EXPECT_EQ(model->state().count("model.layers.0.self_attn.q_proj.double.scale"), 0u);
  EXPECT_GT(max_abs_diff(model->forward({ids}), before), 1e-3f);
  q_proj.remove_adapter();
  EXPECT_FALSE(model->named_parameters().contains("model.layers.0.self_attn.q_proj.double.scale"));
  EXPECT_LE(max_abs_diff(model->forward({ids}), before), 0.0f);
}

// Decoding one sequence projects a single row through a matrix-vector product (no packed copy of
// the weight); it must give what torch::linear gives, bias included.
TEST(Linear, OneRowOutsideAutogradEqualsTorchLinear) {
  torch::manual_seed(14);
  Linear layer(64, 300, /*bias=*/true);
  for (const auto& x : {torch::randn({1, 1, 64}), torch::randn({64})}) {
    const auto expected = torch::linear(x, layer->weight, layer->bias);
    torch::NoGradGuard no_grad;
    const auto got = layer(x);
    ASSERT_EQ(got.sizes(), expected.sizes());
    EXPECT_LE(max_abs_diff(got, expected), 1e-5f);
  }
}

}  // namespace
}  // namespace lathe
