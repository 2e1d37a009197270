// freeze, dummy and ia3 tuners on a tiny transformer: which parameters train, that an untrained
// tuner leaves the logits as they were, and ia3's PEFT files with a save -> load round trip; a
// classifier's score head beside LoRA and IA3 adapters (PEFT's modules_to_save).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../support/scratch_dir.h"
#include "lathe/common/error.h"
#include "lathe/common/files.h"
#include "lathe/plugin/tuner.h"
#include "lathe/model/weights.h"
#include "lathe/tuner/lora.h"

#include "support/tiny_config.h"

namespace lathe {
namespace {

CausalLM tiny_model() {
  torch::manual_seed(7);
  return CausalLM(testing::tiny_config({.intermediate = 24, .layers = 2}));
}

torch::Tensor logits_of(CausalLM& model) {
  torch::NoGradGuard no_grad;
  const auto input = torch::tensor({{3, 1, 4, 1, 5, 9, 2, 6}});
  return model->logits(model->forward(ForwardInputs{input}));
}

std::vector<std::string> trainable_names(CausalLM& model) {
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters())
    if (item.value().requires_grad()) names.push_back(item.key());
  return names;
}

std::shared_ptr<Tuner> prepared(const std::string& name, const Arguments& arguments, CausalLM& model) {
  auto tuner = tuner_registry().create(name, arguments);
  tuner->prepare_model(arguments, model);
  return tuner;
}

TEST(FreezeTuner, FreezeParametersPrefixesStayFrozen) {
  auto model = tiny_model();
  Arguments arguments;
  arguments.freeze_parameters = {"model.embed_tokens", "model.layers.0."};
  auto tuner = prepared("freeze", arguments, model);
  EXPECT_TRUE(tuner->saves_full_model());
  EXPECT_FALSE(trainable_names(model).empty());
  for (const auto& item : model->named_parameters()) {
    const bool frozen = item.key().starts_with("model.embed_tokens") || item.key().starts_with("model.layers.0.");
    EXPECT_EQ(item.value().requires_grad(), !frozen) << item.key();
  }
}

TEST(FreezeTuner, TrainableParametersAloneTrain) {
  auto model = tiny_model();
  Arguments arguments;
  arguments.trainable_parameters = {"model.layers.1.mlp", "model.norm"};
  prepared("freeze", arguments, model);
  const auto names = trainable_names(model);
  // layer 1's MLP has gate, up and down projections (no biases), plus the final norm's weight.
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                                             "model.layers.1.mlp.down_proj.weight", "model.norm.weight"}));
  arguments.trainable_parameters = {"model.layers.9"};
  EXPECT_THROW(prepared("freeze", arguments, model), Error);
}

TEST(DummyTuner, EverythingTrainsAndNothingChanges) {
  auto model = tiny_model();
  const auto before = logits_of(model);
  for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
  prepared("dummy", Arguments{}, model);
  EXPECT_EQ(trainable_names(model).size(), model->named_parameters().size());
  EXPECT_TRUE(torch::equal(logits_of(model), before));
}

class Ia3Tuner : public testing::ScratchDir {};

TEST_F(Ia3Tuner, StartsAsIdentityAndSavesPeftFiles) {
  auto model = tiny_model();
  const auto before = logits_of(model);
  Arguments arguments;
  arguments.model = "tiny";
  auto tuner = prepared("ia3", arguments, model);
  EXPECT_TRUE(torch::allclose(logits_of(model), before, 1e-6, 1e-6));
  // Only the vectors train: k, v and down_proj of each of the 2 layers.
  const auto names = trainable_names(model);
  ASSERT_EQ(names.size(), 6u);
  EXPECT_EQ(names[0], "model.layers.0.self_attn.k_proj.ia3.ia3_l");

  tuner->save_pretrained(model, dir(), arguments);
  const auto config = nlohmann::json::parse(read_file(dir() / "adapter_config.json"));
  EXPECT_EQ(config.at("peft_type"), "IA3");
  EXPECT_EQ(config.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(config.at("target_modules"), (nlohmann::json{"k_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(config.at("feedforward_modules"), (nlohmann::json{"down_proj"}));
  const auto tensors = load_tensors(dir() / "adapter_model.safetensors");
  ASSERT_EQ(tensors.size(), 6u);
  // k_proj: out = kv_heads * head_dim = 8; v_proj likewise; down_proj: in = intermediate 24.
  EXPECT_EQ(tensors.at("base_model.model.model.layers.0.self_attn.k_proj.ia3_l").sizes(), (torch::IntArrayRef{8, 1}));
  EXPECT_EQ(tensors.at("base_model.model.model.layers.1.self_attn.v_proj.ia3_l").sizes(), (torch::IntArrayRef{8, 1}));
  EXPECT_EQ(tensors.at("base_model.model.model.layers.1.mlp.down_proj.ia3_l").sizes(), (torch::IntArrayRef{1, 24}));
}

TEST_F(Ia3Tuner, ScalesOutputsOrInputsAndRoundTrips) {
  auto model = tiny_model();
  const auto base = logits_of(model);
  Arguments arguments;
  auto tuner = prepared("ia3", arguments, model);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters())
      if (item.key().ends_with("ia3_l")) item.value().uniform_(0.5, 1.5);
  }
  const auto trained = logits_of(model);
  EXPECT_FALSE(torch::allclose(trained, base, 1e-4, 1e-4));
  // The k_proj vector scales that layer's output row by row.
  {
    torch::NoGradGuard no_grad;
    auto modules = model->named_modules("", false);
    auto k_proj = std::dynamic_pointer_cast<LinearImpl>(modules["model.layers.0.self_attn.k_proj"]);
    auto down = std::dynamic_pointer_cast<LinearImpl>(modules["model.layers.0.mlp.down_proj"]);
    const auto k_vector = model->named_parameters()["model.layers.0.self_attn.k_proj.ia3.ia3_l"];
    const auto down_vector = model->named_parameters()["model.layers.0.mlp.down_proj.ia3.ia3_l"];
    const auto x16 = torch::randn({2, 16}), x24 = torch::randn({2, 24});
    EXPECT_TRUE(torch::allclose(k_proj->forward(x16), k_proj->base_forward(x16) * k_vector.flatten(), 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(down->forward(x24), down->base_forward(x24 * down_vector.flatten()), 1e-5, 1e-6));
  }
  tuner->save_pretrained(model, dir(), arguments);

  auto fresh = tiny_model();
  tuner_registry().create("ia3", arguments)->from_pretrained(fresh, dir(), false);
  EXPECT_TRUE(torch::allclose(logits_of(fresh), trained, 1e-6, 1e-6));
  EXPECT_TRUE(trainable_names(fresh).empty());
}

CausalLM tiny_classifier() {
  auto config = testing::tiny_config({.intermediate = 24, .layers = 2});
  config.num_labels = 1;
  torch::manual_seed(7);
  return CausalLM(config);
}

class ClassifierAdapters : public testing::ScratchDir {};

// The score head starts random, so it trains whole beside the adapters (all-linear leaves it out),
// is saved under PEFT's key with task_type SEQ_CLS, and comes back with them; a causal LM refuses
// such an adapter.
TEST_F(ClassifierAdapters, TheScoreHeadTrainsIsSavedAndComesBack) {
  for (const std::string kind : {"lora", "ia3"}) {
    SCOPED_TRACE(kind);
    auto model = tiny_classifier();
    Arguments arguments;
    arguments.lora_rank = 2;
    arguments.lora_dropout = 0;  // the logits compared are the training-mode ones
    auto tuner = prepared(kind, arguments, model);
    const auto names = trainable_names(model);
    EXPECT_NE(std::find(names.begin(), names.end(), "score.weight"), names.end());
    for (const auto& name : names) EXPECT_FALSE(name.starts_with("score.") && name != "score.weight") << name;
    {
      torch::NoGradGuard no_grad;
      for (auto& item : model->named_parameters())
        if (item.value().requires_grad()) item.value().uniform_(0.5, 1.5);
    }
    const auto trained = logits_of(model);
    ASSERT_EQ(trained.size(-1), 1);
    const auto folder = dir() / kind;
    tuner->save_pretrained(model, folder, arguments);
    const auto config = nlohmann::json::parse(read_file(folder / "adapter_config.json"));
    EXPECT_EQ(config.at("task_type"), "SEQ_CLS");
    EXPECT_EQ(config.at("modules_to_save"), (nlohmann::json{"score"}));
    EXPECT_TRUE(load_tensors(folder / "adapter_model.safetensors").count("base_model.model.score.weight"));
    EXPECT_EQ(adapter_classifier_labels(folder), 1);

    auto fresh = tiny_classifier();
    load_adapter_folder(fresh, folder, arguments, /*trainable=*/true);
    EXPECT_TRUE(torch::allclose(logits_of(fresh), trained, 1e-6, 1e-6));
    EXPECT_TRUE(fresh->output_weight().requires_grad());
    auto causal = tiny_model();
    try {
      load_adapter_folder(causal, folder, arguments, false);
      ADD_FAILURE() << "a classifier's adapter loaded onto a causal LM";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("SEQ_CLS"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace lathe
