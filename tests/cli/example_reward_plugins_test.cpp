// The example plugins of examples/plugins/{tuner,orm,prm}: compiled on the fly and loaded into this
// process with load_external_plugins, then checked on hand-computed cases; the LN-tuning tuner
// trains through `lathe sft` and its saved PEFT adapter is reloaded.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <set>

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
                           (kExamples / "tuner/ln_tuning.cpp").string()});
    return true;
  }();
  (void)loaded;
}

std::vector<double> math_rewards(const std::vector<std::pair<std::string, json>>& cases) {
  load_examples();
  std::vector<RewardInput> inputs;
  for (const auto& [completion, row] : cases) inputs.push_back({completion, row, std::nullopt});
  return orm_registry().create("math_example", Arguments{})->score(inputs);
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
  return prm_registry().create("step_example", Arguments{})->score(inputs);
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
  tuner_registry().create(tuner_name, Arguments{})->from_pretrained(model, adapter, /*trainable=*/false);
  model->eval();
  return model;
}

struct SftRun {
  CommandResult result;
  fs::path checkpoint;  // checkpoint-3 of the run; empty when there is none
};

// Three steps of `lathe sft` on dir/model and dir/train.jsonl with the given tuner arguments.
SftRun sft_three_steps(const TempDir& dir, const std::string& output, const std::vector<std::string>& tuner) {
  std::vector<std::string> args = {"sft", "--model", (dir / "model").string(), "--dataset", (dir / "train.jsonl").string(),
                                   "--output_dir", (dir / output).string(), "--max_steps", "3", "--learning_rate", "0.05",
                                   "--per_device_train_batch_size", "2"};
  args.insert(args.end(), tuner.begin(), tuner.end());
  SftRun run{run_lathe(args, "", {"LATHE_PLUGIN_CACHE=" + kCache.string()}), {}};
  if (fs::is_directory(dir / output))
    for (const auto& entry : fs::directory_iterator(dir / output))
      if (fs::exists(entry.path() / "checkpoint-3")) run.checkpoint = entry.path() / "checkpoint-3";
  return run;
}

// PEFT's name for the trained copy of a norm: model.norm.weight -> base_model.model.model.norm.ln_tuning_layers.weight.
std::string ln_tuning_key(const std::string& weight) {
  return "base_model.model." + weight.substr(0, weight.size() - std::string(".weight").size()) + ".ln_tuning_layers.weight";
}

TEST(ExampleLnTuningTuner, TrainsOnlyTheNormsThroughSftAndItsPeftAdapterReloads) {
  load_examples();
  TempDir dir("example-ln-tuning");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", {{{"query", "2 + 2?"}, {"response", "4"}}, {{"query", "3 + 3?"}, {"response", "6"}}});
  auto base = load_pretrained(dir / "model");
  base->eval();
  const auto base_state = base->state();
  std::vector<std::string> norms;  // input_layernorm and post_attention_layernorm of each layer, model.norm
  int64_t norm_parameters = 0;
  for (const auto& [name, tensor] : base_state) {
    if (!name.ends_with("norm.weight")) continue;
    norms.push_back(name);
    norm_parameters += tensor.numel();
  }
  ASSERT_EQ(norms.size(), static_cast<std::size_t>(2 * base->config().num_hidden_layers + 1));

  const auto ln = sft_three_steps(dir, "ln_tuning", {"--external_plugins", (kExamples / "tuner/ln_tuning.cpp").string(),
                                                     "--train_type", "ln_tuning_example"});
  ASSERT_EQ(ln.result.exit_code, 0) << ln.result.err;
  ASSERT_FALSE(ln.checkpoint.empty()) << "no checkpoint-3";
  EXPECT_NE(ln.result.err.find("trainable parameters: " + std::to_string(norm_parameters) + " of "), std::string::npos)
      << "only the norm weights train:\n" << ln.result.err;

  // The same training by the built-in freeze tuner, told to train exactly the norm weights: it saves
  // the whole trained model, the reference for what the LN-tuning adapter must reproduce.
  std::vector<std::string> freeze = {"--train_type", "freeze", "--trainable_parameters"};
  freeze.insert(freeze.end(), norms.begin(), norms.end());
  const auto reference = sft_three_steps(dir, "freeze", freeze);
  ASSERT_EQ(reference.result.exit_code, 0) << reference.result.err;
  ASSERT_FALSE(reference.checkpoint.empty()) << "no checkpoint-3 of the freeze run";
  auto trained = load_pretrained(reference.checkpoint);
  trained->eval();
  const auto trained_state = trained->state();
  for (const auto& [name, tensor] : base_state) {  // only the norms changed
    const bool changed = !torch::equal(tensor, trained_state.at(name));
    EXPECT_EQ(changed, name.ends_with("norm.weight")) << name;
  }

  // PEFT's LN_TUNING layout: the config, and one tensor per norm named after PEFT's trained copy of
  // the module (`ln_tuning_layers`, the adapter name left out), holding the trained weight.
  const auto config = json::parse(read_file(ln.checkpoint / "adapter_config.json"));
  EXPECT_EQ(config.at("peft_type"), "LN_TUNING");
  EXPECT_EQ(config.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(config.at("target_modules"), json::array({"input_layernorm", "norm", "post_attention_layernorm"}));
  EXPECT_EQ(config.at("base_model_name_or_path"), (dir / "model").string());
  const auto tensors = load_tensors(ln.checkpoint / "adapter_model.safetensors");
  std::set<std::string> keys, expected;
  for (const auto& [key, tensor] : tensors) keys.insert(key);
  for (const auto& name : norms) expected.insert(ln_tuning_key(name));
  EXPECT_TRUE(expected.count("base_model.model.model.layers.0.input_layernorm.ln_tuning_layers.weight"));
  EXPECT_TRUE(expected.count("base_model.model.model.norm.ln_tuning_layers.weight"));
  ASSERT_EQ(keys, expected);
  for (const auto& name : norms)
    EXPECT_TRUE(torch::allclose(tensors.at(ln_tuning_key(name)), trained_state.at(name), 1e-5, 1e-6)) << name;

  // Loaded by the example onto the base model, the adapter gives the trained model's logits.
  auto reloaded = with_adapter(dir / "model", "ln_tuning_example", ln.checkpoint);
  for (const auto& parameter : reloaded->parameters()) EXPECT_FALSE(parameter.requires_grad());
  const auto logits = logits_of(reloaded);
  EXPECT_TRUE(torch::allclose(logits, logits_of(trained), 1e-5, 1e-5));
  EXPECT_GT((logits - logits_of(base)).abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace lathe::testing
