// ModelConfig <-> config.json, with the field names and defaults transformers uses.
// No torch here on purpose: this unit compiles in a second.
#include <fmt/ranges.h>

#include <algorithm>
#include <set>
#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/model/model.h"

namespace lathe {
namespace {

using json = nlohmann::json;

struct SupportedFamily {
  const char* model_type;
  const char* architecture;  // the causal LM's class
  const char* classifier;    // the sequence classifier's class (num_labels set)
};
constexpr SupportedFamily kSupported[] = {
    {"llama", "LlamaForCausalLM", "LlamaForSequenceClassification"},
    {"mistral", "MistralForCausalLM", "MistralForSequenceClassification"},
    {"qwen2", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"},
    {"qwen3", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification"},
};

std::string supported_list() {
  std::vector<std::string> names;
  for (const auto& family : kSupported) names.push_back(fmt::format("{} ({})", family.model_type, family.architecture));
  return fmt::format("{}", fmt::join(names, ", "));
}

const SupportedFamily* family_of_type(const std::string& model_type) {
  for (const auto& family : kSupported)
    if (model_type == family.model_type) return &family;
  return nullptr;
}

const SupportedFamily* family_of_architecture(const std::string& architecture) {
  for (const auto& family : kSupported)
    if (architecture == family.architecture || architecture == family.classifier) return &family;
  return nullptr;
}

bool is_classifier_architecture(const std::string& architecture) {
  return architecture.ends_with("ForSequenceClassification");
}

// Reads json[key] as T, naming the file and field when it has the wrong type.
template <class T>
std::optional<T> optional_field(const json& object, const std::string& key, const std::string& source,
                                const std::string& prefix = "") {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail("{}: field \"{}{}\" has an unexpected value {}", source, prefix, key, it->dump());
  }
}

template <class T>
T required_field(const json& object, const std::string& key, const std::string& source) {
  auto value = optional_field<T>(object, key, source);
  if (!value) fail("{}: missing required field \"{}\"", source, key);
  return *value;
}

int64_t positive_field(const json& object, const std::string& key, const std::string& source) {
  const auto value = required_field<int64_t>(object, key, source);
  if (value <= 0) fail("{}: field \"{}\" must be positive, got {}", source, key, value);
  return value;
}

std::vector<int64_t> token_id_list(const json& object, const std::string& key, const std::string& source) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return {};
  if (it->is_number_integer()) return {it->get<int64_t>()};
  if (it->is_array() && std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_number_integer(); }))
    return it->get<std::vector<int64_t>>();
  fail("{}: field \"{}\" must be an integer or a list of integers, got {}", source, key, it->dump());
}

// Which family the file describes: model_type, checked against architectures when both exist.
const SupportedFamily& resolve_family(const json& object, const std::string& source,
                                      std::vector<std::string>& architectures) {
  if (auto listed = optional_field<std::vector<std::string>>(object, "architectures", source)) architectures = *listed;
  for (const auto& architecture : architectures)
    if (!family_of_architecture(architecture))
      fail("{}: unsupported architecture \"{}\"; supported: {}", source, architecture, supported_list());
  const auto model_type = optional_field<std::string>(object, "model_type", source);
  if (!model_type) {
    if (architectures.empty())
      fail("{}: missing required field \"model_type\" (and no \"architectures\"); supported: {}", source,
           supported_list());
    return *family_of_architecture(architectures.front());
  }
  const auto* family = family_of_type(*model_type);
  if (!family) fail("{}: unsupported model_type \"{}\"; supported: {}", source, *model_type, supported_list());
  return *family;
}

// rope_scaling (transformers <= 4.x) or rope_parameters (newer), either may carry rope_type or type.
void read_rope(const json& object, const std::string& source, ModelConfig& config) {
  const json* rope = nullptr;
  std::string field = "rope_scaling";
  if (auto it = object.find("rope_parameters"); it != object.end() && it->is_object()) {
    rope = &*it;
    field = "rope_parameters";
    if (auto theta = optional_field<double>(*rope, "rope_theta", source, field + ".")) config.rope_theta = *theta;
  } else if (auto it = object.find("rope_scaling"); it != object.end() && !it->is_null()) {
    if (!it->is_object()) fail("{}: field \"rope_scaling\" must be an object or null, got {}", source, it->dump());
    rope = &*it;
  }
  if (!rope) return;
  const std::string prefix = field + ".";
  auto type = optional_field<std::string>(*rope, "rope_type", source, prefix);
  if (!type) type = optional_field<std::string>(*rope, "type", source, prefix);
  RopeScaling& scaling = config.rope_scaling;
  scaling.type = type.value_or("default");
  static const std::set<std::string> kTypes{"default", "linear", "dynamic", "yarn", "longrope", "llama3"};
  if (!kTypes.count(scaling.type))
    fail("{}: unsupported {}.rope_type \"{}\"; supported: default, linear, dynamic, yarn, longrope, llama3", source, field,
         scaling.type);
  if (scaling.type == "default") return;
  // transformers' default for the pre-training context: the config's top-level field, else the
  // model's max_position_embeddings.
  scaling.original_max_position_embeddings =
      optional_field<int64_t>(object, "original_max_position_embeddings", source)
          .value_or(optional_field<int64_t>(*rope, "original_max_position_embeddings", source, prefix)
                        .value_or(config.max_position_embeddings));
  auto factor = optional_field<double>(*rope, "factor", source, prefix);
  if (!factor && (scaling.type == "yarn" || scaling.type == "longrope")) {
    factor = static_cast<double>(config.max_position_embeddings) / static_cast<double>(scaling.original_max_position_embeddings);
  }
  if (!factor) fail("{}: missing required field \"{}factor\" for rope_type {}", source, prefix, scaling.type);
  if (*factor <= 0) fail("{}: field \"{}factor\" must be positive, got {}", source, prefix, *factor);
  scaling.factor = *factor;
  scaling.attention_factor = optional_field<double>(*rope, "attention_factor", source, prefix);
  if (scaling.type == "yarn") {
    // transformers reads beta_fast / beta_slow with `or`, so a null or 0 means the default.
    const auto beta_fast = optional_field<double>(*rope, "beta_fast", source, prefix).value_or(0);
    const auto beta_slow = optional_field<double>(*rope, "beta_slow", source, prefix).value_or(0);
    scaling.beta_fast = beta_fast != 0 ? beta_fast : 32.0;
    scaling.beta_slow = beta_slow != 0 ? beta_slow : 1.0;
    scaling.mscale = optional_field<double>(*rope, "mscale", source, prefix);
    scaling.mscale_all_dim = optional_field<double>(*rope, "mscale_all_dim", source, prefix);
    scaling.truncate = optional_field<bool>(*rope, "truncate", source, prefix).value_or(true);
  }
  if (scaling.type == "longrope") {
    const auto pairs = static_cast<std::size_t>(config.head_dim / 2);
    for (auto [key, values] : {std::pair{"short_factor", &scaling.short_factor}, {"long_factor", &scaling.long_factor}}) {
      auto list = optional_field<std::vector<double>>(*rope, key, source, prefix);
      if (!list || list->size() != pairs)
        fail("{}: rope_type longrope needs \"{}{}\": a list of head_dim / 2 = {} numbers", source, prefix, key, pairs);
      *values = *list;
    }
  }
  if (scaling.type != "llama3") return;
  auto llama3_field = [&](const char* key) {
    auto value = optional_field<double>(*rope, key, source, prefix);
    if (!value) fail("{}: missing required field \"{}{}\" for rope_type llama3", source, prefix, key);
    return *value;
  };
  scaling.low_freq_factor = llama3_field("low_freq_factor");
  scaling.high_freq_factor = llama3_field("high_freq_factor");
  if (scaling.high_freq_factor <= scaling.low_freq_factor)
    fail("{}: {}high_freq_factor ({}) must exceed low_freq_factor ({})", source, prefix, scaling.high_freq_factor,
         scaling.low_freq_factor);
}

// sliding_window with the layers it applies to: layer_types when config.json lists them
// (transformers 5), else every layer for Mistral, and for Qwen2/Qwen3 with use_sliding_window the
// layers from max_window_layers on.
void read_sliding_window(const json& object, const std::string& source, ModelConfig& config) {
  auto window = optional_field<int64_t>(object, "sliding_window", source);
  const bool qwen = config.model_type == "qwen2" || config.model_type == "qwen3";
  if (qwen && !optional_field<bool>(object, "use_sliding_window", source).value_or(false)) window.reset();
  if (config.model_type == "llama") window.reset();
  const auto layers = static_cast<std::size_t>(config.num_hidden_layers);
  std::vector<bool> sliding(layers, false);
  if (auto types = optional_field<std::vector<std::string>>(object, "layer_types", source)) {
    if (types->size() != layers)
      fail("{}: field \"layer_types\" lists {} layers for num_hidden_layers {}", source, types->size(), layers);
    for (std::size_t i = 0; i < layers; ++i) {
      if ((*types)[i] != "full_attention" && (*types)[i] != "sliding_attention")
        fail("{}: layer_types[{}] is \"{}\"; expected full_attention or sliding_attention", source, i, (*types)[i]);
      sliding[i] = (*types)[i] == "sliding_attention";
    }
  } else if (window) {
    const auto first = qwen ? optional_field<int64_t>(object, "max_window_layers", source).value_or(28) : 0;
    for (std::size_t i = 0; i < layers; ++i) sliding[i] = static_cast<int64_t>(i) >= first;
  }
  if (!window || std::none_of(sliding.begin(), sliding.end(), [](bool s) { return s; })) return;
  if (*window <= 0) fail("{}: field \"sliding_window\" must be positive, got {}", source, *window);
  config.sliding_window = window;
  config.sliding_layers = sliding;
}

// A classifier's label count: id2label's entries as transformers saves them, else num_labels, else
// transformers' default of 2.
void read_labels(const json& object, const std::string& source, ModelConfig& config) {
  const auto& architectures = config.architectures;
  if (std::none_of(architectures.begin(), architectures.end(), is_classifier_architecture)) return;
  if (auto it = object.find("id2label"); it != object.end() && !it->is_null()) {
    if (!it->is_object() || it->empty()) fail("{}: field \"id2label\" must be an object of labels, got {}", source, it->dump());
    config.num_labels = static_cast<int64_t>(it->size());
  } else {
    config.num_labels = optional_field<int64_t>(object, "num_labels", source).value_or(2);
  }
  if (*config.num_labels <= 0) fail("{}: field \"num_labels\" must be positive, got {}", source, *config.num_labels);
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& object, const std::string& source) {
  if (!object.is_object()) fail("{}: expected a JSON object", source);
  ModelConfig config;
  const SupportedFamily& family = resolve_family(object, source, config.architectures);
  config.model_type = family.model_type;

  config.vocab_size = positive_field(object, "vocab_size", source);
  config.hidden_size = positive_field(object, "hidden_size", source);
  config.intermediate_size = positive_field(object, "intermediate_size", source);
  config.num_hidden_layers = positive_field(object, "num_hidden_layers", source);
  config.num_attention_heads = positive_field(object, "num_attention_heads", source);
  config.num_key_value_heads =
      optional_field<int64_t>(object, "num_key_value_heads", source).value_or(config.num_attention_heads);
  if (config.num_key_value_heads <= 0 || config.num_attention_heads % config.num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
         config.num_attention_heads, config.num_key_value_heads);
  if (auto head_dim = optional_field<int64_t>(object, "head_dim", source)) {
    if (*head_dim <= 0 || *head_dim % 2 != 0) fail("{}: field \"head_dim\" must be positive and even, got {}", source, *head_dim);
    config.head_dim = *head_dim;
  } else {
    if (config.hidden_size % config.num_attention_heads != 0)
      fail("{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given", source,
           config.hidden_size, config.num_attention_heads);
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }

  if (auto activation = optional_field<std::string>(object, "hidden_act", source); activation && *activation != "silu")
    fail("{}: unsupported hidden_act \"{}\"; supported: silu", source, *activation);
  if (optional_field<bool>(object, "mlp_bias", source).value_or(false))
    fail("{}: mlp_bias true is not supported", source);

  config.max_position_embeddings =
      optional_field<int64_t>(object, "max_position_embeddings", source).value_or(config.max_position_embeddings);
  config.rms_norm_eps = optional_field<double>(object, "rms_norm_eps", source).value_or(config.rms_norm_eps);
  config.rope_theta = optional_field<double>(object, "rope_theta", source).value_or(config.rope_theta);
  read_rope(object, source, config);
  read_sliding_window(object, source, config);
  config.tie_word_embeddings = optional_field<bool>(object, "tie_word_embeddings", source).value_or(false);
  // Qwen2 always has q/k/v biases (its config has no switch for them).
  config.attention_bias = config.model_type == "qwen2" ||
                          optional_field<bool>(object, "attention_bias", source).value_or(false);
  config.qk_norm = config.model_type == "qwen3";
  config.torch_dtype = optional_field<std::string>(object, "torch_dtype", source)
                           .value_or(optional_field<std::string>(object, "dtype", source).value_or("float32"));
  config.bos_token_id = optional_field<int64_t>(object, "bos_token_id", source);
  config.eos_token_ids = token_id_list(object, "eos_token_id", source);
  config.pad_token_id = optional_field<int64_t>(object, "pad_token_id", source);
  read_labels(object, source, config);
  return config;
}

ModelConfig ModelConfig::load(const std::filesystem::path& config_json) {
  json object;
  const std::string text = read_file(config_json);
  try {
    object = json::parse(text);
  } catch (const json::parse_error& error) {
    fail("{}: invalid JSON: {}", config_json.string(), error.what());
  }
  return from_json(object, config_json.string());
}

json ModelConfig::to_json() const {
  const SupportedFamily* family = family_of_type(model_type);
  auto listed = architectures;
  if (listed.empty() && family) listed = {num_labels ? family->classifier : family->architecture};
  json object = {
      {"architectures", listed},
      {"model_type", model_type},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", max_position_embeddings},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"tie_word_embeddings", tie_word_embeddings},
      {"attention_bias", attention_bias},
      {"torch_dtype", torch_dtype},
  };
  if (rope_scaling.type == "default") {
    object["rope_scaling"] = nullptr;
  } else {
    json rope = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      rope["low_freq_factor"] = rope_scaling.low_freq_factor;
      rope["high_freq_factor"] = rope_scaling.high_freq_factor;
      rope["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    if (rope_scaling.type == "yarn" || rope_scaling.type == "longrope") {
      rope["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    if (rope_scaling.attention_factor) rope["attention_factor"] = *rope_scaling.attention_factor;
    if (rope_scaling.type == "yarn") {
      rope["beta_fast"] = rope_scaling.beta_fast;
      rope["beta_slow"] = rope_scaling.beta_slow;
      if (rope_scaling.mscale) rope["mscale"] = *rope_scaling.mscale;
      if (rope_scaling.mscale_all_dim) rope["mscale_all_dim"] = *rope_scaling.mscale_all_dim;
      if (!rope_scaling.truncate) rope["truncate"] = false;
    }
    if (rope_scaling.type == "longrope") {
      rope["short_factor"] = rope_scaling.short_factor;
      rope["long_factor"] = rope_scaling.long_factor;
    }
    object["rope_scaling"] = rope;
  }
  if (sliding_window) {
    object["sliding_window"] = *sliding_window;
    json types = json::array();
    for (const bool sliding : sliding_layers) types.push_back(sliding ? "sliding_attention" : "full_attention");
    object["layer_types"] = types;
    if (model_type != "mistral") object["use_sliding_window"] = true;
  } else if (model_type == "mistral") {
    object["sliding_window"] = nullptr;  // transformers' Mistral default would be a window of 4096
  }
  object["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  if (eos_token_ids.empty()) object["eos_token_id"] = nullptr;
  else if (eos_token_ids.size() == 1) object["eos_token_id"] = eos_token_ids.front();
  else object["eos_token_id"] = eos_token_ids;
  if (pad_token_id) object["pad_token_id"] = *pad_token_id;
  if (num_labels) {
    json id2label = json::object(), label2id = json::object();
    for (int64_t i = 0; i < *num_labels; ++i) {
      id2label[std::to_string(i)] = fmt::format("LABEL_{}", i);
      label2id[fmt::format("LABEL_{}", i)] = i;
    }
    object["id2label"] = id2label;
    object["label2id"] = label2id;
  }
  return object;
}

}  // namespace lathe
