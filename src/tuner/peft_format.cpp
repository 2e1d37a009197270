// PEFT's on-disk adapter format: adapter_config.json and adapter_model.safetensors with keys
// `base_model.model.<module path>.lora_A.weight` etc. (PEFT strips the adapter name and, for DoRA,
// the ".weight" of its magnitude module, so the magnitude key ends in `.lora_magnitude_vector`).
#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/tuner/lora.h"
#include "lathe/model/weights.h"
#include "lathe/tuner/targets.h"
#include "tuner/pissa.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";

std::string key_prefix(const std::string& path) { return "base_model.model." + path; }
std::string lora_a_key(const std::string& path) { return key_prefix(path) + ".lora_A.weight"; }
std::string lora_b_key(const std::string& path) { return key_prefix(path) + ".lora_B.weight"; }
std::string magnitude_key(const std::string& path) { return key_prefix(path) + ".lora_magnitude_vector"; }

std::string shape_string(torch::IntArrayRef sizes) { return fmt::format("[{}]", fmt::join(sizes, ", ")); }

json init_lora_weights_value(const std::string& init) {
  if (init == "default") return true;
  return init;
}

// A whole-number alpha is written as an integer, as PEFT does for lora_alpha=32.
json number_value(double value) {
  if (value == std::floor(value) && std::abs(value) < 1e15) return static_cast<int64_t>(value);
  return value;
}

// --- Reading adapter_config.json ----------------------------------------------------------------

class ConfigReader {
 public:
  ConfigReader(const json& root, std::string source) : root_(root), source_(std::move(source)) {}

  const json* find(const char* field) const {
    const auto found = root_.find(field);
    return found == root_.end() || found->is_null() ? nullptr : &*found;
  }
  [[noreturn]] void bad(const char* field, const char* expected) const {
    fail("{}: field {} must be {}, got {}", source_, field, expected, root_.at(field).dump());
  }
  double number(const char* field, double fallback) const {
    const auto* value = find(field);
    if (!value) return fallback;
    if (!value->is_number()) bad(field, "a number");
    return value->get<double>();
  }
  bool boolean(const char* field, bool fallback) const {
    const auto* value = find(field);
    if (!value) return fallback;
    if (!value->is_boolean()) bad(field, "true or false");
    return value->get<bool>();
  }
  // Options Lathe does not implement must be absent or at their neutral value.
  void require_neutral(const char* field, const json& neutral) const {
    const auto* value = find(field);
    if (value && *value != neutral && !(value->is_array() && value->empty()) && !(value->is_object() && value->empty()))
      fail("{}: {} = {} is not supported by Lathe (expected {})", source_, field, value->dump(), neutral.dump());
  }
  const std::string& source() const { return source_; }

 private:
  const json& root_;
  std::string source_;
};

LoadedAdapter parse_adapter_config(const json& root, const std::string& source) {
  if (!root.is_object()) fail("{}: expected a JSON object", source);
  const ConfigReader reader(root, source);
  LoadedAdapter loaded;
  auto& config = loaded.config;

  const auto* peft_type = reader.find("peft_type");
  if (!peft_type) fail("{}: missing field peft_type (expected \"LORA\")", source);
  if (!peft_type->is_string() || peft_type->get<std::string>() != "LORA")
    fail("{}: peft_type is {}; Lathe loads LORA adapters (LoRA and DoRA)", source, peft_type->dump());

  const auto* r = reader.find("r");
  if (!r) fail("{}: missing field r", source);
  if (!r->is_number_integer() || r->get<int64_t>() < 1) reader.bad("r", "a positive integer");
  config.r = r->get<int64_t>();
  config.lora_alpha = reader.number("lora_alpha", 8);  // PEFT's default
  config.lora_dropout = reader.number("lora_dropout", 0.0);
  config.use_rslora = reader.boolean("use_rslora", false);
  config.use_dora = reader.boolean("use_dora", false);

  const auto* targets = reader.find("target_modules");
  if (!targets) fail("{}: missing field target_modules", source);
  if (targets->is_string() && targets->get<std::string>() == "all-linear") {
    config.target_modules = {"all-linear"};
  } else if (targets->is_string()) {
    config.target_regex = targets->get<std::string>();
  } else if (targets->is_array() && !targets->empty() &&
             std::all_of(targets->begin(), targets->end(), [](const json& item) { return item.is_string(); })) {
    config.target_modules = targets->get<std::vector<std::string>>();
  } else {
    reader.bad("target_modules", "a regex string or a non-empty list of module names");
  }

  // The init only matters when training starts; a loaded adapter brings its weights.
  if (const auto* init = reader.find("init_lora_weights"); init && init->is_string() && tuner::is_known_init(init->get<std::string>()))
    config.init = init->get<std::string>();

  if (const auto* bias = reader.find("bias"); bias && *bias != "none")
    fail("{}: bias = {} is not supported by Lathe (expected \"none\")", source, bias->dump());
  reader.require_neutral("fan_in_fan_out", false);
  reader.require_neutral("rank_pattern", json::object());
  reader.require_neutral("alpha_pattern", json::object());
  reader.require_neutral("layers_to_transform", nullptr);
  if (const auto* saved = reader.find("modules_to_save"); saved && !(saved->is_array() && saved->empty())) {
    // Only a classifier's own head, which PEFT adds for task_type SEQ_CLS (as "classifier", "score").
    const bool heads_only = saved->is_array() && std::all_of(saved->begin(), saved->end(), [](const json& name) {
      return name == "score" || name == "classifier";
    });
    if (!heads_only)
      fail("{}: modules_to_save = {} is not supported by Lathe (expected null, or a classifier's [\"score\"])", source,
           saved->dump());
  }
  reader.require_neutral("layer_replication", nullptr);
  reader.require_neutral("lora_bias", false);
  reader.require_neutral("use_qalora", false);
  reader.require_neutral("exclude_modules", nullptr);
  reader.require_neutral("target_parameters", nullptr);
  reader.require_neutral("trainable_token_indices", nullptr);
  try {
    config.validate();
  } catch (const Error& error) {
    fail("{}: {}", source, error.what());
  }

  if (const auto* base = reader.find("base_model_name_or_path"); base && base->is_string())
    loaded.base_model_name_or_path = base->get<std::string>();
  return loaded;
}

json read_json_file(const fs::path& path) {
  if (!fs::exists(path)) fail("{}: missing; a PEFT adapter folder holds {} and {}", path.string(), kConfigFile, kWeightsFile);
  try {
    return json::parse(read_file(path));
  } catch (const json::parse_error& error) {
    fail("{}: invalid JSON: {}", path.string(), error.what());
  }
}

// Checks one tensor of the adapter file against the shape the model needs.
const torch::Tensor& expect_tensor(const std::map<std::string, torch::Tensor>& tensors, const std::string& key,
                                   torch::IntArrayRef shape, const std::string& file) {
  const auto found = tensors.find(key);
  if (found == tensors.end()) fail("{}: missing tensor {} (expected shape {})", file, key, shape_string(shape));
  if (found->second.sizes() != shape)
    fail("{}: tensor {} has shape {}, expected {}", file, key, shape_string(found->second.sizes()), shape_string(shape));
  if (!found->second.is_floating_point())
    fail("{}: tensor {} has dtype {}, expected a floating-point type", file, key, std::string(c10::toString(found->second.scalar_type())));
  return found->second;
}

}  // namespace

// --- Writing --------------------------------------------------------------------------------------

void mark_classifier_adapter(json& adapter_config, CausalLM& model) {
  if (!model->is_classifier()) return;
  adapter_config["task_type"] = "SEQ_CLS";
  adapter_config["modules_to_save"] = json::array({"score"});
}

namespace {

// The score head a classifier's adapter file must hold and a causal LM's must not.
void check_classifier_head(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors, const std::string& file) {
  if (model->is_classifier()) {
    expect_tensor(tensors, kClassifierHeadKey, model->output_weight().sizes(), file);
  } else if (tensors.count(kClassifierHeadKey)) {
    fail("{}: holds a sequence classifier's score head ({}); its base must load as a classifier (the adapter's "
         "task_type is SEQ_CLS)", file, kClassifierHeadKey);
  }
}

}  // namespace

void load_classifier_head(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors, const std::string& file,
                          bool trainable) {
  check_classifier_head(model, tensors, file);
  if (!model->is_classifier()) return;
  auto head = model->output_weight();
  const auto& stored = tensors.at(kClassifierHeadKey);
  torch::NoGradGuard no_grad;
  head.copy_(stored);
  head.set_requires_grad(trainable);
}

std::optional<int64_t> adapter_classifier_labels(const fs::path& dir) {
  const auto config_path = dir / kConfigFile;
  std::error_code ec;
  if (!fs::exists(config_path, ec)) return std::nullopt;
  const auto config = json::parse(read_file(config_path), nullptr, /*allow_exceptions=*/false);
  // PEFT writes task_type null for an adapter made without one (value() would throw on it).
  if (!config.is_object() || config.value("task_type", json()) != "SEQ_CLS") return std::nullopt;
  const auto weights_path = dir / kWeightsFile;
  const auto tensors = load_tensors(weights_path);
  const auto head = tensors.find(kClassifierHeadKey);
  if (head == tensors.end() || head->second.dim() != 2)
    fail("{}: task_type SEQ_CLS, but {} holds no score head {} [num_labels, hidden]", config_path.string(),
         weights_path.string(), kClassifierHeadKey);
  return head->second.size(0);
}

std::map<std::string, torch::Tensor> adapter_state(CausalLM& model) {
  std::map<std::string, torch::Tensor> tensors;
  if (model->is_classifier()) tensors.emplace(kClassifierHeadKey, model->output_weight().detach());
  for (const auto& [path, linear] : tuner::linear_modules(model)) {
    const auto adapter = std::dynamic_pointer_cast<LoraAdapter>(linear->adapter);
    if (!adapter) continue;
    tensors.emplace(lora_a_key(path), adapter->lora_A.detach());
    tensors.emplace(lora_b_key(path), adapter->lora_B.detach());
    if (adapter->use_dora) tensors.emplace(magnitude_key(path), adapter->lora_magnitude_vector.detach());
  }
  return tensors;
}

json peft_adapter_config(const LoraConfig& config, const std::vector<std::string>& adapted_modules,
                         const std::string& base_model_name_or_path) {
  const json target_modules = config.target_regex ? json(*config.target_regex)
                                                  : json(tuner::recorded_target_names(config, adapted_modules));
  // The fields a current PEFT writes for a LoraConfig (nlohmann::json keeps keys sorted, as PEFT's
  // json.dumps(sort_keys=True) does).
  return json{
      {"alpha_pattern", json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", base_model_name_or_path.empty() ? json(nullptr) : json(base_model_name_or_path)},
      {"bias", "none"},
      {"corda_config", nullptr},
      {"eva_config", nullptr},
      {"exclude_modules", nullptr},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", init_lora_weights_value(config.init)},
      {"layer_replication", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"loftq_config", json::object()},
      {"lora_alpha", number_value(config.lora_alpha)},
      {"lora_bias", false},
      {"lora_dropout", config.lora_dropout},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", config.r},
      {"rank_pattern", json::object()},
      {"revision", nullptr},
      {"target_modules", target_modules},
      {"task_type", "CAUSAL_LM"},
      {"trainable_token_indices", nullptr},
      {"use_dora", config.use_dora},
      {"use_rslora", config.use_rslora},
  };
}

namespace {

// PEFT's conversion of a trained PiSSA adapter into a LoRA on the original weights: W_res + s B A =
// W + s (B A - B0 A0) = W + s [B, -B0] [A; A0].
void write_pissa_converted(CausalLM& model, const fs::path& dir, const LoraConfig& config,
                           const std::vector<std::string>& adapted, const std::string& base_model_name_or_path) {
  std::map<std::string, torch::Tensor> tensors;
  for (auto& [path, linear] : tuner::linear_modules(model)) {
    auto adapter = std::dynamic_pointer_cast<LoraAdapter>(linear->adapter);
    if (!adapter) continue;
    if (!adapter->initial_A.defined()) fail("{}: PiSSA adapter without its initial values", path);
    torch::NoGradGuard no_grad;
    tensors[lora_a_key(path)] = torch::cat({adapter->lora_A, adapter->initial_A}, 0);
    tensors[lora_b_key(path)] = torch::cat({adapter->lora_B, -adapter->initial_B}, 1);
  }
  if (model->is_classifier()) tensors[kClassifierHeadKey] = model->output_weight().detach();
  LoraConfig converted = config;
  converted.r = 2 * config.r;
  converted.lora_alpha = config.use_rslora ? config.lora_alpha * std::sqrt(2.0) : 2 * config.lora_alpha;
  converted.init = "default";
  fs::create_directories(dir);
  auto adapter_config = peft_adapter_config(converted, adapted, base_model_name_or_path);
  mark_classifier_adapter(adapter_config, model);
  write_file_atomic(dir / kConfigFile, adapter_config.dump(2) + "\n");
  save_tensors(dir / kWeightsFile, tensors);
}

}  // namespace

void write_adapter_files(CausalLM& model, const fs::path& dir, const LoraConfig& config,
                         const std::string& base_model_name_or_path) {
  const auto adapted = lora_modules(model);
  if (adapted.empty()) fail("{}: the model has no LoRA adapter to save", dir.string());
  fs::create_directories(dir);
  auto adapter_config = peft_adapter_config(config, adapted, base_model_name_or_path);
  mark_classifier_adapter(adapter_config, model);
  write_file_atomic(dir / kConfigFile, adapter_config.dump(2) + "\n");
  save_tensors(dir / kWeightsFile, adapter_state(model));
  if (config.init == "pissa" && !config.use_dora) {
    write_pissa_converted(model, dir / "converted" / "default", config, adapted, base_model_name_or_path);
  }
}

void save_adapter(CausalLM& model, const fs::path& dir, const LoraConfig& config,
                  const std::string& base_model_name_or_path) {
  write_dir_atomic(dir, [&](const fs::path& temporary) {
    write_adapter_files(model, temporary, config, base_model_name_or_path);
  });
}

// --- Loading --------------------------------------------------------------------------------------

LoadedAdapter load_adapter(CausalLM& model, const fs::path& dir, bool trainable) {
  if (!fs::is_directory(dir)) fail("{}: adapter folder not found", dir.string());
  const auto config_path = dir / kConfigFile;
  auto loaded = parse_adapter_config(read_json_file(config_path), config_path.string());
  const auto& config = loaded.config;

  const auto weights_path = dir / kWeightsFile;
  if (!fs::exists(weights_path)) {
    if (fs::exists(dir / "adapter_model.bin"))
      fail("{}: missing; this adapter is in the pickle format adapter_model.bin, which Lathe does not read "
           "(convert it to safetensors)", weights_path.string());
    fail("{}: missing; a PEFT adapter folder holds {} and {}", weights_path.string(), kConfigFile, kWeightsFile);
  }
  const auto tensors = load_tensors(weights_path);
  const auto file = weights_path.string();
  const auto targets = tuner::select_targets(tuner::linear_modules(model), config, config_path.string());

  // Everything is checked before the model changes, so a bad folder leaves the model as it was.
  std::set<std::string> used;
  for (const auto& [path, linear] : targets) {
    if (linear->adapter) fail("{}: already has an adapter ({}); merge or remove it first", path, linear->adapter_name);
    expect_tensor(tensors, lora_a_key(path), {config.r, linear->in_features}, file);
    expect_tensor(tensors, lora_b_key(path), {linear->out_features, config.r}, file);
    used.insert({lora_a_key(path), lora_b_key(path)});
    if (config.use_dora) {
      expect_tensor(tensors, magnitude_key(path), {linear->out_features}, file);
      used.insert(magnitude_key(path));
    }
  }
  check_classifier_head(model, tensors, file);
  used.insert(kClassifierHeadKey);
  for (const auto& [key, tensor] : tensors)
    if (!used.count(key))
      fail("{}: tensor {} belongs to no adapted layer of this model ({} targets {} layers)", file, key,
           config_path.string(), targets.size());

  torch::NoGradGuard no_grad;
  for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
  for (const auto& [path, linear] : targets) {
    auto adapter = std::make_shared<LoraAdapter>(*linear, config);
    if (config.init == "pissa") tuner::initialise_pissa(*adapter, *linear, path);
    adapter->lora_A.copy_(tensors.at(lora_a_key(path)));
    adapter->lora_B.copy_(tensors.at(lora_b_key(path)));
    if (config.use_dora) adapter->lora_magnitude_vector.copy_(tensors.at(magnitude_key(path)));
    for (auto& parameter : adapter->parameters()) parameter.set_requires_grad(trainable);
    adapter->train(linear->is_training());
    linear->set_adapter(kLoraAdapterName, adapter);
    loaded.modules.push_back(path);
  }
  load_classifier_head(model, tensors, file, trainable);
  return loaded;
}

}  // namespace lathe
