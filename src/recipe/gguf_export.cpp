// A Hugging Face model folder restated as llama.cpp's GGUF: its names, its hyper-parameter keys, its
// tokenizer description. What llama.cpp expects was read from its converter and loader; the rules
// are written out here because no library outside llama.cpp's own Python does this.
#include <fmt/format.h>

#include <map>
#include <optional>
#include <regex>

#include <nlohmann/json.hpp>

#include "lathe/common/files.h"
#include "lathe/common/format.h"
#include "lathe/common/json_file.h"
#include "lathe/model/rope.h"
#include "lathe/recipe/export.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// ggml's llama_ftype numbers for general.file_type.
uint32_t file_type(GgufType type) {
  switch (type) {
    case GgufType::F32: return 0;
    case GgufType::F16: return 1;
    case GgufType::Q8_0: return 7;
    case GgufType::BF16: return 32;
  }
  fail("GGUF type {} has no file type", static_cast<uint32_t>(type));
}

struct Architecture {
  std::string name;
  // llama.cpp's `llama` rotates adjacent pairs where Hugging Face rotates the two halves of each
  // head, so its converter reorders the rows of q_proj and k_proj.
  bool reorder_rotary_rows = false;
};

Architecture architecture_of(const ModelConfig& config) {
  if (config.model_type == "llama" || config.model_type == "mistral") return {"llama", true};
  if (config.model_type == "qwen2" || config.model_type == "qwen3") return {config.model_type, false};
  fail("GGUF export: model_type \"{}\" has no llama.cpp architecture here (llama, mistral, qwen2, qwen3)",
       config.model_type);
}

// Hugging Face's per-layer module names -> llama.cpp's.
const std::map<std::string, std::string, std::less<>>& layer_names() {
  static const std::map<std::string, std::string, std::less<>> names{
      {"input_layernorm", "attn_norm"},  {"self_attn.q_proj", "attn_q"},     {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},    {"self_attn.o_proj", "attn_output"}, {"self_attn.q_norm", "attn_q_norm"},
      {"self_attn.k_norm", "attn_k_norm"}, {"post_attention_layernorm", "ffn_norm"}, {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},         {"mlp.down_proj", "ffn_down"}};
  return names;
}

std::string gguf_tensor_name(const std::string& name) {
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::smatch match;
  if (std::regex_match(name, match, layer)) {
    const auto found = layer_names().find(match[2].str());
    if (found != layer_names().end()) return fmt::format("blk.{}.{}.{}", match[1].str(), found->second, match[3].str());
  }
  fail("GGUF export: tensor {} has no llama.cpp name", name);
}

// Within each head, rows 0..hd/2-1 and hd/2..hd-1 (the halves Hugging Face rotates together)
// become interleaved: 0, hd/2, 1, hd/2+1, ...
torch::Tensor reorder_rotary_rows(const torch::Tensor& values, int64_t heads) {
  auto shape = values.sizes().vec();
  std::vector<int64_t> split{heads, 2, values.size(0) / heads / 2};
  split.insert(split.end(), shape.begin() + 1, shape.end());
  return values.reshape(split).transpose(1, 2).reshape(shape);
}

// Norms, biases and other vectors stay float32, as llama.cpp's converter keeps them; a Q8_0 weight
// whose rows are not a multiple of 32 falls back to float16, as there.
GgufType type_for(const std::string& gguf_name, const torch::Tensor& values, GgufType wanted) {
  if (values.dim() < 2 || gguf_name.ends_with("_norm.weight") || !gguf_name.ends_with(".weight")) return GgufType::F32;
  if (wanted == GgufType::Q8_0 && values.size(-1) % 32 != 0) return GgufType::F16;
  return wanted;
}

void add_weights(GgufWriter& writer, CausalLM& model, const Architecture& architecture, GgufType type) {
  const ModelConfig& config = model->config();
  for (auto& [name, tensor] : model->state()) {
    if (name.ends_with("rotary_emb.inv_freq")) continue;
    const std::string gguf_name = gguf_tensor_name(name);
    auto values = tensor.detach();
    if (architecture.reorder_rotary_rows && gguf_name.find(".attn_q.") != std::string::npos) {
      values = reorder_rotary_rows(values, config.num_attention_heads);
    } else if (architecture.reorder_rotary_rows && gguf_name.find(".attn_k.") != std::string::npos) {
      values = reorder_rotary_rows(values, config.num_key_value_heads);
    }
    writer.add_tensor(gguf_name, values, type_for(gguf_name, values, type));
  }
}

void add_rope_scaling(GgufWriter& writer, const ModelConfig& config, const Architecture& architecture) {
  const RopeScaling& scaling = config.rope_scaling;
  const std::string key = architecture.name + ".rope.scaling.";
  if (scaling.type == "default") return;
  if (scaling.type == "linear") {
    writer.set(key + "type", std::string("linear"));
    writer.set(key + "factor", static_cast<float>(scaling.factor));
    return;
  }
  if (scaling.type == "yarn") {
    if (!scaling.truncate) {
      fail("GGUF export: llama.cpp's YaRN always truncates its ramp; rope_scaling.truncate false cannot be written");
    }
    writer.set(key + "type", std::string("yarn"));
    writer.set(key + "factor", static_cast<float>(scaling.factor));
    writer.set(key + "original_context_length", static_cast<uint32_t>(scaling.original_max_position_embeddings));
    // llama.cpp multiplies its attention factor by YaRN's default 0.1 ln(factor) + 1 itself.
    ModelConfig plain = config;
    plain.rope_scaling.attention_factor.reset();
    plain.rope_scaling.mscale.reset();
    plain.rope_scaling.mscale_all_dim.reset();
    const double ratio = rotary_attention_scale(config) / rotary_attention_scale(plain);
    if (std::abs(ratio - 1) > 1e-9) writer.set(key + "yarn_attn_factor", static_cast<float>(ratio));
    if (scaling.beta_fast != 32) writer.set(key + "yarn_beta_fast", static_cast<float>(scaling.beta_fast));
    if (scaling.beta_slow != 1) writer.set(key + "yarn_beta_slow", static_cast<float>(scaling.beta_slow));
    return;
  }
  if (scaling.type == "llama3" && architecture.name == "llama") {
    // No keys: llama.cpp divides each frequency by a factor from the tensor rope_freqs.weight.
    ModelConfig unscaled = config;
    unscaled.rope_scaling = RopeScaling{};
    writer.add_tensor("rope_freqs.weight", inverse_frequencies(unscaled, 0) / inverse_frequencies(config, 0),
                      GgufType::F32);
    return;
  }
  fail("GGUF export: llama.cpp's {} has no rope_scaling of type {} (written: default, linear, yarn{})", architecture.name,
       scaling.type, architecture.name == "llama" ? ", llama3" : "");
}

void add_hyperparameters(GgufWriter& writer, const ModelConfig& config, const Architecture& architecture) {
  const std::string& arch = architecture.name;
  auto u32 = [](int64_t value) { return static_cast<uint32_t>(value); };
  writer.set(arch + ".block_count", u32(config.num_hidden_layers));
  writer.set(arch + ".context_length", u32(config.max_position_embeddings));
  writer.set(arch + ".embedding_length", u32(config.hidden_size));
  writer.set(arch + ".feed_forward_length", u32(config.intermediate_size));
  writer.set(arch + ".attention.head_count", u32(config.num_attention_heads));
  writer.set(arch + ".attention.head_count_kv", u32(config.num_key_value_heads));
  writer.set(arch + ".rope.freq_base", static_cast<float>(config.rope_theta));
  writer.set(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(config.rms_norm_eps));
  writer.set(arch + ".attention.key_length", u32(config.head_dim));
  writer.set(arch + ".attention.value_length", u32(config.head_dim));
  if (arch == "llama") {
    writer.set("llama.vocab_size", u32(config.vocab_size));
    writer.set("llama.rope.dimension_count", u32(config.head_dim));
  }
  add_rope_scaling(writer, config, architecture);
}

// ---- tokenizer -------------------------------------------------------------------------------

// llama.cpp chooses its pre-tokenizer by a name; these are the split patterns of the byte-level
// vocabularies it knows under those names.
std::string pre_tokenizer_name(const json& pre_tokenizer, const fs::path& file) {
  static const std::map<std::string, std::string> kByPattern{
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "qwen2"},
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "llama-bpe"}};
  std::vector<json> steps;
  if (pre_tokenizer.is_object() && pre_tokenizer.value("type", "") == "Sequence") {
    for (const json& step : pre_tokenizer.value("pretokenizers", json::array())) steps.push_back(step);
  } else if (pre_tokenizer.is_object()) {
    steps.push_back(pre_tokenizer);
  }
  std::optional<std::string> pattern;
  bool byte_level = false, byte_level_regex = false;
  for (const json& step : steps) {
    const std::string type = step.value("type", "");
    if (type == "ByteLevel") byte_level = true, byte_level_regex = step.value("use_regex", true);
    if (type == "Split" && step.contains("pattern") && step["pattern"].contains("Regex")) {
      pattern = step["pattern"]["Regex"].get<std::string>();
    }
  }
  if (!byte_level) {
    fail("{}: GGUF export writes byte-level BPE (Qwen2/Qwen3, Llama 3, GPT-2) and SentencePiece-style BPE vocabularies "
         "(Llama 2, Mistral); this one has no ByteLevel pre-tokenizer and no byte fallback",
         file.string());
  }
  if (!pattern && byte_level_regex) return "gpt-2";
  if (pattern) {
    const auto known = kByPattern.find(*pattern);
    if (known != kByPattern.end()) return known->second;
  }
  fail("{}: pre_tokenizer's split pattern is none llama.cpp knows here (Qwen2's, Llama 3's, GPT-2's); the GGUF could "
       "not tokenize as the model does",
       file.string());
}

// A merge as llama.cpp stores it: "left right" (a space inside a part spelled as byte-level Ġ).
std::string merge_text(const json& merge, const fs::path& file) {
  if (merge.is_string()) return merge.get<std::string>();
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    auto part = [](std::string text) {
      std::string out;
      for (char c : text) out += c == ' ' ? std::string("\xC4\xA0") : std::string(1, c);
      return out;
    };
    return part(merge[0].get<std::string>()) + " " + part(merge[1].get<std::string>());
  }
  fail("{}: model.merges holds {}, expected \"a b\" or [\"a\", \"b\"]", file.string(), merge.dump());
}

// Added tokens llama.cpp's converter treats as control tokens although not marked special.
bool looks_special(std::string_view text) { return text.starts_with("<|") && text.ends_with("|>"); }

enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

json read_tokenizer_json(const fs::path& file) {
  json tokenizer = read_json_if_present(file);
  if (tokenizer.is_null()) fail("{}: GGUF export needs the model's tokenizer.json", file.string());
  return tokenizer;
}

// A token id of tokenizer.json, which must be a whole number.
int64_t token_id(const json& id, std::string_view text, const fs::path& file) {
  if (!id.is_number_integer()) fail("{}: token {} has id {}, expected a whole number", file.string(), text, id.dump());
  return id.get<int64_t>();
}

// SentencePiece-style BPE (Llama 2, Mistral v0.1-v0.3): pieces spelled with ▁, bytes as <0xXX>.
bool sentencepiece_style(const json& model) {
  return model.value("byte_fallback", false) && model["vocab"].contains("<0x00>");
}

// Every id below vocab_size with its text and type; ids the tokenizer lacks become [PAD<id>], unused.
struct Vocabulary {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
};

Vocabulary vocabulary(const json& tokenizer, const fs::path& file, int64_t vocab_size, bool sentencepiece) {
  Vocabulary out{std::vector<std::string>(static_cast<std::size_t>(vocab_size)),
                 std::vector<int32_t>(static_cast<std::size_t>(vocab_size), kUnused)};
  std::vector<bool> seen(static_cast<std::size_t>(vocab_size), false);
  auto place = [&](int64_t id, const std::string& text, TokenType type) {
    if (id < 0 || id >= vocab_size) {
      fail("{}: token {} has id {}, beyond the model's vocab_size {} (config.json)", file.string(), text, id, vocab_size);
    }
    out.tokens[id] = text;
    out.types[id] = type;
    seen[id] = true;
  };
  const json& model = tokenizer["model"];
  const std::string unknown = model.value("unk_token", json()).is_string() ? model["unk_token"].get<std::string>() : "";
  for (const auto& [text, id] : model["vocab"].items()) {
    const bool byte = sentencepiece && text.size() == 6 && text.starts_with("<0x") && text.ends_with(">");
    place(token_id(id, text, file), text, byte ? kByte : !unknown.empty() && text == unknown ? kUnknown : kNormal);
  }
  for (const json& added : tokenizer.value("added_tokens", json::array())) {
    const std::string text = added.value("content", "");
    if (!unknown.empty() && text == unknown) continue;
    place(token_id(added.value("id", json()), text, file), text,
          added.value("special", false) || looks_special(text) ? kControl : kUserDefined);
  }
  for (int64_t id = 0; id < vocab_size; ++id) {
    if (!seen[id]) out.tokens[id] = fmt::format("[PAD{}]", id);
  }
  return out;
}

// llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined piece scores highest;
// scoring each piece by minus the rank of the merge that makes it gives BPE's merge order.
std::vector<float> merge_rank_scores(const json& model, int64_t vocab_size, const fs::path& file) {
  std::map<std::string, int64_t, std::less<>> ids;
  for (const auto& [text, id] : model["vocab"].items()) ids.emplace(text, token_id(id, text, file));
  std::vector<float> scores(static_cast<std::size_t>(vocab_size), 0.0F);
  std::vector<bool> scored(static_cast<std::size_t>(vocab_size), false);
  int64_t rank = 0;
  for (const json& merge : model.value("merges", json::array())) {
    const std::string text = merge_text(merge, file);
    const auto space = text.find(' ');
    const auto joined = ids.find(text.substr(0, space) + text.substr(space + 1));
    if (joined != ids.end() && !scored[joined->second]) {
      scores[joined->second] = -static_cast<float>(rank);
      scored[joined->second] = true;
    }
    ++rank;
  }
  return scores;
}

// Whether the text gets a leading ▁ before its pieces: a Prepend normalizer (Llama 2's files), or a
// Metaspace pre-tokenizer that prepends (newer Mistral files).
bool adds_space_prefix(const json& tokenizer) {
  bool prepends = false;
  auto visit = [&](const json& step, const char* list, auto& self) -> void {
    if (!step.is_object()) return;
    if (step.value("type", "") == "Prepend") prepends = true;
    if (step.value("type", "") == "Metaspace") {
      prepends = step.value("prepend_scheme", step.value("add_prefix_space", true) ? "always" : "never") != "never";
    }
    for (const json& inner : step.value(list, json::array())) self(inner, list, self);
  };
  visit(tokenizer.value("normalizer", json()), "normalizers", visit);
  visit(tokenizer.value("pre_tokenizer", json()), "pretokenizers", visit);
  return prepends;
}

void add_vocabulary(GgufWriter& writer, const fs::path& model_dir, int64_t vocab_size) {
  const fs::path file = model_dir / "tokenizer.json";
  const json tokenizer = read_tokenizer_json(file);
  const json& model = tokenizer.value("model", json::object());
  if (model.value("type", "") != "BPE" || !model.contains("vocab") || !model["vocab"].is_object()) {
    fail("{}: GGUF export writes BPE vocabularies; model.type is \"{}\"", file.string(), model.value("type", ""));
  }
  if (sentencepiece_style(model)) {
    auto words = vocabulary(tokenizer, file, vocab_size, /*sentencepiece=*/true);
    auto scores = merge_rank_scores(model, vocab_size, file);
    writer.set("tokenizer.ggml.model", std::string("llama"));
    writer.set("tokenizer.ggml.pre", std::string("default"));
    writer.set("tokenizer.ggml.tokens", std::move(words.tokens));
    writer.set("tokenizer.ggml.scores", std::move(scores));
    writer.set("tokenizer.ggml.token_type", std::move(words.types));
    writer.set("tokenizer.ggml.add_space_prefix", adds_space_prefix(tokenizer));
    return;
  }
  const std::string pre = pre_tokenizer_name(tokenizer.value("pre_tokenizer", json()), file);
  auto words = vocabulary(tokenizer, file, vocab_size, /*sentencepiece=*/false);
  std::vector<std::string> merges;
  for (const json& merge : model.value("merges", json::array())) merges.push_back(merge_text(merge, file));
  writer.set("tokenizer.ggml.model", std::string("gpt2"));
  writer.set("tokenizer.ggml.pre", pre);
  writer.set("tokenizer.ggml.tokens", std::move(words.tokens));
  writer.set("tokenizer.ggml.token_type", std::move(words.types));
  writer.set("tokenizer.ggml.merges", std::move(merges));
}

// Special ids from tokenizer_config.json's token texts, else config.json's ids; whether the
// tokenizer adds BOS/EOS from tokenizer_config.json, else from what its post-processor does.
void add_special_tokens(GgufWriter& writer, const fs::path& model_dir, const ModelConfig& config) {
  const auto tokenizer = Tokenizer::from_file(model_dir / "tokenizer.json");
  const json tokenizer_config = read_json_if_present(model_dir / "tokenizer_config.json");
  auto id_of = [&](const char* key) -> std::optional<int64_t> {
    const std::string text = text_field(tokenizer_config, key);
    if (text.empty()) return std::nullopt;
    const auto id = tokenizer.token_to_id(text);
    if (!id) fail("{}: {} \"{}\" is not in tokenizer.json", (model_dir / "tokenizer_config.json").string(), key, text);
    return *id;
  };
  auto either = [](std::optional<int64_t> first, std::optional<int64_t> second) { return first ? first : second; };
  const auto bos = either(id_of("bos_token"), config.bos_token_id);
  const auto eos = either(id_of("eos_token"), config.eos_token_ids.empty() ? std::nullopt
                                                                          : std::optional(config.eos_token_ids.front()));
  const auto pad = either(id_of("pad_token"), config.pad_token_id);
  const auto unknown = id_of("unk_token");
  for (const auto& [key, id] : {std::pair{"bos", bos}, {"eos", eos}, {"padding", pad}, {"unknown", unknown}}) {
    if (id) writer.set(fmt::format("tokenizer.ggml.{}_token_id", key), static_cast<uint32_t>(*id));
  }
  const auto plain = tokenizer.encode("a", false), with_special = tokenizer.encode("a", true);
  const bool adds_bos = with_special.size() > plain.size() && with_special.front() != plain.front();
  const bool adds_eos = with_special.size() > plain.size() && with_special.back() != plain.back();
  auto flag = [&](const char* key, bool fallback) {
    return tokenizer_config.is_object() && tokenizer_config.contains(key) && tokenizer_config[key].is_boolean()
               ? tokenizer_config[key].get<bool>()
               : fallback;
  };
  writer.set("tokenizer.ggml.add_bos_token", flag("add_bos_token", adds_bos));
  writer.set("tokenizer.ggml.add_eos_token", flag("add_eos_token", adds_eos));
}

// tokenizer_config.json's chat_template (a string, or named templates of which "default" is the
// main one), else chat_template.jinja.
void add_chat_template(GgufWriter& writer, const fs::path& model_dir) {
  const json tokenizer_config = read_json_if_present(model_dir / "tokenizer_config.json");
  const json chat_template = tokenizer_config.is_object() ? tokenizer_config.value("chat_template", json()) : json();
  if (chat_template.is_string()) {
    writer.set("tokenizer.chat_template", chat_template.get<std::string>());
  } else if (chat_template.is_array()) {
    for (const json& entry : chat_template) {
      const std::string name = text_field(entry, "name"), text = text_field(entry, "template");
      writer.set(name == "default" ? "tokenizer.chat_template" : "tokenizer.chat_template." + name, text);
    }
  } else if (fs::exists(model_dir / "chat_template.jinja")) {
    writer.set("tokenizer.chat_template", read_file(model_dir / "chat_template.jinja"));
  }
}

}  // namespace

void write_gguf(CausalLM& model, const fs::path& model_dir, GgufType type, const fs::path& file) {
  const ModelConfig& config = model->config();
  const Architecture architecture = architecture_of(config);
  if (config.sliding_window && !config.sliding_layers.empty() && *config.sliding_window < config.max_position_embeddings) {
    fmt::print(stderr,
               "lathe export: note: llama.cpp's {} attends over the whole context; this model's layers see only the "
               "last {} tokens, so beyond that length llama.cpp's outputs differ from Lathe's\n",
               architecture.name, *config.sliding_window);
  }
  GgufWriter writer;
  writer.set("general.architecture", architecture.name);
  writer.set("general.type", std::string("model"));
  const fs::path folder = fs::absolute(model_dir).lexically_normal();
  writer.set("general.name", (folder.has_filename() ? folder : folder.parent_path()).filename().string());
  writer.set("general.file_type", file_type(type));
  writer.set("general.quantization_version", uint32_t{2});
  add_hyperparameters(writer, config, architecture);
  add_vocabulary(writer, model_dir, config.vocab_size);
  add_special_tokens(writer, model_dir, config);
  add_chat_template(writer, model_dir);
  torch::NoGradGuard no_grad;
  add_weights(writer, model, architecture, type);
  writer.write(file);
}

}  // namespace lathe
