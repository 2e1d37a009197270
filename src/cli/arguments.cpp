#include "cli/arguments.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <set>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/plugin.h"

namespace lathe {

namespace cli {

namespace {

// An option whose value is a JSON object (--plugin_args, --lr_scheduler_kwargs).
nlohmann::json json_object_option(const std::string& flag, const std::string& text) {
  auto value = nlohmann::json::parse(text, nullptr, false);
  if (!value.is_object()) throw CLI::ValidationError(flag, "expected a JSON object, got: " + text);
  return value;
}

void add_dataset_options(CLI::App& app, Arguments& a) {
  app.add_option("--split_dataset_ratio", a.split_dataset_ratio, "share of --dataset held out for evaluation")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--truncation_strategy", a.truncation_strategy, "over-long rows: delete them, or cut on the left or right")
      ->check(CLI::IsMember({"delete", "left", "right"}))->capture_default_str();
  app.add_option("--packing", a.packing, "pack rows into sequences of max_length (attention kept within each row)")->capture_default_str();
  app.add_option("--padding_free", a.padding_free, "concatenate each batch's rows without padding")->capture_default_str();
  app.add_option("--dataset_num_proc", a.dataset_num_proc, "threads that tokenize the dataset (0: all cores)")->capture_default_str();
  app.add_option("--streaming", a.streaming, "read and tokenize rows during training (datasets larger than memory; needs --max_steps)")->capture_default_str();
  app.add_option("--strict", a.strict, "stop at the first bad row (false: skip and count bad rows)")->capture_default_str();
  app.add_option("--loss_scale", a.loss_scale, "which tokens are trained and how strongly: default | last_round | all, plus '+name' parts")->capture_default_str();
  app.add_option("--model_name", a.model_name, "self-cognition: the model's name, Chinese then English (e.g. 小黄 'Xiao Huang')");
  app.add_option("--model_author", a.model_author, "self-cognition: the model's author, Chinese then English");
}

void add_tuner_options(CLI::App& app, Arguments& a) {
  app.add_option("--train_type", a.train_type, "tuner: full | lora | ...")->capture_default_str();
  app.add_option("--lora_rank", a.lora_rank, "LoRA rank")->capture_default_str();
  app.add_option("--lora_alpha", a.lora_alpha, "LoRA alpha (scaling = alpha / rank)")->capture_default_str();
  app.add_option("--lora_dropout", a.lora_dropout, "dropout on the LoRA input")->capture_default_str();
  app.add_option("--target_modules", a.target_modules, "all-linear, module-name suffixes, or one regex")->capture_default_str();
  app.add_option("--use_rslora", a.use_rslora, "rank-stabilised scaling alpha / sqrt(rank)")->capture_default_str();
  app.add_option("--use_dora", a.use_dora, "DoRA: learn a magnitude vector per output")->capture_default_str();
  app.add_option("--init_weights", a.init_weights, "LoRA init: default | gaussian | pissa")
      ->check(CLI::IsMember({"default", "gaussian", "pissa"}))->capture_default_str();
}

void add_schedule_options(CLI::App& app, Arguments& a) {
  app.add_option("--learning_rate", a.learning_rate, "peak learning rate (default 1e-4 for adapters, 1e-5 for full)");
  app.add_option("--num_train_epochs", a.num_train_epochs, "passes over the dataset")->capture_default_str();
  app.add_option("--max_steps", a.max_steps, "optimizer steps (overrides epochs when > 0)")->capture_default_str();
  app.add_option("--per_device_train_batch_size", a.per_device_train_batch_size, "rows per micro-batch")->capture_default_str();
  app.add_option("--per_device_eval_batch_size", a.per_device_eval_batch_size, "rows per evaluation batch")->capture_default_str();
  app.add_option("--gradient_accumulation_steps", a.gradient_accumulation_steps, "micro-batches per optimizer step")->capture_default_str();
  app.add_option("--max_grad_norm", a.max_grad_norm, "gradient clipping norm (0: off)")->capture_default_str();
  app.add_option("--weight_decay", a.weight_decay, "AdamW decoupled weight decay (not on biases and norms)")->capture_default_str();
  app.add_option("--adam_beta1", a.adam_beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--adam_beta2", a.adam_beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--adam_epsilon", a.adam_epsilon, "AdamW epsilon")->capture_default_str();
  app.add_option("--lr_scheduler_type", a.lr_scheduler_type, "cosine | linear | constant | constant_with_warmup | cosine_with_min_lr")->capture_default_str();
  app.add_option_function<std::string>(
      "--lr_scheduler_kwargs",
      [&a](const std::string& text) { a.lr_scheduler_kwargs = json_object_option("--lr_scheduler_kwargs", text); },
      "the schedule's settings as JSON (cosine_with_min_lr: '{\"min_lr_rate\": 0.1}')");
  app.add_option("--warmup_ratio", a.warmup_ratio, "share of steps spent warming up")->capture_default_str();
  app.add_option("--warmup_steps", a.warmup_steps, "warm-up steps (wins over --warmup_ratio)")->capture_default_str();
  app.add_option("--optimizer", a.optimizer, "optimizer plugin")->capture_default_str();
  app.add_option("--lorap_lr_ratio", a.lorap_lr_ratio, "LoRA+: LoRA B learning rate = lr * ratio (> 0 selects the lorap optimizer)")->capture_default_str();
  app.add_option("--use_galore", a.use_galore, "GaLore: Adam in a low-rank projection of 2-D gradients")->capture_default_str();
  app.add_option("--galore_rank", a.galore_rank, "GaLore projection rank")->capture_default_str();
  app.add_option("--galore_update_proj_gap", a.galore_update_proj_gap, "GaLore: steps between SVD refreshes of the projection")->capture_default_str();
  app.add_option("--galore_scale", a.galore_scale, "GaLore: scale of the projected-back update")->capture_default_str();
  app.add_option("--freeze_parameters", a.freeze_parameters, "freeze tuner: parameter-name prefixes to freeze");
  app.add_option("--trainable_parameters", a.trainable_parameters, "freeze tuner: parameter-name prefixes that train (the rest is frozen)");
  app.add_option("--callbacks", a.callbacks, "callback plugins to add, by name");
  app.add_option("--early_stop_interval", a.early_stop_interval, "stop after N saves without a better metric (0: off)")->capture_default_str();
  app.add_option("--loss_type", a.loss_type, "loss plugin (default cross_entropy; loss_scale with --loss_scale)");
}

void add_output_options(CLI::App& app, Arguments& a) {
  app.add_option("--logging_steps", a.logging_steps, "log every N steps")->capture_default_str();
  app.add_option("--eval_steps", a.eval_steps, "evaluate every N steps (-1: with each save)")->capture_default_str();
  app.add_option("--save_steps", a.save_steps, "save a checkpoint every N steps")->capture_default_str();
  app.add_option("--save_total_limit", a.save_total_limit, "checkpoints to keep (-1: all; the best and last are kept)")->capture_default_str();
  app.add_option("--save_only_model", a.save_only_model, "checkpoints without optimizer, scheduler and RNG state")->capture_default_str();
  app.add_option("--output_dir", a.output_dir, "where runs are written")->capture_default_str();
  app.add_option("--add_version", a.add_version, "write into output_dir/vN-YYYYMMDD-HHMMSS")->capture_default_str();
  app.add_option("--gradient_checkpointing", a.gradient_checkpointing, "recompute activations in backward to save memory")->capture_default_str();
  app.add_option("--resume_from_checkpoint", a.resume_from_checkpoint, "checkpoint folder to resume from");
  app.add_option("--resume_only_model", a.resume_only_model, "resume weights only, not optimizer and data position")->capture_default_str();
  app.add_option("--metric_for_best_model", a.metric_for_best_model, "eval metric that names the best checkpoint")->capture_default_str();
  app.add_option("--greater_is_better", a.greater_is_better, "whether a larger metric is better (default: false for loss)");
  app.add_option("--max_nan_steps", a.max_nan_steps, "non-finite losses in a row before the run stops")->capture_default_str();
}

void add_evaluation_options(CLI::App& app, Arguments& a) {
  app.add_option("--metric", a.metric, "metric plugins (sft: acc, or nlg with --predict_with_generate; lathe eval: nlg)");
  app.add_option("--predict_with_generate", a.predict_with_generate, "evaluate generated responses (nlg) instead of next-token predictions")->capture_default_str();
  app.add_option("--acc_strategy", a.acc_strategy, "acc metric: token | seq")->capture_default_str();
}

void add_training_options(CLI::App& app, Arguments& a) {
  add_evaluation_options(app, a);
  add_dataset_options(app, a);
  add_tuner_options(app, a);
  add_schedule_options(app, a);
  add_output_options(app, a);
}

void add_reward_options(CLI::App& app, Arguments& a) {
  app.add_option("--max_completion_length", a.max_completion_length, "length scale of cosine and soft_overlong rewards (tokens, or words)")->capture_default_str();
  app.add_option("--cosine_min_len_value_wrong", a.cosine_min_len_value_wrong, "cosine reward: a wrong answer of length 0")->capture_default_str();
  app.add_option("--cosine_max_len_value_wrong", a.cosine_max_len_value_wrong, "cosine reward: a wrong answer of the max length")->capture_default_str();
  app.add_option("--cosine_min_len_value_correct", a.cosine_min_len_value_correct, "cosine reward: a correct answer of length 0")->capture_default_str();
  app.add_option("--cosine_max_len_value_correct", a.cosine_max_len_value_correct, "cosine reward: a correct answer of the max length")->capture_default_str();
  app.add_option("--cosine_max_len", a.cosine_max_len, "cosine reward: the max length (0: --max_completion_length)")->capture_default_str();
  app.add_option("--repetition_n_grams", a.repetition_n_grams, "repetition reward: n-gram size")->capture_default_str();
  app.add_option("--repetition_max_penalty", a.repetition_max_penalty, "repetition reward: the penalty (<= 0) for all-repeated text")->capture_default_str();
  app.add_option("--soft_max_length", a.soft_max_length, "soft_overlong reward: where it reaches -1 (0: --max_completion_length)")->capture_default_str();
  app.add_option("--soft_cache_length", a.soft_cache_length, "soft_overlong reward: the span before --soft_max_length over which it falls")->capture_default_str();
  app.add_option("--prm_api_base", a.prm_api_base, "PRM client: OpenAI-compatible base URL, http://host:port/v1 (env LATHE_PRM_API_BASE)");
  app.add_option("--prm_api_model", a.prm_api_model, "PRM client: the judge model's name");
  app.add_option("--prm_api_key", a.prm_api_key, "PRM client: API key (env LATHE_PRM_API_KEY)");
}

void add_serving_options(CLI::App& app, Arguments& a) {
  app.add_option("--host", a.host, "address to listen on (127.0.0.1: this machine only)")->capture_default_str();
  app.add_option("--port", a.port, "TCP port")->capture_default_str();
  app.add_option("--api_key", a.api_key, "require 'Authorization: Bearer KEY' on every request");
  app.add_option("--served_model_name", a.served_model_name, "model name clients use (default: the model folder's name)");
  app.add_option("--max_body_bytes", a.max_body_bytes, "largest request body accepted")->capture_default_str();
}

void add_sampling_options(CLI::App& app, Arguments& a) {
  app.add_option("--sampler_type", a.sampler_type, "sampling strategy")->check(CLI::IsMember({"sample"}))->capture_default_str();
  app.add_option("--sampler_engine", a.sampler_engine, "local (this model) | client (an OpenAI-compatible server)")
      ->check(CLI::IsMember({"local", "client"}))->capture_default_str();
  app.add_option("--engine_kwargs_base_url", a.engine_kwargs_base_url, "client engine: base URL, http://host:port/v1");
  app.add_option("--engine_kwargs_model", a.engine_kwargs_model, "client engine: model name on the server");
  app.add_option("--engine_kwargs_api_key", a.engine_kwargs_api_key, "client engine: API key (env LATHE_API_KEY)");
  app.add_option("--num_return_sequences", a.num_return_sequences, "responses generated per query")->capture_default_str();
  app.add_option("--n_best_to_keep", a.n_best_to_keep, "responses kept per query")->capture_default_str();
  app.add_option("--orm_model", a.orm_model, "outcome reward model plugin (lathe plugins lists them)");
  app.add_option("--prm_model", a.prm_model, "process reward model plugin");
  app.add_option("--prm_threshold", a.prm_threshold, "keep responses whose normalised score is above this")->capture_default_str();
  app.add_option("--data_range", a.data_range, "BEGIN END: only these dataset rows")->expected(2);
}

}  // namespace

void add_options(CLI::App& app, Arguments& a, std::initializer_list<OptionGroup> groups) {
  for (auto group : groups) {
    switch (group) {
      case OptionGroup::Model:
        app.add_option("--model", a.model, "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
        app.add_option("--adapters", a.adapters, "adapter folders to load (PEFT format)");
        app.add_option("--template", a.template_name, "chat template (default: chosen from the model folder)");
        app.add_option("--system", a.system, "system prompt, replacing the template's default");
        app.add_option("--agent_template,--tools_prompt", a.agent_template,
                       "tools format (default: the chat template's own, else react_en)");
        app.add_option("--torch_dtype", a.torch_dtype, "parameter dtype")
            ->check(CLI::IsMember({"float32", "bfloat16"}))->capture_default_str();
        app.add_option("--max_length", a.max_length, "maximum tokens per sequence (0: the model's limit)")->capture_default_str();
        app.add_option("--seed", a.seed, "random seed (initialisation, data order, sampling)")->capture_default_str();
        app.add_option_function<std::string>(
               "--plugin_args",
               [&a](const std::string& text) {
                 a.plugin_args = json_object_option("--plugin_args", text);
                 for (const auto& [name, settings] : a.plugin_args.items()) {
                   if (!settings.is_object())
                     throw CLI::ValidationError("--plugin_args", "'" + name + "' is not an object: each plugin's settings go "
                                                "under its name, e.g. '{\"custom_loss\": {\"focal_gamma\": 2}}'");
                 }
               },
               "each plugin's settings under its name, as JSON (e.g. '{\"custom_loss\": {\"focal_gamma\": 2}}')");
        break;
      case OptionGroup::Generation:
        app.add_option("--max_new_tokens", a.max_new_tokens, "tokens to generate at most")->capture_default_str();
        app.add_option("--temperature", a.temperature, "sampling temperature (0: greedy)")->capture_default_str();
        app.add_option("--top_k", a.top_k, "sample among the k likeliest tokens (0: off)")->capture_default_str();
        app.add_option("--top_p", a.top_p, "nucleus sampling mass (1: off)")->capture_default_str();
        app.add_option("--min_p", a.min_p, "drop tokens less likely than min_p times the likeliest (0: off)")->capture_default_str();
        app.add_option("--repetition_penalty", a.repetition_penalty, "penalty on repeated tokens (1: off)")->capture_default_str();
        app.add_option("--presence_penalty", a.presence_penalty, "subtracted from tokens already generated (0: off)")->capture_default_str();
        app.add_option("--frequency_penalty", a.frequency_penalty, "subtracted per occurrence of a generated token (0: off)")->capture_default_str();
        app.add_option("--stop", a.stop, "stop strings: a response ends before the first one");
        app.add_option("--logprobs", a.logprobs, "record each generated token's log-probability")->capture_default_str();
        app.add_option("--top_logprobs", a.top_logprobs, "and this many likeliest alternatives")->capture_default_str();
        app.add_option("--stream", a.stream, "stream tokens as they are generated")->capture_default_str();
        app.add_option("--max_batch_size", a.max_batch_size, "sequences decoded together (deploy: concurrent requests; more wait their turn)")->capture_default_str();
        break;
      case OptionGroup::Data:
        app.add_option("--dataset", a.dataset, "training datasets (.jsonl/.json/.csv; path#N samples N rows)");
        app.add_option("--val_dataset", a.val_dataset, "validation / inference datasets");
        app.add_option("--result_path", a.result_path, "where batch inference writes its jsonl results");
        break;
      case OptionGroup::Training:
        add_training_options(app, a);
        break;
      case OptionGroup::Reward:
        add_reward_options(app, a);
        break;
      case OptionGroup::Evaluation:
        add_evaluation_options(app, a);
        break;
      case OptionGroup::Serving:
        add_serving_options(app, a);
        break;
      case OptionGroup::Sampling:
        add_sampling_options(app, a);
        break;
    }
  }
}

namespace {

// A YAML value as JSON: mappings and lists as they are, scalars as numbers, booleans or null where
// they read as such, else strings.
nlohmann::json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    auto object = nlohmann::json::object();
    for (const auto& entry : node) object[entry.first.as<std::string>()] = yaml_to_json(entry.second);
    return object;
  }
  if (node.IsSequence()) {
    auto array = nlohmann::json::array();
    for (const auto& item : node) array.push_back(yaml_to_json(item));
    return array;
  }
  if (node.IsNull() || !node.IsScalar()) return nullptr;
  const auto text = node.as<std::string>();
  if (node.Tag() != "!") {  // an unquoted scalar
    if (text == "true" || text == "false" || text == "null") return nlohmann::json::parse(text);
    const auto number = nlohmann::json::parse(text, nullptr, false);
    if (number.is_number()) return number;
  }
  return text;
}

// A config value as command-line words: lists give several words, scalars one, a mapping (the
// value of a JSON option such as plugin_args) its JSON text.
std::vector<std::string> config_words(const YAML::Node& node) {
  std::vector<std::string> words;
  if (node.IsMap()) {
    words.push_back(yaml_to_json(node).dump());
  } else if (node.IsSequence()) {
    for (const auto& item : node) words.push_back(item.as<std::string>());
  } else if (node.IsScalar()) {
    words.push_back(node.as<std::string>());
  }
  return words;
}

// Turns a --config file into "--key value..." words for the keys the command line leaves unset.
std::vector<std::string> config_arguments(const std::string& path, const std::set<std::string>& given) {
  YAML::Node root;
  try {
    root = YAML::Load(read_file(path));  // JSON is a subset of YAML
  } catch (const YAML::Exception& error) {
    fail("{}: invalid config file: {}", path, error.what());
  }
  if (!root.IsMap()) fail("{}: a config file must be a mapping of argument names to values", path);
  std::vector<std::string> words;
  for (const auto& entry : root) {
    const auto key = entry.first.as<std::string>();
    if (given.count(key)) continue;
    words.push_back("--" + key);
    for (auto& word : config_words(entry.second)) words.push_back(std::move(word));
  }
  return words;
}

}  // namespace

int parse(CLI::App& app, const Args& args) {
  std::string config_path;
  std::vector<std::string> external_plugins;
  app.add_option("--config", config_path, "YAML or JSON file of arguments (the command line wins)");
  app.add_option("--external_plugins", external_plugins,
                 "plugin shared libraries (.so) or C++ files (.cpp, compiled and cached) to load first");
  std::set<std::string> given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) config_path = args[i + 1];
    if (args[i].rfind("--", 0) == 0) given.insert(args[i].substr(2, args[i].find('=') - 2));
  }
  std::vector<std::string> words;
  if (!config_path.empty()) words = config_arguments(config_path, given);
  words.insert(words.end(), args.begin(), args.end());
  std::reverse(words.begin(), words.end());  // CLI11 takes a reversed vector
  try {
    app.parse(words);
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return 0;
  } catch (const CLI::ParseError& error) {
    fmt::print(stderr, "lathe {}: error: {}\nRun 'lathe {} --help' for the arguments.\n", app.get_name(),
               error.what(), app.get_name());
    return 2;
  }
  load_external_plugins(external_plugins);
  return -1;
}

}  // namespace cli
}  // namespace lathe
