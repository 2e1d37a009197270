// apply_lora / merge_lora on a tiny transformer: target selection, initialisation, freezing,
// gradients through the whole model, merging.
#include "tuner_test_support.h"

namespace lathe::testing {
namespace {

std::vector<std::string> layer_paths(const std::vector<std::string>& names) {
  std::vector<std::string> paths;
  for (int layer = 0; layer < 2; ++layer)
    for (const auto& name : names) paths.push_back(fmt::format("model.layers.{}.{}", layer, name));
  return paths;
}

const std::vector<std::string> kAllLayerLinears{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                "mlp.down_proj"};

std::vector<std::string> sorted(std::vector<std::string> items) {
  std::sort(items.begin(), items.end());
  return items;
}

LoraConfig config_for(std::vector<std::string> targets) {
  LoraConfig config;
  config.r = 2;
  config.lora_alpha = 4;
  config.target_modules = std::move(targets);
  return config;
}

TEST(LoraTargets, SuffixListMatchesWholeNameComponents) {
  auto model = tiny_model();
  const auto paths = apply_lora(model, config_for({"q_proj", "mlp.down_proj"}), 1);
  EXPECT_EQ(sorted(paths), sorted(layer_paths({"self_attn.q_proj", "mlp.down_proj"})));
  EXPECT_EQ(lora_modules(model), paths);
}

TEST(LoraTargets, AllLinearTakesEveryLinearButTheOutputHead) {
  auto model = tiny_model();
  const auto paths = apply_lora(model, config_for({"all-linear"}), 1);
  EXPECT_EQ(sorted(paths), sorted(layer_paths(kAllLayerLinears)));
  // The head can still be asked for by name.
  auto other = tiny_model();
  EXPECT_EQ(apply_lora(other, config_for({"lm_head"}), 1), std::vector<std::string>{"lm_head"});
}

TEST(LoraTargets, RegexMustMatchTheWholePath) {
  auto model = tiny_model();
  auto config = config_for({});
  config.target_regex = R"(model\.layers\.1\.self_attn\.(q|v)_proj)";
  EXPECT_EQ(apply_lora(model, config, 1),
            (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}));
  // A partial match is no match (PEFT uses re.fullmatch).
  auto fresh = tiny_model();
  config.target_regex = "q_proj";
  const auto message = error_of([&] { apply_lora(fresh, config, 1); });
  EXPECT_NE(message.find("\"q_proj\""), std::string::npos) << message;
  EXPECT_NE(message.find("available Linear modules: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"),
            std::string::npos) << message;
}

TEST(LoraTargets, NothingMatchingIsAnErrorNamingTheRequest) {
  auto model = tiny_model();
  const auto message = error_of([&] { apply_lora(model, config_for({"query", "value"}), 1); });
  EXPECT_NE(message.find("target_modules [query, value] matched no Linear layer"), std::string::npos) << message;
  EXPECT_NE(message.find("model.layers.0.self_attn.q_proj"), std::string::npos) << message;
  auto config = config_for({});
  config.target_regex = "(unclosed";
  EXPECT_NE(error_of([&] { apply_lora(model, config, 1); }).find("invalid regular expression"), std::string::npos);
  EXPECT_TRUE(lora_modules(model).empty());
}

TEST(LoraTargets, AdaptingTwiceIsAnError) {
  auto model = tiny_model();
  apply_lora(model, config_for({"q_proj"}), 1);
  EXPECT_NE(error_of([&] { apply_lora(model, config_for({"q_proj"}), 1); }).find("already has an adapter"),
            std::string::npos);
}

TEST(LoraModel, FreezesTheBaseAndTrainsOnlyAdapters) {
  auto model = tiny_model();
  auto config = config_for({"all-linear"});
  config.use_dora = true;
  apply_lora(model, config, 1);
  size_t trainable = 0;
  for (const auto& item : model->named_parameters()) {
    const bool adapter = item.key().find(".lora.lora_") != std::string::npos;
    EXPECT_EQ(item.value().requires_grad(), adapter) << item.key();
    trainable += adapter;
  }
  EXPECT_EQ(trainable, 14u * 3);
  const auto parameters = lora_parameters(model);
  EXPECT_EQ(parameters.size(), 14u * 3);
  const auto& [name, tensor] = parameters.front();
  EXPECT_EQ(name, "model.layers.0.self_attn.q_proj.lora.lora_A");
  EXPECT_EQ(tensor.sizes(), (std::vector<int64_t>{2, 16}));
}

TEST(LoraModel, DefaultAndGaussianInitLeaveLogitsUnchanged) {
  for (const std::string init : {"default", "gaussian"}) {
    auto model = tiny_model();
    const auto before = logits_of(model);
    auto config = config_for({"all-linear"});
    config.init = init;
    apply_lora(model, config, 7);
    EXPECT_TRUE(torch::equal(logits_of(model), before)) << init;
    for (const auto& [name, tensor] : lora_parameters(model)) {
      if (name.ends_with("lora_B")) EXPECT_EQ(tensor.abs().max().item<double>(), 0.0) << name;
      if (name.ends_with("lora_A")) EXPECT_GT(tensor.abs().max().item<double>(), 0.0) << name;
    }
  }
}

TEST(LoraModel, DefaultInitIsKaimingUniformAndGaussianHasStdOneOverR) {
  ModelConfig config = tuner_test_config();
  config.hidden_size = 256;  // enough samples for the statistics
  config.head_dim = 64;
  torch::manual_seed(0);
  CausalLM model(config);
  auto lora = config_for({"q_proj"});
  lora.r = 16;
  apply_lora(model, lora, 3);
  const auto a = lora_parameters(model).front().second;
  const double bound = 1.0 / std::sqrt(256.0);
  EXPECT_LE(a.abs().max().item<double>(), bound);
  EXPECT_NEAR(a.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound);  // uniform(-b, b)

  CausalLM gaussian_model(config);
  lora.init = "gaussian";
  apply_lora(gaussian_model, lora, 3);
  EXPECT_NEAR(lora_parameters(gaussian_model).front().second.std().item<double>(), 1.0 / 16, 0.05 / 16);
}

TEST(LoraModel, SeedMakesInitialisationReproducible) {
  auto first = tiny_model(), second = tiny_model(), third = tiny_model();
  apply_lora(first, config_for({"all-linear"}), 5);
  apply_lora(second, config_for({"all-linear"}), 5);
  apply_lora(third, config_for({"all-linear"}), 6);
  EXPECT_TRUE(torch::equal(lora_parameters(first)[0].second, lora_parameters(second)[0].second));
  EXPECT_FALSE(torch::equal(lora_parameters(first)[0].second, lora_parameters(third)[0].second));
}

TEST(LoraModel, DoraMagnitudeStartsAtRowNormsAndLeavesLogitsUnchanged) {
  auto model = tiny_model();
  const auto before = logits_of(model);
  auto config = config_for({"all-linear"});
  config.use_dora = true;
  apply_lora(model, config, 1);
  const auto parameters = model->named_parameters();
  EXPECT_TRUE(torch::allclose(parameters["model.layers.1.mlp.up_proj.lora.lora_magnitude_vector"],
                              parameters["model.layers.1.mlp.up_proj.weight"].norm(2, {1}), 1e-6, 0));
  EXPECT_TRUE(torch::allclose(logits_of(model), before, 1e-5, 1e-5));
}

TEST(LoraModel, PissaMovesTheTopSingularDirectionsIntoTheAdapterWithoutChangingOutput) {
  for (const bool dora : {false, true}) {
    auto model = tiny_model();
    const auto original = model->named_parameters()["model.layers.0.mlp.gate_proj.weight"].clone();
    const auto before = logits_of(model);
    auto config = config_for({"all-linear"});
    config.init = "pissa";
    config.use_dora = dora;
    apply_lora(model, config, 1);
    EXPECT_TRUE(torch::allclose(logits_of(model), before, 1e-5, 1e-5)) << "dora " << dora;

    const auto parameters = model->named_parameters();
    const auto residual = parameters["model.layers.0.mlp.gate_proj.weight"];
    const auto A = parameters["model.layers.0.mlp.gate_proj.lora.lora_A"];
    const auto B = parameters["model.layers.0.mlp.gate_proj.lora.lora_B"];
    // scaling * B A is the best rank-2 approximation of W: its singular values are W's top two.
    const auto top = torch::linalg_svdvals(original).slice(0, 0, 2);
    EXPECT_TRUE(torch::allclose(torch::linalg_svdvals(config.scaling() * B.mm(A)).slice(0, 0, 2), top, 1e-4, 1e-5));
    EXPECT_TRUE(torch::allclose(residual + config.scaling() * B.mm(A), original, 1e-5, 1e-6));
    // The residual keeps the remaining spectrum only.
    EXPECT_LT(torch::linalg_svdvals(residual)[0].item<double>(), top[1].item<double>() + 1e-5);
  }
}

// DoRA with the row norm held at a given value, written from the paper's formula
// m * (W + s B A) / ||W + s B A||: a reference for gradients that treat the norm as a constant.
struct FrozenNormDora : LinearAdapter {
  FrozenNormDora(std::shared_ptr<LoraAdapter> real, torch::Tensor norm) : real(std::move(real)), norm(std::move(norm)) {}
  torch::Tensor forward(LinearImpl& base, const torch::Tensor& x) override {
    const auto adapted = base.weight + real->scaling * real->lora_B.mm(real->lora_A);
    return torch::linear(x, adapted * (real->lora_magnitude_vector / norm).unsqueeze(1), base.bias);
  }
  std::shared_ptr<LoraAdapter> real;
  torch::Tensor norm;
};

// Finite differences through the whole model (float64 parameters; its norms compute in float32,
// hence the larger step and tolerance).
TEST(LoraModel, GradientsThroughTheModelMatchFiniteDifferences) {
  const std::vector<std::string> checked{"model.layers.0.self_attn.v_proj", "model.layers.1.mlp.down_proj"};
  for (const bool dora : {false, true}) {
    auto model = tiny_model(torch::kFloat64);
    auto config = config_for({"all-linear"});
    config.lora_dropout = 0;
    config.use_dora = dora;
    apply_lora(model, config, 2);
    randomise_adapters(model, 9);
    torch::manual_seed(4);
    const auto weights = torch::randn({2, 6, 40}, torch::kFloat64);
    const auto loss = (logits_of(model) * weights).sum();
    loss.backward();
    const auto f = [&] { return (logits_of(model) * weights).sum().item<double>(); };
    auto modules = model->named_modules();
    for (const auto& path : checked) {
      auto linear = std::dynamic_pointer_cast<LinearImpl>(modules[path]);
      auto adapter = std::dynamic_pointer_cast<LoraAdapter>(linear->adapter);
      // For DoRA the layer runs the frozen-norm reference while finite differences are taken.
      if (dora) linear->set_adapter("reference", std::make_shared<FrozenNormDora>(adapter, adapter->weight_norm(*linear)));
      for (const auto& item : adapter->named_parameters()) {
        auto parameter = item.value();
        const auto grad = parameter.grad().view({-1});
        for (int64_t i = 0; i < parameter.numel(); i += 3) {
          const double numeric = finite_difference(parameter, i, 1e-3, f);
          EXPECT_NEAR(grad[i].item<double>(), numeric, 1e-3 * (1 + std::abs(numeric)))
              << path << "." << item.key() << "[" << i << "] dora " << dora;
        }
      }
      if (dora) linear->set_adapter(kLoraAdapterName, adapter);
    }
  }
}

TEST(LoraMerge, MergedLogitsEqualBasePlusAdapter) {
  for (const bool dora : {false, true}) {
    for (const bool rslora : {false, true}) {
      auto model = tiny_model();
      {
        // Non-zero q/k/v biases: DoRA must not rescale them.
        torch::NoGradGuard no_grad;
        for (auto& item : model->named_parameters())
          if (item.key().ends_with(".bias")) item.value().normal_(0, 0.5);
      }
      auto config = config_for({"all-linear"});
      config.use_dora = dora;
      config.use_rslora = rslora;
      apply_lora(model, config, 1);
      randomise_adapters(model, 3);
      const auto adapted = logits_of(model);
      auto base = tiny_model();
      EXPECT_GT((adapted - logits_of(base)).abs().max().item<double>(), 1e-2);  // the adapter matters
      EXPECT_EQ(merge_lora(model).size(), 14u);
      EXPECT_TRUE(lora_modules(model).empty());
      EXPECT_EQ(model->named_parameters().size(), base->named_parameters().size());
      const auto merged = logits_of(model);
      EXPECT_TRUE(torch::allclose(merged, adapted, 1e-5, 1e-5))
          << "dora " << dora << " rslora " << rslora << ": max diff " << (merged - adapted).abs().max().item<double>();
    }
  }
}

TEST(LoraMerge, BFloat16BaseMergesInFloat32) {
  auto model = tiny_model(torch::kBFloat16);
  auto config = config_for({"all-linear"});
  config.use_dora = true;
  apply_lora(model, config, 1);
  randomise_adapters(model, 3);
  const auto adapted = logits_of(model).to(torch::kFloat32);
  merge_lora(model);
  EXPECT_EQ(model->named_parameters()["model.layers.0.mlp.up_proj.weight"].scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(logits_of(model).to(torch::kFloat32), adapted, 5e-2, 5e-2));
}

}  // namespace
}  // namespace lathe::testing
