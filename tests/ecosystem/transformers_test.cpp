// Lathe's model numerics against Hugging Face transformers' own code: tiny random models created and
// saved by transformers load in Lathe with the same logits (a whole sequence, and token by token
// through the KV cache), and the model folders Lathe writes load in transformers with no missing or
// unexpected keys and the same logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/infer/inference.h"
#include "lathe/model/model.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// float32: the difference is summation order only (transformers' eager attention against Lathe's).
constexpr double kFloat32Tolerance = 1e-4;
// bfloat16 keeps 8 bits of mantissa, and the two implementations round intermediate results at
// different points, so their bfloat16 logits differ by about as much as each differs from float32.
// Stated: Lathe's bfloat16 logits are about as far from transformers' float32 logits as
// transformers' own bfloat16 logits are: on average within 1.3 times, at the worst logit within 2
// times (measured: 0.90-1.22 on average, 0.93-1.81 at the worst).
constexpr double kBfloat16MeanRatio = 1.3;
constexpr double kBfloat16MaxRatio = 2.0;

const std::vector<int32_t> kIds{3, 17, 250, 9, 511, 42, 42, 108, 77, 5, 300, 12, 64, 199};

struct Architecture {
  std::string name;
  std::vector<std::string> create;  // hf_oracle.py create arguments
};

// Every architecture Lathe reads, with GQA, tied and untied heads, qkv bias (qwen2, perturbed from
// transformers' zero init), q/k norm (qwen3), each rope_scaling kind (windows and contexts shorter
// than the 14 tokens, so that they act: dynamic and longrope switch regimes inside the sequence, and
// token by token through the cache) and sliding-window attention in every layer (Mistral) or from
// a layer on (Qwen2's max_window_layers).
std::vector<Architecture> architectures() {
  return {
      {"llama", {"--arch", "llama"}},
      {"llama_gqa_tied_llama3_rope",
       {"--arch", "llama", "--gqa", "--tied", "--rope_theta", "50000", "--rope_scaling",
        R"({"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16})"}},
      {"llama_linear_rope", {"--arch", "llama", "--gqa", "--rope_scaling", R"({"rope_type":"linear","factor":2.0})"}},
      {"mistral_gqa", {"--arch", "mistral", "--gqa"}},
      {"qwen2_gqa_tied_bias", {"--arch", "qwen2", "--gqa", "--tied"}},
      {"qwen3_gqa_qk_norm", {"--arch", "qwen3", "--gqa", "--head_dim", "32"}},
      {"llama_dynamic_rope", {"--arch", "llama", "--max_positions", "8", "--rope_scaling", R"({"rope_type":"dynamic","factor":2.0})"}},
      {"qwen2_yarn_rope",
       {"--arch", "qwen2", "--gqa", "--max_positions", "64", "--rope_scaling",
        R"({"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":16})"}},
      {"llama_yarn_mscale_rope",
       {"--arch", "llama", "--max_positions", "64", "--rope_scaling",
        R"({"rope_type":"yarn","factor":8.0,"original_max_position_embeddings":8,"mscale":0.7,"mscale_all_dim":1.0,"beta_fast":16})"}},
      {"llama_longrope",
       {"--arch", "llama", "--gqa", "--max_positions", "64", "--rope_scaling",
        R"({"rope_type":"longrope","original_max_position_embeddings":8,"short_factor":[1.0,1.1,1.2,1.4,1.6,2.0,2.5,3.0],"long_factor":[1.0,1.5,2.0,3.0,4.0,6.0,8.0,12.0]})"}},
      {"mistral_sliding_window", {"--arch", "mistral", "--gqa", "--sliding_window", "4"}},
      {"qwen2_sliding_window_from_layer_1",
       {"--arch", "qwen2", "--gqa", "--sliding_window", "5", "--max_window_layers", "1"}},
  };
}

TEST(Transformers, LogitsEqualTransformersForEveryArchitectureAndDtype) {
  TempDir dir("transformers-logits");
  std::vector<std::vector<std::string>> jobs;
  for (const auto& arch : architectures()) {
    auto create = std::vector<std::string>{"create", "--out", (dir / arch.name).string(), "--initializer_range", "0.1"};
    create.insert(create.end(), arch.create.begin(), arch.create.end());
    jobs.push_back(create);
    jobs.push_back(logits_job(dir / arch.name, kIds, dir / (arch.name + ".float32.json")));
    jobs.push_back(logits_job(dir / arch.name, kIds, dir / (arch.name + ".bfloat16.json"), {"--dtype", "bfloat16"}));
  }
  ASSERT_TRUE(run_oracle(jobs, dir.path()));
  // The reverse for each: the same model saved by Lathe (config.json included) loads in transformers.
  jobs.clear();
  for (const auto& arch : architectures()) {
    auto model = load_pretrained(dir / arch.name);
    save_pretrained(model, dir / (arch.name + "-lathe"));
    jobs.push_back(logits_job(dir / (arch.name + "-lathe"), kIds, dir / (arch.name + "-lathe.json")));
  }
  ASSERT_TRUE(run_oracle(jobs, dir.path()));

  for (const auto& arch : architectures()) {
    SCOPED_TRACE(arch.name);
    const auto exact = read_oracle_logits(dir / (arch.name + ".float32.json"));
    const auto rounded = read_oracle_logits(dir / (arch.name + ".bfloat16.json"));
    auto model = load_pretrained(dir / arch.name, torch::kFloat32);
    const auto actual = lathe_logits(model, kIds);
    ASSERT_EQ(actual.full.sizes(), exact.full.sizes());
    EXPECT_GT(exact.full.abs().max().item<double>(), 1.0) << "logits large enough to compare";
    EXPECT_LE(max_abs_diff(actual.full, exact.full), kFloat32Tolerance) << "float32, whole sequence";
    EXPECT_LE(max_abs_diff(actual.steps, exact.steps), kFloat32Tolerance) << "float32, through the KV cache";
    const auto saved_by_lathe = read_oracle_logits(dir / (arch.name + "-lathe.json"));
    for (const char* key : {"missing_keys", "unexpected_keys", "mismatched_keys"}) {
      EXPECT_EQ(saved_by_lathe.loading.at(key), json::array()) << "saved by Lathe: " << key;
    }
    EXPECT_LE(max_abs_diff(saved_by_lathe.full, exact.full), kFloat32Tolerance) << "saved by Lathe, loaded by transformers";
    EXPECT_LE(max_abs_diff(saved_by_lathe.steps, exact.steps), kFloat32Tolerance) << "saved by Lathe, through the cache";

    auto model_bf16 = load_pretrained(dir / arch.name, torch::kBFloat16);
    const auto actual_bf16 = lathe_logits(model_bf16, kIds);
    for (const auto& [what, lathe, transformers, reference] :
         {std::tuple{"whole sequence", actual_bf16.full, rounded.full, exact.full},
          std::tuple{"through the KV cache", actual_bf16.steps, rounded.steps, exact.steps}}) {
      const double lathe_max = max_abs_diff(lathe, reference), transformers_max = max_abs_diff(transformers, reference);
      const double lathe_mean = (lathe - reference).abs().mean().item<double>();
      const double transformers_mean = (transformers - reference).abs().mean().item<double>();
      std::cout << arch.name << ", bfloat16 " << what << ": off float32 by at most " << lathe_max << " (transformers "
                << transformers_max << "), on average " << lathe_mean << " (transformers " << transformers_mean << ")\n";
      EXPECT_LE(lathe_mean, kBfloat16MeanRatio * transformers_mean) << "bfloat16 " << what;
      EXPECT_LE(lathe_max, kBfloat16MaxRatio * transformers_max) << "bfloat16 " << what;
    }
  }
}

// A model folder from `lathe sft --train_type full` and one from `lathe export --merge_lora` load in
// transformers with nothing missing or left over, and transformers computes Lathe's logits on them.
TEST(Transformers, LatheModelFoldersLoadInTransformers) {
  TempDir dir("transformers-reverse");
  ASSERT_TRUE(run_oracle({{"create", "--arch", "llama", "--gqa", "--out", (dir / "base").string(), "--tokenizer",
                           qwen_tokenizer_dir().string(), "--initializer_range", "0.1", "--rope_scaling",
                           R"({"rope_type":"llama3","factor":4.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16})"}},
                         dir.path()));
  const auto full = lathe_sft_checkpoint(dir.path(), dir / "base", "full", {"--train_type", "full"});
  const auto lora = lathe_sft_checkpoint(dir.path(), dir / "base", "lora", {"--train_type", "lora"});
  const auto export_result = run_lathe({"export", "--adapters", lora.string(), "--merge_lora", "true", "--output_dir",
                                        (dir / "merged").string()});
  ASSERT_EQ(export_result.exit_code, 0) << export_result.err;

  ASSERT_TRUE(run_oracle({logits_job(dir / "base", kIds, dir / "base.json"), logits_job(full, kIds, dir / "full.json"),
                          logits_job(dir / "merged", kIds, dir / "merged.json")},
                         dir.path()));
  auto base = load_pretrained(dir / "base");
  const auto base_logits = lathe_logits(base, kIds).full;

  auto trained = load_pretrained(full);
  Arguments with_adapter;
  with_adapter.model = (dir / "base").string();
  with_adapter.adapters = {lora.string()};
  auto adapted = load_inference_model(with_adapter).model;
  for (const auto& [name, model, oracle] : {std::tuple{"full checkpoint", trained, "full.json"},
                                            std::tuple{"merged export", adapted, "merged.json"}}) {
    SCOPED_TRACE(name);
    auto lathe_model = model;
    const auto expected = read_oracle_logits(dir / oracle);
    for (const char* key : {"missing_keys", "unexpected_keys", "mismatched_keys"}) {
      EXPECT_EQ(expected.loading.at(key), json::array()) << key;
    }
    const auto actual = lathe_logits(lathe_model, kIds);
    EXPECT_LE(max_abs_diff(actual.full, expected.full), kFloat32Tolerance);
    EXPECT_GT(max_abs_diff(actual.full, base_logits), 1e-3) << "training changed the model";
  }
}

}  // namespace
}  // namespace lathe::testing
