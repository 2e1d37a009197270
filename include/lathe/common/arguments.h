#pragma once
// One Arguments type for every command, with SWIFT's names and defaults. Every argument is declared
// once, in LATHE_ARGUMENTS below: the struct's fields, the command-line options (and so --config
// files, whose keys are the option names), args.json and its reading back all come from that table.
// Plugins read Arguments; their own settings travel in plugin_args, each plugin's under its name.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Which commands offer an argument: each command adds the options of the groups it uses.
enum class ArgumentGroup {
  Model,       // every command that loads a model
  Plugins,     // every command
  Ignored,     // every command: SWIFT's arguments without an effect here (ArgumentRule::no_effect)
  Generation,  // infer, deploy, eval, sample, sft (generated evaluation)
  Serving,     // deploy
  Data,        // --dataset / --val_dataset
  Dataset,     // how training rows are read and encoded
  Tuner,
  Schedule,
  Checkpoints,
  Output,      // sft, pt, eval, sample, export
  Evaluation,  // sft, eval
  Reward,      // ORM / PRM settings (sample)
  Sampling,    // sample
  Export,
  Alignment,   // rlhf
};

// What a value must satisfy beyond its type, and how it is named.
struct ArgumentRule {
  std::string_view key;      // flag and JSON key, when they differ from the field's name
  std::string_view alias;    // a second flag
  std::string_view choices;  // "a|b|c": one of these
  double minimum = -HUGE_VAL;
  double maximum = HUGE_VAL;
  std::size_t count = 0;          // a list of exactly this many values (0: any)
  bool secret = false;            // never written to args.json
  bool command_line = true;       // false: set by the program (`lathe pt`), no flag
  bool settings_by_name = false;  // a JSON object whose values are objects (plugin_args)
  // SWIFT's arguments that mean nothing here: accepted, and a value other than the default prints
  // this reason as a notice, so a SWIFT command line runs unchanged and says what it ignored.
  std::string_view no_effect;
};

struct ArgumentInfo {
  ArgumentGroup group;
  std::string_view key;
  std::string_view help;
  ArgumentRule rule;
};

constexpr ArgumentInfo describe_argument(ArgumentGroup group, std::string_view field, std::string_view help,
                                         ArgumentRule rule) {
  return {group, rule.key.empty() ? field : rule.key, help, rule};
}

// X(group, type, field, default, rule, help). Lists take several words on the command line
// (`--dataset a.jsonl b.jsonl`) and arrays in JSON; an unset optional is null in args.json.
#define LATHE_ARGUMENTS(X)                                                                                              \
  X(Model, std::string, model, {}, {}, "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)")        \
  X(Model, std::vector<std::string>, adapters, {}, {}, "adapter folders to load (PEFT format)")                         \
  X(Model, std::string, template_name, {}, {.key = "template"}, "chat template (default: chosen from the model folder)") \
  X(Model, std::optional<std::string>, system, {}, {}, "system prompt, replacing the template's default")               \
  X(Model, std::string, agent_template, {}, {.alias = "tools_prompt"},                                                  \
    "tools format (default: the chat template's own, else react_en)")                                                   \
  X(Model, std::string, torch_dtype, "float32", {.choices = "float32|bfloat16"}, "parameter dtype")                     \
  X(Model, std::string, weight_dtype, "auto", {.choices = "auto|float32|bfloat16|float16"},                              \
    "dtype the frozen projection matrices are held in under --torch_dtype float32, computed with in float32 (auto: "  \
    "the checkpoint's own 16-bit dtype where nothing rewrites them: inference, LoRA)")                                  \
  X(Model, int64_t, max_length, 0, {}, "maximum tokens per sequence (0: the model's limit)")                            \
  X(Model, int64_t, seed, 42, {}, "random seed (initialisation, data order, sampling)")                                 \
  X(Model, bool, load_args, true, {},                                                                                   \
    "with --adapters and no --model: read the base model, template, system, agent template, dtype and "               \
    "max_length from the checkpoint's args.json (sft and pt: false)")                                                   \
  X(Model, bool, load_data_args, false, {}, "with load_args: read the data arguments (dataset, val_dataset, ...) too")   \
  X(Model, nlohmann::json, plugin_args, nlohmann::json::object(), {.settings_by_name = true},                           \
    "each plugin's settings under its name, as JSON (e.g. '{\"custom_loss\": {\"focal_gamma\": 2}}')")                   \
  X(Plugins, std::vector<std::string>, external_plugins, {}, {},                                                        \
    "plugin shared libraries (.so) or C++ files (.cpp, compiled and cached) to load first")                             \
                                                                                                                        \
  X(Generation, int64_t, max_new_tokens, 512, {}, "tokens to generate at most")                                         \
  X(Generation, double, temperature, 0.0, {}, "sampling temperature (0: greedy)")                                       \
  X(Generation, int64_t, top_k, 0, {}, "sample among the k likeliest tokens (0: off)")                                  \
  X(Generation, double, top_p, 1.0, {}, "nucleus sampling mass (1: off)")                                               \
  X(Generation, double, min_p, 0.0, {}, "drop tokens less likely than min_p times the likeliest (0: off)")              \
  X(Generation, double, repetition_penalty, 1.0, {}, "penalty on repeated tokens (1: off)")                             \
  X(Generation, double, presence_penalty, 0.0, {}, "subtracted from tokens already generated (0: off)")                 \
  X(Generation, double, frequency_penalty, 0.0, {}, "subtracted per occurrence of a generated token (0: off)")          \
  X(Generation, std::vector<std::string>, stop, {}, {}, "stop strings: a response ends before the first one")           \
  X(Generation, bool, logprobs, false, {}, "record each generated token's log-probability")                             \
  X(Generation, int64_t, top_logprobs, 0, {}, "and this many likeliest alternatives")                                   \
  X(Generation, bool, stream, true, {}, "stream tokens as they are generated")                                          \
  X(Generation, int64_t, max_batch_size, 8, {},                                                                         \
    "sequences decoded together (deploy: concurrent requests; more wait their turn)")                                   \
                                                                                                                        \
  X(Serving, std::string, host, "127.0.0.1", {}, "address to listen on (127.0.0.1: this machine only)")                 \
  X(Serving, int64_t, port, 8000, {}, "TCP port (0: a free one)")                                                       \
  X(Serving, std::string, api_key, {}, {.secret = true}, "require 'Authorization: Bearer KEY' on every request")       \
  X(Serving, std::string, served_model_name, {}, {}, "model name clients use (default: the model folder's name)")       \
  X(Serving, int64_t, max_body_bytes, 8 << 20, {}, "largest request body accepted (larger ones get 413)")               \
                                                                                                                        \
  X(Data, std::vector<std::string>, dataset, {}, {}, "training datasets (.jsonl/.json/.csv; path#N samples N rows)")    \
  X(Data, std::vector<std::string>, val_dataset, {}, {.alias = "eval_dataset"}, "validation / inference datasets")       \
  X(Data, std::string, result_path, {}, {}, "where batch inference and eval write their results")                      \
                                                                                                                        \
  X(Dataset, double, split_dataset_ratio, 0.0, (ArgumentRule{.minimum = 0, .maximum = 1}),                              \
    "share of --dataset held out for evaluation")                                                                       \
  X(Dataset, bool, dataset_shuffle, true, {}, "shuffle the rows before --split_dataset_ratio holds some out (false: the last ones)") \
  X(Dataset, bool, train_dataloader_shuffle, true, {}, "train in a new seeded order each epoch (false: in dataset order)") \
  X(Dataset, std::string, truncation_strategy, "delete", {.choices = "delete|left|right"},                              \
    "over-long rows: delete them, or cut on the left or right")                                                         \
  X(Dataset, bool, packing, false, {}, "pack rows into sequences of max_length (attention kept within each row)")       \
  X(Dataset, bool, padding_free, false, {}, "concatenate each batch's rows without padding")                             \
  X(Dataset, int64_t, dataset_num_proc, 0, {}, "threads that tokenize the dataset (0: all cores)")                      \
  X(Dataset, int64_t, dataloader_num_workers, 0, {},                                                                    \
    "SWIFT's data-loader workers: here the tokenizing threads when --dataset_num_proc is 0")                          \
  X(Dataset, bool, strict, true, {}, "stop at the first bad row (false: skip and count bad rows)")                      \
  X(Dataset, bool, streaming, false, {},                                                                                \
    "read and tokenize rows during training (datasets larger than memory; needs --max_steps)")                          \
  X(Dataset, std::string, loss_scale, "default", {},                                                                    \
    "which tokens are trained and how strongly: default | last_round | all, plus '+name' parts")                        \
  X(Dataset, std::vector<std::string>, model_name, {}, {},                                                              \
    "self-cognition: the model's name, Chinese then English (e.g. 小黄 'Xiao Huang')")                                  \
  X(Dataset, std::vector<std::string>, model_author, {}, {}, "self-cognition: the model's author, Chinese then English") \
                                                                                                                        \
  X(Tuner, std::string, train_type, "lora", {.alias = "tuner_type"},                                                    \
    "tuner: full | lora | ... (ms-swift 4 names it --tuner_type; lathe plugins lists them)")                           \
  X(Tuner, int64_t, lora_rank, 8, {}, "LoRA rank")                                                                      \
  X(Tuner, double, lora_alpha, 32, {}, "LoRA alpha (scaling = alpha / rank)")                                           \
  X(Tuner, double, lora_dropout, 0.05, {}, "dropout on the LoRA input")                                                 \
  X(Tuner, std::vector<std::string>, target_modules, {"all-linear"}, {}, "all-linear, module-name suffixes, or one regex") \
  X(Tuner, bool, use_rslora, false, {}, "rank-stabilised scaling alpha / sqrt(rank)")                                   \
  X(Tuner, bool, use_dora, false, {}, "DoRA: learn a magnitude vector per output")                                      \
  X(Tuner, std::string, init_weights, "default", {.choices = "default|gaussian|pissa"}, "LoRA init")                    \
  X(Tuner, std::vector<std::string>, freeze_parameters, {}, {}, "freeze tuner: parameter-name prefixes to freeze")     \
  X(Tuner, std::vector<std::string>, trainable_parameters, {}, {},                                                      \
    "freeze tuner: parameter-name prefixes that train (the rest is frozen)")                                            \
                                                                                                                        \
  X(Schedule, std::optional<double>, learning_rate, {}, {}, "peak learning rate (default 1e-4 for adapters, 1e-5 for full)") \
  X(Schedule, double, num_train_epochs, 3, {}, "passes over the dataset")                                               \
  X(Schedule, int64_t, max_steps, -1, {}, "optimizer steps (overrides epochs when > 0)")                                \
  X(Schedule, int64_t, per_device_train_batch_size, 1, {}, "rows per micro-batch")                                      \
  X(Schedule, int64_t, per_device_eval_batch_size, 1, {}, "rows per evaluation batch")                                  \
  X(Schedule, int64_t, gradient_accumulation_steps, 1, {}, "micro-batches per optimizer step")                          \
  X(Schedule, double, max_grad_norm, 1.0, {}, "gradient clipping norm (0: off)")                                        \
  X(Schedule, double, weight_decay, 0.1, {}, "AdamW decoupled weight decay (not on biases and norms)")                  \
  X(Schedule, double, adam_beta1, 0.9, {}, "AdamW beta1")                                                               \
  X(Schedule, double, adam_beta2, 0.95, {}, "AdamW beta2")                                                              \
  X(Schedule, double, adam_epsilon, 1e-8, {}, "AdamW epsilon")                                                          \
  X(Schedule, std::string, lr_scheduler_type, "cosine", {},                                                             \
    "cosine | linear | constant | constant_with_warmup | cosine_with_min_lr")                                          \
  X(Schedule, nlohmann::json, lr_scheduler_kwargs, nlohmann::json::object(), {},                                        \
    "the schedule's settings as JSON (cosine_with_min_lr: '{\"min_lr_rate\": 0.1}')")                                   \
  X(Schedule, double, warmup_ratio, 0.0, {}, "share of steps spent warming up")                                         \
  X(Schedule, int64_t, warmup_steps, 0, {}, "warm-up steps (wins over --warmup_ratio)")                                 \
  X(Schedule, std::string, optimizer, "default", {}, "optimizer plugin")                                                \
  X(Schedule, double, lorap_lr_ratio, 0, {}, "LoRA+: LoRA B learning rate = lr * ratio (> 0 selects the lorap optimizer)") \
  X(Schedule, bool, use_galore, false, {}, "GaLore: Adam in a low-rank projection of 2-D gradients")                    \
  X(Schedule, int64_t, galore_rank, 128, {}, "GaLore projection rank")                                                  \
  X(Schedule, int64_t, galore_update_proj_gap, 50, {}, "GaLore: steps between SVD refreshes of the projection")         \
  X(Schedule, double, galore_scale, 1.0, {}, "GaLore: scale of the projected-back update")                              \
  X(Schedule, std::vector<std::string>, callbacks, {}, {}, "callback plugins to add, by name")                          \
  X(Schedule, int64_t, early_stop_interval, 0, {}, "stop after N saves without a better metric (0: off)")               \
  X(Schedule, std::vector<std::string>, loss_type, {}, {},                                                              \
    "loss plugin (default cross_entropy; loss_scale with --loss_scale); rlhf: the preference loss, for dpo a list "    \
    "mixed by --loss_weights")                                                                                          \
  X(Schedule, std::string, task_type, "causal_lm", {.choices = "causal_lm|embedding"},                                  \
    "causal_lm: next-token prediction; embedding: last-token embeddings trained with an embedding loss")               \
  X(Schedule, int64_t, max_nan_steps, 10, {}, "non-finite losses in a row before the run stops")                        \
  X(Schedule, bool, pretraining, false, {.command_line = false}, "set by `lathe pt`")                                   \
  X(Schedule, bool, alignment, false, {.command_line = false}, "set by `lathe rlhf`")                                  \
                                                                                                                        \
  X(Checkpoints, int64_t, logging_steps, 5, {}, "log every N steps")                                                    \
  X(Checkpoints, int64_t, eval_steps, -1, {}, "evaluate every N steps (-1: with each save)")                            \
  X(Checkpoints, int64_t, save_steps, 500, {}, "save a checkpoint every N steps")                                       \
  X(Checkpoints, std::string, save_strategy, "steps", {.choices = "steps|epoch|no"},                                    \
    "when to save: every --save_steps and at the end, at each epoch's end, or never")                                   \
  X(Checkpoints, std::string, eval_strategy, {}, (ArgumentRule{.alias = "evaluation_strategy", .choices = "|steps|epoch|no"}),         \
    "when to evaluate (default: as --save_strategy)")                                                                   \
  X(Checkpoints, int64_t, save_total_limit, -1, {}, "checkpoints to keep (-1: all; the best and last are kept)")        \
  X(Checkpoints, bool, save_only_model, false, {}, "checkpoints without optimizer, scheduler and RNG state")            \
  X(Checkpoints, bool, add_version, true, {}, "write into output_dir/vN-YYYYMMDD-HHMMSS")                               \
  X(Checkpoints, bool, gradient_checkpointing, false, {}, "recompute activations in backward to save memory")           \
  X(Checkpoints, std::string, resume_from_checkpoint, {}, {}, "checkpoint folder to resume from")                       \
  X(Checkpoints, bool, resume_only_model, false, {}, "resume weights only, not optimizer and data position")            \
  X(Checkpoints, std::optional<std::string>, metric_for_best_model, {}, {},                                             \
    "eval metric that names the best checkpoint (default: loss; rouge-l with --predict_with_generate)")                 \
  X(Checkpoints, std::optional<bool>, greater_is_better, {}, {},                                                        \
    "whether a larger metric is better (default: false for metrics ending in loss)")                                    \
                                                                                                                        \
  X(Output, std::vector<std::string>, report_to, {"none"}, {},                                                         \
    "experiment trackers: tensorboard (event files in <run>/runs), all; wandb, swanlab, mlflow: not written (a notice)") \
  X(Output, std::string, output_dir, "output", {},                                                                      \
    "where results go (sft/pt: runs; sample: sample.jsonl; eval: eval_report.json; export: the model)")                 \
                                                                                                                        \
  X(Evaluation, std::vector<std::string>, metric, {}, {},                                                               \
    "metric plugins (sft: acc, or nlg with --predict_with_generate; lathe eval: nlg)")                                  \
  X(Evaluation, bool, predict_with_generate, false, {},                                                                 \
    "evaluate generated responses (nlg) instead of next-token predictions")                                            \
  X(Evaluation, std::string, acc_strategy, "token", {.choices = "token|seq"}, "acc metric: per token or per sequence")   \
                                                                                                                        \
  X(Reward, int64_t, max_completion_length, 1024, {},                                                                   \
    "length scale of cosine and soft_overlong rewards (tokens, or words without a tokenizer)")                          \
  X(Reward, double, cosine_min_len_value_wrong, -0.5, {}, "cosine reward: a wrong answer of length 0")                  \
  X(Reward, double, cosine_max_len_value_wrong, 0.0, {}, "cosine reward: a wrong answer of the max length")             \
  X(Reward, double, cosine_min_len_value_correct, 1.0, {}, "cosine reward: a correct answer of length 0")               \
  X(Reward, double, cosine_max_len_value_correct, 0.5, {}, "cosine reward: a correct answer of the max length")         \
  X(Reward, int64_t, cosine_max_len, 0, {}, "cosine reward: the max length (0: --max_completion_length)")               \
  X(Reward, int64_t, repetition_n_grams, 3, {}, "repetition reward: n-gram size")                                       \
  X(Reward, double, repetition_max_penalty, -1.0, {},                                                                   \
    "repetition reward: the penalty (<= 0) for all-repeated text (SWIFT's sign)")                                       \
  X(Reward, int64_t, soft_max_length, 0, {}, "soft_overlong reward: where it reaches -1 (0: --max_completion_length)")  \
  X(Reward, int64_t, soft_cache_length, 0, {},                                                                          \
    "soft_overlong reward: the span before --soft_max_length over which it falls")                                      \
  X(Reward, std::string, prm_api_base, {}, {},                                                                          \
    "PRM client: OpenAI-compatible base URL, http://host:port/v1 (env LATHE_PRM_API_BASE)")                             \
  X(Reward, std::string, prm_api_model, {}, {}, "PRM client: the judge model's name")                                   \
  X(Reward, std::string, prm_api_key, {}, {.secret = true}, "PRM client: API key (env LATHE_PRM_API_KEY)")              \
                                                                                                                        \
  X(Sampling, std::string, sampler_type, "sample", {}, "sampling strategy: sample (SWIFT's mcts and distill are not built)") \
  X(Sampling, std::string, sampler_engine, "local", {.choices = "local|pt|client"},                                     \
    "local or pt (this model, Lathe's engine) | client (an OpenAI-compatible server)")                                 \
  X(Sampling, std::string, engine_kwargs_base_url, {}, {}, "client engine: base URL, http://host:port/v1")              \
  X(Sampling, std::string, engine_kwargs_model, {}, {}, "client engine: model name on the server")                      \
  X(Sampling, std::string, engine_kwargs_api_key, {}, {.secret = true}, "client engine: API key (env LATHE_API_KEY)")   \
  X(Sampling, int64_t, num_return_sequences, 64, {}, "responses generated per query")                                   \
  X(Sampling, int64_t, n_best_to_keep, 5, {}, "responses kept per query")                                               \
  X(Sampling, std::string, orm_model, {}, {}, "outcome reward model plugin (lathe plugins lists them)")                 \
  X(Sampling, std::string, prm_model, {}, {}, "process reward model plugin")                                            \
  X(Sampling, double, prm_threshold, 0.0, {}, "keep responses whose normalised score is above this")                    \
  X(Sampling, std::vector<int64_t>, data_range, {}, {.count = 2}, "BEGIN END: only these dataset rows")                 \
                                                                                                                        \
  X(Export, bool, merge_lora, false, {}, "fold the adapters into the weights (export: before writing; infer, deploy: on loading)") \
  X(Export, bool, to_gguf, false, {},                                                                                   \
    "export: write a GGUF file for llama.cpp and ollama, adapters merged first (--output_dir: a .gguf name, or a "     \
    "folder that gets model-<gguf_type>.gguf)")                                                                         \
  X(Export, std::string, gguf_type, "f16", {.choices = "f32|f16|bf16|q8_0"},                                            \
    "GGUF weight type (llama.cpp's --outtype); norms and biases stay f32")                                              \
                                                                                                                        \
  X(Alignment, std::string, rlhf_type, "dpo", {.choices = "dpo|cpo|simpo|orpo|kto|rm|grpo"},                            \
    "preference alignment: dpo, cpo, simpo, orpo or kto; rm trains a reward model; grpo learns from rewards")           \
  X(Alignment, std::optional<double>, beta, {}, {},                                                                     \
    "strength of the preference (default 0.1; simpo 2.0); orpo: the odds-ratio weight lambda")                          \
  X(Alignment, std::vector<double>, loss_weights, {}, {}, "dpo: one weight per --loss_type entry (a mix)")              \
  X(Alignment, double, label_smoothing, 0.0, (ArgumentRule{.minimum = 0, .maximum = 0.5}),                              \
    "dpo, cpo: the assumed share of flipped preference labels")                                                         \
  X(Alignment, std::optional<double>, rpo_alpha, {}, {}, "dpo: add rpo_alpha times the chosen side's NLL (RPO)")        \
  X(Alignment, std::optional<double>, ld_alpha, {}, (ArgumentRule{.minimum = 0, .maximum = 1}),                         \
    "dpo: weight of the tokens past the shorter side's length (LD-DPO)")                                                \
  X(Alignment, double, discopop_tau, 0.05, {}, "dpo discopop loss: the temperature tau")                                \
  X(Alignment, double, cpo_alpha, 1.0, {}, "cpo, simpo: weight of the chosen side's NLL (0: pure SimPO)")               \
  X(Alignment, double, simpo_gamma, 1.0, {}, "simpo: the target reward margin gamma")                                   \
  X(Alignment, double, desirable_weight, 1.0, {}, "kto: weight of the desirable rows' losses")                          \
  X(Alignment, double, undesirable_weight, 1.0, {}, "kto: weight of the undesirable rows' losses")                      \
  X(Alignment, std::optional<double>, center_rewards_coefficient, {}, (ArgumentRule{.minimum = 0}),                     \
    "rm: weight of the mean squared sum of the pair's rewards, which keeps them centred on 0 (0.01 suggested)")         \
  X(Alignment, std::string, ref_model, {}, {},                                                                          \
    "dpo, kto: the reference model folder (default: --model; LoRA runs use the base with the adapters off)")            \
  X(Alignment, std::vector<std::string>, ref_adapters, {}, {},                                                          \
    "dpo, kto: an adapter on the reference (the SFT-then-DPO recipe: --adapters SFT --ref_adapters SFT)")               \
  X(Alignment, int64_t, num_generations, 8, (ArgumentRule{.minimum = 2}),                                               \
    "grpo: completions per prompt (the group)")                                                                         \
  X(Alignment, std::optional<int64_t>, num_generations_eval, {}, {},                                                    \
    "grpo: completions per evaluation prompt (default --num_generations)")                                              \
  X(Alignment, std::vector<std::string>, reward_funcs, {}, {},                                                          \
    "grpo: outcome reward plugins scoring each completion (lathe plugins lists them)")                                  \
  X(Alignment, std::vector<double>, reward_weights, {}, {},                                                             \
    "grpo: one weight per reward function, then per reward model (default 1 each)")                                     \
  X(Alignment, std::vector<std::string>, reward_model, {}, {},                                                          \
    "grpo: reward-model folders (sequence classifiers, e.g. from --rlhf_type rm)")                                      \
  X(Alignment, std::vector<std::string>, reward_model_plugin, {}, {},                                                   \
    "grpo: how each reward model scores (default: default)")                                                            \
  X(Alignment, double, epsilon, 0.2, (ArgumentRule{.minimum = 0}),                                                      \
    "grpo: the ratio is clipped to [1 - epsilon, 1 + epsilon_high]")                                                    \
  X(Alignment, std::optional<double>, epsilon_high, {}, {},                                                             \
    "grpo: the upper clip (default --epsilon)")                                                                         \
  X(Alignment, std::optional<double>, delta, {}, {},                                                                    \
    "grpo: also bound the ratio above by delta (two-sided clipping)")                                                   \
  X(Alignment, std::string, advantage_estimator, "grpo", {.choices = "grpo|rloo|reinforce_plus_plus"},                  \
    "grpo: how rewards become advantages")                                                                              \
  X(Alignment, std::optional<std::string>, scale_rewards, {}, {.choices = "group|batch|none"},                          \
    "grpo: the std advantages are divided by (default per estimator: group, none, batch)")                              \
  X(Alignment, std::optional<bool>, kl_in_reward, {}, {},                                                               \
    "grpo: subtract beta times the KL from the reward instead of adding it to the loss (default: rloo, reinforce_plus_plus)")\
  X(Alignment, std::string, importance_sampling_level, "token", {.choices = "token|sequence|sequence_token"},           \
    "grpo: the ratio per token or per sequence (GSPO)")                                                                 \
  X(Alignment, int64_t, num_iterations, 1, (ArgumentRule{.minimum = 1}),                                                \
    "grpo: optimizer steps on each batch of rollouts")                                                                  \
  X(Alignment, std::optional<int64_t>, steps_per_generation, {}, {},                                                    \
    "grpo: micro-steps one rollout batch serves (default --gradient_accumulation_steps)")                               \
  X(Alignment, std::optional<int64_t>, generation_batch_size, {}, {},                                                   \
    "grpo: completions per rollout batch (default batch x steps_per_generation)")                                       \
  X(Alignment, bool, dynamic_sample, false, {},                                                                         \
    "grpo: replace groups whose rewards are all equal with new prompts (DAPO)")                                         \
  X(Alignment, int64_t, max_resample_times, 3, {},                                                                      \
    "grpo: rounds of resampling for --dynamic_sample")                                                                  \
  X(Alignment, bool, overlong_filter, false, {},                                                                        \
    "grpo: leave completions cut at --max_completion_length out of the loss")                                           \
  X(Alignment, bool, sync_ref_model, false, {},                                                                         \
    "grpo: move the reference toward the policy every --ref_model_sync_steps")                                          \
  X(Alignment, int64_t, ref_model_sync_steps, 512, (ArgumentRule{.minimum = 1}),                                        \
    "grpo: steps between reference updates")                                                                            \
  X(Alignment, double, ref_model_mixup_alpha, 0.6, (ArgumentRule{.minimum = 0, .maximum = 1}),                          \
    "grpo: reference <- alpha policy + (1 - alpha) reference")                                                          \
  X(Alignment, bool, log_completions, false, {},                                                                        \
    "grpo: write each rollout with its rewards to completions.jsonl")                                                   \
  X(Alignment, std::string, multi_turn_scheduler, {}, {},                                                               \
    "grpo: a multi-turn scheduler plugin (tool calls between turns)")                                                   \
  X(Alignment, std::optional<int64_t>, max_turns, {}, {},                                                               \
    "grpo: turns a multi-turn rollout takes at most")                                                                   \
                                                                                                                        \
  X(Ignored, std::string, infer_backend, "pt", {.no_effect = "Lathe generates with its own engine (continuous batching)"}, \
    "SWIFT's inference backend; pt is Lathe's own engine")                                                              \
  X(Ignored, std::string, deepspeed, {}, {.no_effect = "Lathe trains in one process; ZeRO sharding does not apply"},    \
    "SWIFT's DeepSpeed config")                                                                                         \
  X(Ignored, std::string, attn_impl, {}, {.no_effect = "Lathe's attention is its own kernel, there is no implementation to choose"}, \
    "SWIFT's attention implementation (flash_attn, sdpa, eager)")                                                       \
  X(Ignored, std::string, model_type, {}, {.no_effect = "the architecture is read from the model folder's config.json"}, \
    "SWIFT's model type")                                                                                               \
  X(Ignored, bool, lazy_tokenize, false, {.no_effect = "rows are tokenized on all cores before training (or while it runs with --streaming)"}, \
    "SWIFT's tokenize-on-the-fly switch")                                                                               \
  X(Ignored, int64_t, vllm_max_model_len, 0, {.no_effect = "the vllm backend is not used"}, "SWIFT's vLLM context length") \
  X(Ignored, double, vllm_gpu_memory_utilization, 0.9, {.no_effect = "the vllm backend is not used"},                    \
    "SWIFT's vLLM memory share")                                                                                        \
  X(Ignored, bool, use_vllm, false, {.no_effect = "grpo rolls out on Lathe's own engine, in process, from the live weights"}, \
    "SWIFT's GRPO rollouts on vLLM")                                                                                    \
  X(Ignored, std::string, vllm_mode, {}, {.no_effect = "grpo rolls out on Lathe's own engine, in process (no colocate or server vLLM)"}, \
    "SWIFT's vLLM placement (colocate or server)")                                                                      \
  X(Ignored, int64_t, vllm_tensor_parallel_size, 1, {.no_effect = "the vllm backend is not used"},                      \
    "SWIFT's vLLM tensor parallelism")                                                                                  \
  X(Ignored, bool, vllm_enable_lora, false, {.no_effect = "the vllm backend is not used; the rollout engine runs the LoRA adapters as they train"}, \
    "SWIFT's vLLM LoRA updates")                                                                                        \
  X(Ignored, std::string, vllm_server_host, {}, {.no_effect = "grpo needs no rollout server: it generates in process"}, \
    "SWIFT's swift rollout server host")                                                                                \
  X(Ignored, std::vector<int64_t>, vllm_server_port, {}, {.no_effect = "grpo needs no rollout server: it generates in process"}, \
    "SWIFT's swift rollout server port")                                                                                \
  X(Ignored, int64_t, sleep_level, 0, {.no_effect = "there is no vLLM engine to put to sleep between rollouts"},        \
    "SWIFT's colocate vLLM sleep level")                                                                                \
  X(Ignored, bool, offload_model, false, {.no_effect = "the policy is the rollout model: nothing is offloaded between rollout and training"}, \
    "SWIFT's colocate model offloading")                                                                                \
  X(Ignored, bool, offload_optimizer, false, {.no_effect = "the optimizer state stays in memory (one process, no GPU to free)"}, \
    "SWIFT's colocate optimizer offloading")                                                                            \
  X(Ignored, bool, async_generate, false, {.no_effect = "rollouts run in the step, from the current weights (ms-swift allows async only in server mode)"}, \
    "SWIFT's asynchronous server rollouts")                                                                             \
  X(Ignored, std::string, eval_backend, "Native", {.no_effect = "lathe eval scores --val_dataset with its --metric plugins"}, \
    "SWIFT's evaluation backend (OpenCompass, VLMEvalKit, Native)")                                                     \
  X(Ignored, int64_t, quant_bits, 0, {.no_effect = "quantized export is not built; weights are written in --torch_dtype"}, \
    "SWIFT's export quantization bits")                                                                                 \
  X(Ignored, std::string, quant_method, {}, {.no_effect = "quantized export is not built; weights are written in --torch_dtype"}, \
    "SWIFT's export quantization method (awq, gptq, bnb)")                                                              \
  X(Ignored, bool, push_to_hub, false, {.no_effect = "Lathe reads and writes local folders only"}, "SWIFT's hub upload") \
  X(Ignored, std::string, hub_model_id, {}, {.no_effect = "Lathe reads and writes local folders only"}, "SWIFT's hub upload target") \
  X(Ignored, std::string, hub_token, {}, (ArgumentRule{.secret = true, .no_effect = "Lathe reads and writes local folders only"}), \
    "SWIFT's hub token")                                                                                                \
  X(Ignored, bool, use_hf, false, {.no_effect = "Lathe reads local folders and files only, from no hub"},               \
    "SWIFT's choice of hub (Hugging Face or ModelScope)")

struct Arguments {
#define LATHE_DECLARE_ARGUMENT(group, type, field, value, rule, help) type field = value;
  LATHE_ARGUMENTS(LATHE_DECLARE_ARGUMENT)
#undef LATHE_DECLARE_ARGUMENT

  double effective_learning_rate() const { return learning_rate.value_or(train_type == "full" ? 1e-5 : 1e-4); }
  std::string best_model_metric() const {
    return metric_for_best_model.value_or(predict_with_generate ? "rouge-l" : "loss");
  }
  bool best_metric_greater_is_better() const { return greater_is_better.value_or(!best_model_metric().ends_with("loss")); }

  // args.json: every argument under its key except the secrets, with the learning rate and the
  // best-model metric as resolved.
  nlohmann::json to_json() const;
  // Sets the arguments that `json` names (args.json, or a --config file read as JSON); `source`
  // names the file in errors. An unknown key or a value of the wrong type or outside its rule is an
  // error naming the key and what was expected.
  void update_from_json(const nlohmann::json& json, const std::string& source);
  // Every argument's rule (choices, range, count, plugin_args' shape) holds; else an error naming
  // the flag.
  void check() const;
  // The notices for SWIFT's arguments set here to something Lathe does not do (ArgumentRule::no_effect):
  // "--deepspeed has no effect here: ...", one per argument.
  std::vector<std::string> notices() const;
  // SWIFT's --adapters CKPT without --model (when load_args): the checkpoint's args.json supplies
  // the model and how it was prompted (model, template, system, agent_template, torch_dtype,
  // max_length, task_type) and, with load_data_args, the data arguments, except the keys in
  // `given` (set by the user). Without an args.json nothing changes.
  void load_checkpoint_arguments(const std::vector<std::string>& given);
};



// Calls visit(info, &Arguments::field) for every argument, in the table's order.
template <class Visit>
void for_each_argument(Visit&& visit) {
#define LATHE_VISIT_ARGUMENT(group, type, field, value, rule, help) \
  visit(describe_argument(ArgumentGroup::group, #field, help, ArgumentRule rule), &Arguments::field);
  LATHE_ARGUMENTS(LATHE_VISIT_ARGUMENT)
#undef LATHE_VISIT_ARGUMENT
}

}  // namespace lathe

LATHE_API_END
