#include "lathe/infer/inference.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/plugin/tuner.h"
#include "lathe/tuner/lora.h"

namespace lathe {
namespace fs = std::filesystem;

static torch::Dtype parse_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  fail("--torch_dtype: '{}' is not supported (expected float32 or bfloat16)", name);
}

// eos ids from generation_config.json, which may differ from config.json's (Llama-3 instruct).
static std::vector<int64_t> generation_config_eos(const fs::path& dir) {
  const auto path = dir / "generation_config.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  auto json = nlohmann::json::parse(read_file(path), nullptr, false);
  if (json.is_discarded()) fail("{}: not valid JSON", path.string());
  std::vector<int64_t> ids;
  if (auto eos = json.find("eos_token_id"); eos != json.end()) {
    if (eos->is_number_integer()) ids.push_back(eos->get<int64_t>());
    if (eos->is_array()) {
      for (const auto& id : *eos) {
        if (id.is_number_integer()) ids.push_back(id.get<int64_t>());
      }
    }
  }
  return ids;
}

static std::vector<int32_t> stop_tokens(const Tokenizer& tokenizer, const Template& chat_template,
                                        const ModelConfig& config, const fs::path& dir) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(static_cast<int32_t>(id));
  };
  for (const auto& word : chat_template.stop_words()) {
    if (auto id = tokenizer.token_to_id(word)) add(*id);
  }
  for (auto id : config.eos_token_ids) add(id);
  for (auto id : generation_config_eos(dir)) add(id);
  return ids;
}

[[noreturn]] static void refuse_classifier(const fs::path& folder) {
  fail("{}: a sequence classifier (a reward model from lathe rlhf --rlhf_type rm) scores sequences; it does not "
       "generate text", folder.string());
}

InferenceModel load_inference_model(const Arguments& arguments) {
  if (arguments.model.empty()) fail("--model is required (a Hugging Face model folder)");
  const fs::path dir = arguments.model;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail_not_local("model folder", dir.string());
  if (arguments.adapters.size() > 1) fail("--adapters: one adapter folder at a time (got {})", arguments.adapters.size());
  for (const auto& adapter : arguments.adapters) {
    if (adapter_classifier_labels(adapter)) refuse_classifier(adapter);
  }
  auto tokenizer = Tokenizer::from_file(dir);
  // The projections are held in 16 bits as they load, unless adapters are merged into them first;
  // auto only where that loses nothing (a 16-bit checkpoint, nothing merged).
  const bool merges = arguments.merge_lora && !arguments.adapters.empty();
  const auto projections = projection_dtype(arguments.weight_dtype, arguments.torch_dtype, dir, /*lossless_auto=*/!merges);
  auto model = load_pretrained(dir, parse_dtype(arguments.torch_dtype), {merges ? std::nullopt : projections, true});
  if (model->is_classifier()) refuse_classifier(dir);
  for (const auto& adapter : arguments.adapters) load_adapter_folder(model, adapter, arguments, /*trainable=*/false);
  if (arguments.merge_lora) {
    merge_lora(model);
    // What merge_lora cannot fold (IA3 vectors) would be dropped from a written model folder.
    for (const auto& item : model->named_modules()) {
      if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value()); linear && linear->adapter) {
        fail("--merge_lora: {} carries a {} adapter, which Lathe cannot merge into the weights yet (LoRA, DoRA "
             "and PiSSA adapters merge); use the adapter folder with --adapters instead",
             item.key(), linear->adapter_name);
      }
    }
  }
  if (merges && projections) model->hold_projections_in(*projections, /*embedding=*/true);
  model->eval();
  auto chat_template = Template::for_model(dir.string(), arguments.template_name);
  chat_template.set_agent_template(make_agent_template(arguments, chat_template.spec()));
  auto stops = stop_tokens(tokenizer, chat_template, model->config(), dir);
  return InferenceModel{model, std::move(tokenizer), std::move(chat_template), std::move(stops), arguments.system};
}

std::vector<int32_t> InferenceModel::encode_prompt(const Conversation& conversation) const {
  return chat_template.encode(tokenizer, conversation, /*add_generation_prompt=*/true, system).input_ids;
}

std::string InferenceModel::decode_response(std::vector<int32_t> ids) const {
  if (!ids.empty() && std::find(stop_token_ids.begin(), stop_token_ids.end(), ids.back()) != stop_token_ids.end()) {
    ids.pop_back();
  }
  return tokenizer.decode(ids, /*skip_special_tokens=*/false);
}

std::vector<std::string> InferenceModel::stop_strings() const {
  std::vector<std::string> words;
  for (const auto& word : chat_template.stop_words()) {
    if (!tokenizer.token_to_id(word)) words.push_back(word);
  }
  return words;
}

SamplingParams InferenceModel::sampling(const Arguments& arguments) const {
  SamplingParams params;
  params.max_new_tokens = arguments.max_new_tokens;
  params.temperature = arguments.temperature;
  params.top_k = arguments.top_k;
  params.top_p = arguments.top_p;
  params.min_p = arguments.min_p;
  params.repetition_penalty = arguments.repetition_penalty;
  params.presence_penalty = arguments.presence_penalty;
  params.frequency_penalty = arguments.frequency_penalty;
  params.seed = static_cast<uint64_t>(arguments.seed);
  params.stop_token_ids = stop_token_ids;
  params.stop = stop_strings();
  params.stop.insert(params.stop.end(), arguments.stop.begin(), arguments.stop.end());
  params.logprobs = arguments.logprobs;
  params.top_logprobs = arguments.top_logprobs;
  return params;
}

EngineOptions InferenceModel::engine_options(const Arguments& arguments) const {
  EngineOptions options;
  options.max_batch_size = std::max<int64_t>(1, arguments.max_batch_size);
  options.decode = [tokenizer = &tokenizer](const std::vector<int32_t>& ids) {
    return tokenizer->decode(ids, /*skip_special_tokens=*/false);
  };
  options.fit_max_new_tokens = true;
  return options;
}

}  // namespace lathe
