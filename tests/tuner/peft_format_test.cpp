// The PEFT adapter folder: file names, tensor keys and shapes (read from the raw safetensors
// header), adapter_config.json, round trips and errors for bad folders.
#include <nlohmann/json.hpp>

#include <fstream>

#include "lathe/common/files.h"
#include "lathe/model/weights.h"
#include "tuner_test_support.h"

namespace lathe::testing {
namespace {

using nlohmann::json;

// The header of a safetensors file, parsed by hand: an 8-byte little-endian length, then JSON.
json safetensors_header(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t length = 0;
  in.read(reinterpret_cast<char*>(&length), 8);
  std::string text(length, '\0');
  in.read(text.data(), static_cast<std::streamsize>(length));
  return json::parse(text);
}

std::vector<std::string> directory_listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

LoraConfig qv_config(bool dora) {
  LoraConfig config;
  config.r = 4;
  config.lora_alpha = 16;
  config.lora_dropout = 0.1;
  config.target_modules = {"v_proj", "q_proj"};
  config.use_dora = dora;
  return config;
}

std::vector<std::string> sorted_names(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  return names;
}

class PeftFormat : public ScratchDir {};

TEST_F(PeftFormat, FolderHoldsPeftFileNamesKeysAndShapes) {
  auto model = tiny_model();
  apply_lora(model, qv_config(true), 1);
  save_adapter(model, dir() / "adapter", qv_config(true), "models/tiny");
  EXPECT_EQ(directory_listing(dir() / "adapter"),
            (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"}));
  EXPECT_EQ(directory_listing(dir()), std::vector<std::string>{"adapter"});  // no temporary left behind

  json expected = json::object();
  for (int layer = 0; layer < 2; ++layer) {
    // q_proj: 16 -> 4 heads * 4; v_proj: 16 -> 2 kv heads * 4.
    for (const auto& [name, out] : std::vector<std::pair<std::string, int64_t>>{{"q_proj", 16}, {"v_proj", 8}}) {
      const auto prefix = fmt::format("base_model.model.model.layers.{}.self_attn.{}", layer, name);
      expected[prefix + ".lora_A.weight"] = {4, 16};
      expected[prefix + ".lora_B.weight"] = {out, 4};
      expected[prefix + ".lora_magnitude_vector"] = {out};
    }
  }
  const auto header = safetensors_header(dir() / "adapter/adapter_model.safetensors");
  json actual = json::object();
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      EXPECT_EQ(value, (json{{"format", "pt"}}));
      continue;
    }
    actual[key] = value.at("shape");
    EXPECT_EQ(value.at("dtype"), "F32") << key;
  }
  EXPECT_EQ(actual, expected);
}

TEST_F(PeftFormat, AdapterConfigHasPeftFields) {
  auto model = tiny_model();
  apply_lora(model, qv_config(false), 1);
  save_adapter(model, dir() / "adapter", qv_config(false), "models/tiny");
  const auto config = json::parse(read_file(dir() / "adapter/adapter_config.json"));
  const json expected = {
      {"alpha_pattern", json::object()}, {"auto_mapping", nullptr}, {"base_model_name_or_path", "models/tiny"},
      {"bias", "none"}, {"corda_config", nullptr}, {"eva_config", nullptr}, {"exclude_modules", nullptr},
      {"fan_in_fan_out", false}, {"inference_mode", true}, {"init_lora_weights", true},
      {"layer_replication", nullptr}, {"layers_pattern", nullptr}, {"layers_to_transform", nullptr},
      {"loftq_config", json::object()}, {"lora_alpha", 16}, {"lora_bias", false}, {"lora_dropout", 0.1},
      {"megatron_config", nullptr}, {"megatron_core", "megatron.core"}, {"modules_to_save", nullptr},
      {"peft_type", "LORA"}, {"r", 4}, {"rank_pattern", json::object()}, {"revision", nullptr},
      {"target_modules", {"q_proj", "v_proj"}}, {"task_type", "CAUSAL_LM"}, {"trainable_token_indices", nullptr},
      {"use_dora", false}, {"use_rslora", false}};
  EXPECT_EQ(config, expected) << config.dump(2);
  EXPECT_TRUE(config["lora_alpha"].is_number_integer());  // 16, as PEFT writes it, not 16.0
}

TEST_F(PeftFormat, TargetModulesRecordWhatWasTargeted) {
  {
    auto model = tiny_model();
    auto config = qv_config(false);
    config.target_modules = {"all-linear"};
    config.init = "gaussian";
    config.use_rslora = true;
    apply_lora(model, config, 1);
    save_adapter(model, dir() / "all", config, "");
    const auto written = json::parse(read_file(dir() / "all/adapter_config.json"));
    EXPECT_EQ(written["target_modules"],
              json({"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));
    EXPECT_EQ(written["init_lora_weights"], "gaussian");
    EXPECT_EQ(written["use_rslora"], true);
    EXPECT_TRUE(written["base_model_name_or_path"].is_null());
  }
  {
    auto model = tiny_model();
    auto config = qv_config(false);
    config.target_regex = R"(.*\.mlp\.(up|down)_proj)";
    apply_lora(model, config, 1);
    save_adapter(model, dir() / "regex", config, "m");
    EXPECT_EQ(json::parse(read_file(dir() / "regex/adapter_config.json"))["target_modules"], *config.target_regex);
    auto reloaded = tiny_model();
    EXPECT_EQ(load_adapter(reloaded, dir() / "regex", false).modules, lora_modules(model));
  }
}

TEST_F(PeftFormat, SaveThenLoadIntoAFreshModelGivesIdenticalLogits) {
  for (const bool dora : {false, true}) {
    auto model = tiny_model();
    apply_lora(model, qv_config(dora), 1);
    randomise_adapters(model, 5);
    const auto expected = logits_of(model);
    const auto folder = dir() / (dora ? "dora" : "lora");
    save_adapter(model, folder, qv_config(dora), "models/tiny");

    auto fresh = tiny_model();
    const auto loaded = load_adapter(fresh, folder, /*trainable=*/false);
    EXPECT_TRUE(torch::equal(logits_of(fresh), expected)) << "dora " << dora;
    EXPECT_EQ(loaded.modules, lora_modules(model));
    EXPECT_EQ(loaded.base_model_name_or_path, "models/tiny");
    EXPECT_EQ(loaded.config.r, 4);
    EXPECT_EQ(loaded.config.lora_alpha, 16);
    EXPECT_EQ(loaded.config.use_dora, dora);
    EXPECT_EQ(sorted_names(loaded.config.target_modules), (std::vector<std::string>{"q_proj", "v_proj"}));
    for (const auto& item : fresh->named_parameters()) EXPECT_FALSE(item.value().requires_grad()) << item.key();

    auto trainable = tiny_model();
    load_adapter(trainable, folder, /*trainable=*/true);
    for (const auto& [name, parameter] : lora_parameters(trainable)) EXPECT_TRUE(parameter.requires_grad()) << name;
  }
}

TEST_F(PeftFormat, SavingReplacesAnOlderFolderAtomically) {
  auto model = tiny_model();
  apply_lora(model, qv_config(false), 1);
  fs::create_directories(dir() / "adapter");
  std::ofstream(dir() / "adapter/stale.txt") << "old";
  save_adapter(model, dir() / "adapter", qv_config(false), "");
  EXPECT_EQ(directory_listing(dir() / "adapter"),
            (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"}));
}

// --- Bad folders ------------------------------------------------------------------------------

class BadAdapter : public ScratchDir {
 protected:
  void SetUp() override {
    ScratchDir::SetUp();
    auto model = tiny_model();
    apply_lora(model, qv_config(false), 1);
    save_adapter(model, folder(), qv_config(false), "");
    tensors_ = load_tensors(weights());
    for (auto& [key, tensor] : tensors_) tensor = tensor.clone();  // detach from the mapped file
  }
  fs::path folder() const { return dir() / "adapter"; }
  fs::path config_file() const { return folder() / "adapter_config.json"; }
  fs::path weights() const { return folder() / "adapter_model.safetensors"; }
  json config() const { return json::parse(read_file(config_file())); }
  void write_config(const json& value) const { write_file_atomic(config_file(), value.dump()); }

  // Loads into a fresh model and returns the error, checking that the model was left untouched.
  std::string load_error() const {
    auto model = tiny_model();
    const auto message = error_of([&] { load_adapter(model, folder(), false); });
    EXPECT_TRUE(lora_modules(model).empty()) << "a failed load must not leave adapters behind";
    return message;
  }
  std::map<std::string, torch::Tensor> tensors_;
};

#define EXPECT_CONTAINS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

TEST_F(BadAdapter, MissingFolderOrFiles) {
  auto model = tiny_model();
  EXPECT_CONTAINS(error_of([&] { load_adapter(model, dir() / "nowhere", false); }), "nowhere: adapter folder not found");
  fs::remove(weights());
  EXPECT_CONTAINS(load_error(), "adapter_model.safetensors: missing");
  std::ofstream(folder() / "adapter_model.bin") << "pickle";
  EXPECT_CONTAINS(load_error(), "adapter_model.bin");
  fs::remove(config_file());
  EXPECT_CONTAINS(load_error(), "adapter_config.json: missing");
}

TEST_F(BadAdapter, InvalidJson) {
  write_file_atomic(config_file(), "{\"peft_type\": ");
  EXPECT_CONTAINS(load_error(), "adapter_config.json: invalid JSON");
}

TEST_F(BadAdapter, UnknownPeftType) {
  auto value = config();
  value["peft_type"] = "IA3";
  write_config(value);
  EXPECT_CONTAINS(load_error(), "adapter_config.json: peft_type is \"IA3\"");
}

TEST_F(BadAdapter, IllTypedOrUnsupportedFields) {
  auto value = config();
  value["r"] = "four";
  write_config(value);
  EXPECT_CONTAINS(load_error(), "adapter_config.json: field r must be a positive integer, got \"four\"");
  value = config();
  value["r"] = 4;
  value["rank_pattern"] = {{"q_proj", 8}};
  write_config(value);
  EXPECT_CONTAINS(load_error(), "adapter_config.json: rank_pattern = {\"q_proj\":8} is not supported");
  value["rank_pattern"] = json::object();
  value["bias"] = "all";
  write_config(value);
  EXPECT_CONTAINS(load_error(), "adapter_config.json: bias = \"all\" is not supported");
  value["bias"] = "none";
  value["exclude_modules"] = {"layers.0.self_attn.q_proj"};
  write_config(value);
  EXPECT_CONTAINS(load_error(), "adapter_config.json: exclude_modules = [\"layers.0.self_attn.q_proj\"] is not supported");
}

TEST_F(BadAdapter, TargetsMatchingNothing) {
  auto value = config();
  value["target_modules"] = {"query_key_value"};
  write_config(value);
  EXPECT_CONTAINS(load_error(), "adapter_config.json: target_modules [query_key_value] matched no Linear layer");
}

TEST_F(BadAdapter, MissingTensor) {
  tensors_.erase("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
  save_tensors(weights(), tensors_);
  EXPECT_CONTAINS(load_error(), "adapter_model.safetensors: missing tensor "
                                "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight (expected shape [8, 4])");
}

TEST_F(BadAdapter, WrongShape) {
  tensors_["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch::zeros({4, 15});
  save_tensors(weights(), tensors_);
  EXPECT_CONTAINS(load_error(), "adapter_model.safetensors: tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "
                                "has shape [4, 15], expected [4, 16]");
  // A rank that disagrees with adapter_config.json's r.
  auto value = config();
  value["r"] = 2;
  write_config(value);
  EXPECT_CONTAINS(load_error(), "expected [2, 16]");
}

TEST_F(BadAdapter, TensorForNoAdaptedLayer) {
  tensors_["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"] = torch::zeros({4, 16});
  save_tensors(weights(), tensors_);
  EXPECT_CONTAINS(load_error(), "adapter_model.safetensors: tensor base_model.model.model.layers.0.mlp.up_proj.lora_A.weight "
                                "belongs to no adapted layer");
}

TEST_F(BadAdapter, DoraConfigWithoutMagnitudes) {
  auto value = config();
  value["use_dora"] = true;
  write_config(value);
  EXPECT_CONTAINS(load_error(), "missing tensor base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector");
}

}  // namespace
}  // namespace lathe::testing
