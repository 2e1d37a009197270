// config.json as transformers writes it for each supported family.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lathe/common/error.h"
#include "lathe/model/model.h"

namespace lathe {
namespace {

using json = nlohmann::json;

// Abridged from the config.json files of the published checkpoints.
const json kLlama31 = json::parse(R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256})");

const json kQwen25 = json::parse(R"({
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})");

const json kQwen3 = json::parse(R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "intermediate_size": 3072, "max_position_embeddings": 40960, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 151936})");

const json kMistral = json::parse(R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "vocab_size": 32768})");

std::string config_error(const json& config) {
  try {
    ModelConfig::from_json(config, "dir/config.json");
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(ModelConfig, Llama31) {
  const auto c = ModelConfig::from_json(kLlama31, "config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(ModelConfig, Qwen2AlwaysHasQkvBias) {
  const auto c = ModelConfig::from_json(kQwen25, "config.json");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{151645}));
  EXPECT_EQ(c.rope_scaling.type, "default");
}

TEST(ModelConfig, Qwen3HeadDimAndQkNorm) {
  const auto c = ModelConfig::from_json(kQwen3, "config.json");
  EXPECT_EQ(c.head_dim, 128);  // not 1024 / 16
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.rope_theta, 1000000.0);
}

TEST(ModelConfig, MistralDefaultsKvHeadsToAttentionHeads) {
  const auto c = ModelConfig::from_json(kMistral, "config.json");
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.pad_token_id.has_value());
}

TEST(ModelConfig, LinearScalingAndOldTypeKey) {
  auto config = kMistral;
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const auto c = ModelConfig::from_json(config, "config.json");
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
}

// transformers 5 moved rope_theta and the scaling into rope_parameters and renamed torch_dtype.
TEST(ModelConfig, RopeParametersAndDtypeOfNewerTransformers) {
  auto config = kLlama31;
  config.erase("rope_scaling");
  config.erase("rope_theta");
  config.erase("torch_dtype");
  config["dtype"] = "float32";
  config["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 250000.0}};
  const auto c = ModelConfig::from_json(config, "config.json");
  EXPECT_EQ(c.rope_theta, 250000.0);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_EQ(c.torch_dtype, "float32");
}

TEST(ModelConfig, ToJsonRoundTrips) {
  for (const auto& source : {kLlama31, kQwen25, kQwen3, kMistral}) {
    const auto c = ModelConfig::from_json(source, "config.json");
    const auto written = c.to_json();
    const auto again = ModelConfig::from_json(written, "written");
    EXPECT_EQ(again.to_json(), written);
    EXPECT_EQ(written["architectures"], source["architectures"]);
    EXPECT_EQ(written["eos_token_id"], source["eos_token_id"]);
    EXPECT_EQ(written["vocab_size"], source["vocab_size"]);
    EXPECT_EQ(again.rope_scaling.type, c.rope_scaling.type);
    EXPECT_EQ(again.rope_scaling.original_max_position_embeddings, c.rope_scaling.original_max_position_embeddings);
  }
}

// transformers' sequence classifiers: the label count from id2label (as it saves it), else
// num_labels, else its default of 2; written back with the family's classifier class.
TEST(ModelConfig, SequenceClassifiersReadTheirLabels) {
  auto config = kQwen25;
  config["architectures"] = {"Qwen2ForSequenceClassification"};
  config["id2label"] = {{"0", "LABEL_0"}};
  auto c = ModelConfig::from_json(config, "config.json");
  EXPECT_EQ(c.num_labels, 1);
  auto written = c.to_json();
  EXPECT_EQ(written["architectures"], config["architectures"]);
  EXPECT_EQ(written["id2label"], config["id2label"]);
  EXPECT_EQ(written["label2id"], json({{"LABEL_0", 0}}));
  EXPECT_EQ(ModelConfig::from_json(written, "written").to_json(), written);
  c.architectures.clear();
  EXPECT_EQ(c.to_json()["architectures"], config["architectures"]) << "a classifier with no class names its family's";

  config.erase("id2label");
  config["num_labels"] = 3;
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").num_labels, 3);
  config.erase("num_labels");
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").num_labels, 2);
  EXPECT_FALSE(ModelConfig::from_json(kQwen25, "config.json").num_labels) << "a causal LM has no labels";
  auto causal = kQwen25;
  causal["id2label"] = {{"0", "LABEL_0"}};
  EXPECT_FALSE(ModelConfig::from_json(causal, "config.json").num_labels) << "only a classifier class reads them";
  config["id2label"] = json::array();
  EXPECT_NE(config_error(config).find("\"id2label\""), std::string::npos) << config_error(config);
}

TEST(ModelConfig, UnsupportedModelTypeListsSupported) {
  auto config = kLlama31;
  config["model_type"] = "gemma";
  config.erase("architectures");
  const auto message = config_error(config);
  EXPECT_NE(message.find("dir/config.json: unsupported model_type \"gemma\""), std::string::npos) << message;
  for (const auto* name : {"llama", "mistral", "qwen2", "qwen3"}) EXPECT_NE(message.find(name), std::string::npos);
}

TEST(ModelConfig, UnsupportedArchitecture) {
  auto config = kQwen25;
  config["architectures"] = {"Qwen2VLForConditionalGeneration"};
  const auto message = config_error(config);
  EXPECT_NE(message.find("dir/config.json: unsupported architecture \"Qwen2VLForConditionalGeneration\""),
            std::string::npos) << message;
  EXPECT_NE(message.find("Qwen2ForCausalLM"), std::string::npos) << message;
}

TEST(ModelConfig, MissingOrWrongFieldsAreNamed) {
  for (const auto* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    auto config = kQwen3;
    config.erase(field);
    EXPECT_EQ(config_error(config), std::string("dir/config.json: missing required field \"") + field + "\"");
  }
  auto config = kQwen3;
  config["hidden_size"] = "big";
  EXPECT_NE(config_error(config).find("\"hidden_size\""), std::string::npos);
  config = kLlama31;
  config["rope_scaling"]["rope_type"] = "ntk-by-parts";
  EXPECT_NE(config_error(config).find("rope_scaling.rope_type \"ntk-by-parts\""), std::string::npos) << config_error(config);
  config = kLlama31;
  config["rope_scaling"] = {{"rope_type", "longrope"}, {"short_factor", {1.0, 2.0}}, {"long_factor", {1.0, 2.0}}};
  EXPECT_NE(config_error(config).find("rope_scaling.short_factor"), std::string::npos) << config_error(config);
  config = kQwen3;
  config["use_sliding_window"] = true;
  config["sliding_window"] = 8;
  config["layer_types"] = {"full_attention"};
  EXPECT_NE(config_error(config).find("layer_types"), std::string::npos) << config_error(config);
  config = kLlama31;
  config["rope_scaling"].erase("low_freq_factor");
  EXPECT_NE(config_error(config).find("rope_scaling.low_freq_factor"), std::string::npos) << config_error(config);
  config = kLlama31;
  config["num_key_value_heads"] = 5;
  EXPECT_NE(config_error(config).find("num_key_value_heads"), std::string::npos);
  config = kLlama31;
  config["hidden_act"] = "gelu";
  EXPECT_NE(config_error(config).find("hidden_act"), std::string::npos);
}

}  // namespace
}  // namespace lathe
