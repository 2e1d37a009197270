// Which built-in template a model folder gets (docs/templates.md): config.json's model_type first,
// then what tokenizer_config.json's chat_template writes, then "default".
#include <algorithm>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/common/json_file.h"
#include "lathe/template/template.h"

namespace lathe {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// chat_template is a string, or a list of named templates ({"name": "default", "template": ...}).
std::string chat_template_text(const json& tokenizer_config) {
  if (!tokenizer_config.is_object() || !tokenizer_config.contains("chat_template")) return {};
  const json& value = tokenizer_config["chat_template"];
  if (value.is_string()) return value.get<std::string>();
  std::string all;
  if (value.is_array()) {
    for (const json& entry : value) all += text_field(entry, "template");
  }
  return all;
}

bool has_llama3_tokenizer(const fs::path& dir, const json& config, const json& tokenizer_config) {
  constexpr std::string_view kBegin = "<|begin_of_text|>";
  if (text_field(tokenizer_config, "bos_token") == kBegin) return true;
  if (config.is_object() && config.value("vocab_size", int64_t{0}) >= 128000) return true;
  fs::path tokenizer_json = dir / "tokenizer.json";
  return fs::exists(tokenizer_json) &&
         read_file(tokenizer_json).find(kBegin) != std::string::npos;
}

std::optional<std::string> name_from_model_type(const fs::path& dir, const json& config,
                                                const json& tokenizer_config) {
  std::string model_type = text_field(config, "model_type");
  if (model_type == "qwen3") return "qwen3";
  if (model_type == "qwen2") return "qwen2_5";
  if (model_type == "mistral") return "mistral";
  if (model_type == "llama" && has_llama3_tokenizer(dir, config, tokenizer_config)) {
    return "llama3";
  }
  return std::nullopt;
}

std::optional<std::string> name_from_chat_template(const std::string& jinja) {
  if (jinja.find("<|start_header_id|>") != std::string::npos) return "llama3";
  if (jinja.find("<|im_start|>") != std::string::npos) {
    if (jinja.find("<think>") != std::string::npos) return "qwen3";
    if (jinja.find("You are Qwen") != std::string::npos) return "qwen2_5";
    return "chatml";
  }
  if (jinja.find("[INST]") != std::string::npos) return "mistral";
  return std::nullopt;
}

}  // namespace

std::string Template::name_for_model(const std::string& model_dir) {
  fs::path dir(model_dir);
  if (!fs::is_directory(dir)) fail("{}: no such model folder", model_dir);
  json config = read_json_if_present(dir / "config.json");
  json tokenizer_config = read_json_if_present(dir / "tokenizer_config.json");
  if (auto name = name_from_model_type(dir, config, tokenizer_config)) return *name;
  if (auto name = name_from_chat_template(chat_template_text(tokenizer_config))) return *name;
  return "default";
}

Template Template::for_model(const std::string& model_dir, const std::string& name) {
  if (!fs::is_directory(model_dir)) fail("{}: no such model folder", model_dir);
  Template chosen = builtin(name.empty() ? name_for_model(model_dir) : name);
  json tokenizer_config = read_json_if_present(fs::path(model_dir) / "tokenizer_config.json");
  std::string eos = text_field(tokenizer_config, "eos_token");
  if (!eos.empty()) {
    chosen.spec_.eos_token = eos;
    auto& stops = chosen.spec_.stop_words;
    if (std::find(stops.begin(), stops.end(), eos) == stops.end()) stops.push_back(eos);
  }
  return chosen;
}

}  // namespace lathe
