#pragma once
// One Arguments type for every command, with SWIFT's names and defaults. Parsed from the command
// line and from --config files (YAML or JSON, same keys; the command line wins). Plugins read it;
// their own settings travel in plugin_args, each plugin's under its name.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct Arguments {
  // Model
  std::string model;                  // Hugging Face model folder
  std::vector<std::string> adapters;  // adapter folders (PEFT format)
  std::string template_name;          // --template; empty: chosen from the model folder
  std::optional<std::string> system;  // overrides the template's default system
  std::string agent_template;         // --agent_template (--tools_prompt); empty: the template's default
  std::string torch_dtype = "float32";  // float32 | bfloat16
  int64_t max_length = 0;             // 0: the model's max_position_embeddings

  // Generation
  int64_t max_new_tokens = 512;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  std::vector<std::string> stop;      // stop strings
  bool logprobs = false;
  int64_t top_logprobs = 0;
  int64_t seed = 42;
  bool stream = true;
  int64_t max_batch_size = 8;

  // Serving (`lathe deploy`)
  std::string host = "127.0.0.1";
  int64_t port = 8000;
  std::string api_key;                // empty: no authentication
  std::string served_model_name;      // empty: the model folder's name
  int64_t max_body_bytes = 8 << 20;   // larger request bodies get 413

  // Sampling and evaluation (`lathe sample`, `lathe eval`)
  std::string sampler_type = "sample";
  std::string sampler_engine = "local";  // local | client
  std::string engine_kwargs_base_url;    // --sampler_engine client: http://host:port/v1
  std::string engine_kwargs_model;       // --sampler_engine client: served model name
  std::string engine_kwargs_api_key;     // env LATHE_API_KEY
  int64_t num_return_sequences = 64;
  int64_t n_best_to_keep = 5;
  std::string orm_model;                 // ORM plugin name; empty: none
  std::string prm_model;                 // PRM plugin name; empty: none
  double prm_threshold = 0.0;
  std::vector<int64_t> data_range;       // two numbers: rows [begin, end) of the dataset
  std::vector<std::string> metric;       // --metric: metric plugins for eval / training evaluation
  bool predict_with_generate = false;

  // Data
  std::vector<std::string> dataset;      // path, or path#N to sample N rows
  std::vector<std::string> val_dataset;
  std::string result_path;
  double split_dataset_ratio = 0.0;      // share of --dataset held out for evaluation
  std::string truncation_strategy = "delete";  // delete | left | right
  bool packing = false;
  bool padding_free = false;
  int64_t dataset_num_proc = 0;          // 0: all cores
  bool strict = true;                    // false: skip bad rows and count them
  bool streaming = false;                // read and encode rows while training (needs max_steps)
  std::string loss_scale = "default";
  std::vector<std::string> model_name;   // self-cognition: the model's name, Chinese then English
  std::vector<std::string> model_author; // self-cognition: the author, Chinese then English

  // Training
  std::string train_type = "lora";       // full | lora | ...
  int64_t lora_rank = 8;
  double lora_alpha = 32;
  double lora_dropout = 0.05;
  std::vector<std::string> target_modules{"all-linear"};
  bool use_rslora = false;
  bool use_dora = false;
  std::string init_weights = "default";  // default | gaussian | pissa
  std::optional<double> learning_rate;   // default 1e-4 for adapters, 1e-5 for full
  double num_train_epochs = 3;
  int64_t max_steps = -1;
  int64_t per_device_train_batch_size = 1;
  int64_t per_device_eval_batch_size = 1;
  int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;
  double weight_decay = 0.1;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.95;
  double adam_epsilon = 1e-8;
  std::string lr_scheduler_type = "cosine";
  nlohmann::json lr_scheduler_kwargs = nlohmann::json::object();  // cosine_with_min_lr: {"min_lr_rate": r}
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  int64_t logging_steps = 5;
  int64_t eval_steps = -1;               // -1: same as save_steps
  int64_t save_steps = 500;
  int64_t save_total_limit = -1;
  bool save_only_model = false;
  std::string output_dir = "output";     // `lathe sample` defaults to sample_output
  bool add_version = true;
  bool gradient_checkpointing = false;
  std::string resume_from_checkpoint;
  bool resume_only_model = false;
  std::string loss_type;                 // empty: cross_entropy, or loss_scale when --loss_scale is set
  std::string optimizer = "default";
  double lorap_lr_ratio = 0;              // > 0: LoRA+ (lorap optimizer), LoRA B rate = lr * ratio
  bool use_galore = false;               // GaLore optimizer (low-rank projected Adam)
  int64_t galore_rank = 128;
  int64_t galore_update_proj_gap = 50;
  double galore_scale = 1.0;
  std::vector<std::string> freeze_parameters;     // freeze tuner: parameter-name prefixes to freeze
  std::vector<std::string> trainable_parameters;  // freeze tuner: prefixes that train (rest frozen)
  std::string acc_strategy = "token";    // acc metric: token | seq
  std::vector<std::string> callbacks;    // --callbacks: callback plugins by name
  int64_t early_stop_interval = 0;       // > 0: add early_stop with this patience (in saves)
  std::string task_type = "causal_lm";
  std::string metric_for_best_model = "loss";
  std::optional<bool> greater_is_better;
  int64_t max_nan_steps = 10;            // consecutive non-finite losses before the run stops
  bool pretraining = false;              // set by `lathe pt`

  // Rewards (docs/plugins.md: ORM and PRM plugins)
  int64_t max_completion_length = 1024;        // lengths are in tokens, or words without a tokenizer
  double cosine_min_len_value_wrong = -0.5;    // cosine: reward of a wrong answer of length 0
  double cosine_max_len_value_wrong = 0.0;     // ... and of one of cosine_max_len
  double cosine_min_len_value_correct = 1.0;   // cosine: reward of a correct answer of length 0
  double cosine_max_len_value_correct = 0.5;   // ... and of one of cosine_max_len
  int64_t cosine_max_len = 0;                  // 0: max_completion_length
  int64_t repetition_n_grams = 3;
  double repetition_max_penalty = -1.0;        // SWIFT's sign: the reward is scaling * this (<= 0)
  int64_t soft_max_length = 0;                 // soft_overlong; 0: max_completion_length
  int64_t soft_cache_length = 0;               // soft_overlong: the span over which it falls to -1
  std::string prm_api_base;                    // PRM client: http://host:port/v1 (env LATHE_PRM_API_BASE)
  std::string prm_api_model;
  std::string prm_api_key;                     // env LATHE_PRM_API_KEY

  double effective_learning_rate() const { return learning_rate.value_or(train_type == "full" ? 1e-5 : 1e-4); }

  // Each plugin's own settings, under its name: {"custom_loss": {"focal_gamma": 2}} (PluginContext).
  nlohmann::json plugin_args = nlohmann::json::object();

  nlohmann::json to_json() const;
};

}  // namespace lathe

LATHE_API_END
