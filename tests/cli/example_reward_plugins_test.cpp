// The example plugins of examples/plugins/{tuner,orm,prm}: compiled on the fly and loaded into this
// process with load_external_plugins, then checked on hand-computed cases; the IA3 tuner trains
// through `lathe sft` and its saved adapter is reloaded.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "cli/cli_util.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/plugin.h"
#include "lathe/plugin/orm.h"
#include "lathe/plugin/prm.h"
#include "lathe/plugin/tuner.h"
#include "lathe/model/weights.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kExamples = fs::path(LATHE_SOURCE_DIR) / "examples/plugins";
const fs::path kCache = fs::path(LATHE_BINARY_DIR) / "plugin-cache-examples";

// Registries refuse a name twice, so each example is loaded once per process.
void load_examples() {
  static const bool loaded = [] {
    setenv("LATHE_PLUGIN_CACHE", kCache.c_str(), 1);
    load_external_plugins({(kExamples / "orm/math_orm.cpp").string(), (kExamples / "prm/step_prm.cpp").string(),
                           (kExamples / "tuner/ia3_tuner.cpp").string()});
    return true;
  }();
  (void)loaded;
}

std::vector<double> math_rewards(const std::vector<std::pair<std::string, json>>& cases) {
  load_examples();
  std::vector<RewardInput> inputs;
  for (const auto& [completion, row] : cases) inputs.push_back({completion, row, std::nullopt});
  return orm_registry().factory("math_example")(Arguments{})->score(inputs);
}

TEST(ExampleMathOrm, ComparesTheLastBoxedAnswerWithTheReference) {
  const auto rewards = math_rewards({
      {"half of 1 is \\boxed{\\dfrac{1}{2}}.", {{"solution", "0.5"}}},                // \dfrac and a decimal
      {"first \\boxed{3}, corrected: \\boxed{4}", {{"answer", "4"}}},                   // the last box counts
      {"\\boxed{5}", {{"solution", "We add: 2 + 4 = \\boxed{6}"}}},                     // the reference's box: 6
      {"\\boxed{6}", {{"solution", "We add: 2 + 4 = \\boxed{6}"}}},
      {"the answer is 12", {{"response", "12"}}},                                       // no box at all
      {"\\boxed{ 12 }", {{"response", "$12$."}}},                                       // spaces, $ and "."
      {"\\boxed{\\frac{3}{4}}", {{"solution", "6/8"}}},                                 // equal as numbers
      {"\\boxed{x^{2}}", {{"solution", "\\boxed{x^{2}}"}}},                            // nested braces
  });
  EXPECT_EQ(rewards, (std::vector<double>{1, 1, 0, 1, 0, 1, 1, 1}));
}

TEST(ExampleMathOrm, ARowWithoutReferenceIsAnError) {
  EXPECT_THROW(math_rewards({{"\\boxed{1}", {{"query", "1?"}}}}), Error);
}

std::vector<std::vector<double>> step_rewards(const std::vector<std::string>& responses) {
  load_examples();
  std::vector<PrmInput> inputs;
  for (const auto& response : responses) {
    Conversation conversation;
    conversation.messages = {{"user", "compute", {}, {}}, {"assistant", response, {}, {}}};
    inputs.push_back({conversation, std::nullopt});
  }
  return prm_registry().factory("step_example")(Arguments{})->score(inputs);
}

TEST(ExampleStepPrm, OneRewardPerStepFromItsArithmetic) {
  const auto rewards = step_rewards({
      "Intro.\nStep 1: 2 + 3 = 5\nStep 2: 5 * 4 = 21\nStep 3: so the answer is 21",  // markers: 3 steps
      "12 - 4 = 8\n\n8 / 2 = 4\n\n4 x 3 = 13",                                       // paragraphs
      "3 - -2 = 5 and 1.5 + 1.5 = 3\n  \n7 - 10 = -3, 2 + 2 = 5",               // one bad equation sinks a step
      "",
  });
  ASSERT_EQ(rewards.size(), 4u);
  EXPECT_EQ(rewards[0], (std::vector<double>{1, 0, 1}));
  EXPECT_EQ(rewards[1], (std::vector<double>{1, 1, 0}));
  EXPECT_EQ(rewards[2], (std::vector<double>{1, 0}));
  EXPECT_TRUE(rewards[3].empty());
}

torch::Tensor logits_of(CausalLM& model) {
  torch::NoGradGuard no_grad;
  return model->logits(model->forward(ForwardInputs{torch::tensor({{3, 1, 4, 1, 5, 9, 2, 6}})}));
}

CausalLM with_adapter(const fs::path& model_dir, const std::string& tuner_name, const fs::path& adapter) {
  auto model = load_pretrained(model_dir);
  tuner_registry().factory(tuner_name)(Arguments{})->from_pretrained(model, adapter, /*trainable=*/false);
  model->eval();
  return model;
}

TEST(ExampleIa3Tuner, TrainsThroughSftAndItsAdapterReloads) {
  load_examples();
  TempDir dir("example-ia3");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", {{{"query", "2 + 2?"}, {"response", "4"}}, {{"query", "3 + 3?"}, {"response", "6"}}});
  auto trained = run_lathe({"sft", "--model", (dir / "model").string(), "--dataset", (dir / "train.jsonl").string(),
                            "--output_dir", (dir / "output").string(), "--max_steps", "3", "--learning_rate", "0.05",
                            "--per_device_train_batch_size", "2", "--external_plugins",
                            (kExamples / "tuner/ia3_tuner.cpp").string(), "--train_type", "ia3_example"},
                           "", {"LATHE_PLUGIN_CACHE=" + kCache.string()});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  fs::path adapter;
  for (const auto& run : fs::directory_iterator(dir / "output"))
    if (fs::exists(run.path() / "checkpoint-3")) adapter = run.path() / "checkpoint-3";
  ASSERT_FALSE(adapter.empty()) << "no checkpoint-3";

  // PEFT's IA3 layout: k/v vectors [out, 1], down_proj vectors [1, in], trained away from ones.
  const auto config = json::parse(read_file(adapter / "adapter_config.json"));
  EXPECT_EQ(config.at("peft_type"), "IA3");
  const auto tensors = load_tensors(adapter / "adapter_model.safetensors");
  auto base = load_pretrained(dir / "model");
  const auto& shape = base->config();
  ASSERT_EQ(tensors.size(), static_cast<std::size_t>(3 * shape.num_hidden_layers));
  const auto down = tensors.at("base_model.model.model.layers.0.mlp.down_proj.ia3_l");
  EXPECT_EQ(down.sizes(), (torch::IntArrayRef{1, shape.intermediate_size}));
  const auto key = tensors.at("base_model.model.model.layers.0.self_attn.k_proj.ia3_l");
  EXPECT_EQ(key.sizes(), (torch::IntArrayRef{base->state().at("model.layers.0.self_attn.k_proj.weight").size(0), 1}));
  EXPECT_GT((key - 1).abs().max().item<double>(), 1e-4) << "training moved the vector";

  // Reloaded by the example and by the built-in ia3 (an independent reader of the same format):
  // the same logits, and not those of the base model.
  auto by_example = with_adapter(dir / "model", "ia3_example", adapter);
  auto by_builtin = with_adapter(dir / "model", "ia3", adapter);
  const auto logits = logits_of(by_example);
  EXPECT_TRUE(torch::allclose(logits, logits_of(by_builtin), 1e-6, 1e-6));
  EXPECT_GT((logits - logits_of(base)).abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace lathe::testing
