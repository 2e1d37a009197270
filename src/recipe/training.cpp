#include "lathe/recipe/training.h"

#include <fmt/format.h>
#include <torch/utils.h>

#include <algorithm>
#include <optional>
#include <random>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/plugin/tuner.h"
#include "lathe/data/training_data.h"
#include "lathe/plugin/loss_scale_pipeline.h"
#include "lathe/train/alignment.h"
#include "lathe/train/grpo.h"
#include "lathe/tuner/lora.h"
#include "lathe/tuner/targets.h"
#include "recipe/classifier.h"

namespace lathe {
namespace fs = std::filesystem;

namespace {

// The files of the model folder that every checkpoint carries, so that it loads on its own.
std::vector<fs::path> files_to_copy(const fs::path& model_dir) {
  std::vector<fs::path> files;
  for (const char* name : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json"}) {
    files.push_back(model_dir / name);
  }
  return files;
}

// Holds out --split_dataset_ratio of the training examples: after a seeded shuffle, or the last
// ones without --dataset_shuffle.
std::vector<Example> split_off(std::vector<Example>& train, double ratio, uint64_t seed, bool shuffle) {
  if (ratio <= 0 || train.size() < 2) return {};
  std::mt19937_64 rng(seed);
  if (shuffle) std::shuffle(train.begin(), train.end(), rng);
  const auto count = std::max<std::size_t>(1, static_cast<std::size_t>(ratio * static_cast<double>(train.size())));
  std::vector<Example> eval(std::make_move_iterator(train.end() - static_cast<std::ptrdiff_t>(count)),
                            std::make_move_iterator(train.end()));
  train.resize(train.size() - count);
  return eval;
}

int64_t count_parameters(CausalLM& model, bool trainable_only) {
  int64_t count = 0;
  for (const auto& parameter : model->parameters()) {
    if (!trainable_only || parameter.requires_grad()) count += parameter.numel();
  }
  return count;
}

bool trains_with_rollouts(const Arguments& arguments) { return arguments.alignment && arguments.rlhf_type == "grpo"; }

void check_arguments(const Arguments& arguments) {
  if (arguments.model.empty()) fail("--model is required (a Hugging Face model folder)");
  if (arguments.dataset.empty()) fail("--dataset is required (jsonl, json or csv files)");
  std::error_code ec;
  if (!fs::is_directory(arguments.model, ec)) fail_not_local("model folder", arguments.model);
  if (arguments.adapters.size() > 1) fail("--adapters: one adapter folder to train on (got {})", arguments.adapters.size());
  if (!arguments.adapters.empty() && arguments.train_type == "full") {
    fail("--adapters {}: --train_type full trains a model, not an adapter (lathe export --merge_lora true folds the "
         "adapter into a model folder to train in full)", arguments.adapters.front());
  }
  if (arguments.task_type == "embedding" && arguments.pretraining) fail("lathe pt trains next-token prediction; --task_type embedding is for lathe sft");
  if (arguments.task_type == "embedding" && arguments.alignment) fail("--task_type embedding is for lathe sft; lathe rlhf aligns a causal LM");
  if (arguments.alignment && arguments.streaming) fail("--streaming: lathe rlhf trains on the whole dataset (it is not streamed)");
  // Every micro-batch's sequences already run as one padding-free row (lathe/train/alignment.h).
  if (arguments.alignment && arguments.packing) fail("--packing: lathe rlhf batches pairs by --per_device_train_batch_size (its rows are never padded)");
  if (trains_with_rollouts(arguments)) check_grpo_arguments(arguments);
  if (!arguments.ref_model.empty() && !fs::is_directory(arguments.ref_model, ec)) fail_not_local("--ref_model folder", arguments.ref_model);
  if (arguments.ref_adapters.size() > 1) fail("--ref_adapters: one adapter folder for the reference (got {})", arguments.ref_adapters.size());
  for (const auto& adapter : arguments.ref_adapters) {
    if (!fs::is_directory(adapter, ec)) fail_not_local("--ref_adapters folder", adapter);
  }
}

// Whether the policy with its adapters bypassed is the model training started from: adapters
// that leave the base weights as they are (PiSSA rewrites them).
bool adapters_leave_base(const Arguments& arguments) {
  return (arguments.train_type == "lora" && arguments.init_weights != "pissa") || arguments.train_type == "ia3";
}

// A frozen reference model in float32, as full tuning holds the policy, so that both compute alike
// (ln 2 at the first step); its projections stay in the checkpoint's 16-bit dtype, which loses
// nothing under float32 or autocast and halves their memory.
CausalLM frozen_reference(const Arguments& arguments, const fs::path& folder, const CausalLM& policy) {
  const auto projections = projection_dtype(arguments.weight_dtype, "float32", folder, /*lossless_auto=*/true);
  auto reference = load_pretrained(folder, torch::kFloat32, {projections});
  if (reference->config().vocab_size != policy->config().vocab_size) {
    fail("--ref_model {}: its vocabulary has {} tokens, the model's {} (the reference must share the tokenizer)",
         folder.string(), reference->config().vocab_size, policy->config().vocab_size);
  }
  for (auto& parameter : reference->parameters()) parameter.set_requires_grad(false);
  reference->eval();
  return reference;
}

// lathe rlhf's reference: none for the reference-free types; the policy with its adapters off when
// they leave the base untouched and neither --ref_model nor --ref_adapters is named; else a frozen
// model (--ref_model or --model), with --ref_adapters' adapter on it.
AlignmentReference alignment_reference(const Arguments& arguments, const CausalLM& policy) {
  AlignmentReference reference;
  if (!alignment_uses_reference(arguments)) {
    if (!arguments.ref_adapters.empty()) fail("--ref_adapters: {} compares no reference model (it is reference-free)", arguments.rlhf_type);
    return reference;
  }
  if (arguments.ref_model.empty() && arguments.ref_adapters.empty() && adapters_leave_base(arguments)) {
    reference.kind = AlignmentReference::Kind::adapters_off;
    return reference;
  }
  reference.kind = AlignmentReference::Kind::frozen_model;
  reference.model = frozen_reference(arguments, arguments.ref_model.empty() ? arguments.model : arguments.ref_model, policy);
  for (const auto& adapter : arguments.ref_adapters) load_adapter_folder(reference.model, adapter, arguments, /*trainable=*/false);
  reference.model->eval();  // the adapter's own dropout off too
  return reference;
}

// TRL's disable_dropout, which ms-swift's rlhf keeps: no dropout in the LoRA adapters, those made
// here (--lora_dropout is set to 0) and those loaded with --adapters (whose own config names a
// rate), so that the policy scores a sequence as its reference does: the first step's loss is the
// untrained one (ln 2 for sigmoid dpo).
void disable_adapter_dropout(CausalLM& model) {
  for (const auto& [path, linear] : tuner::linear_modules(model)) {
    if (auto lora = std::dynamic_pointer_cast<LoraAdapter>(linear->adapter)) lora->dropout = 0;
  }
}

EncodeOptions encode_options(const Arguments& arguments, int64_t max_length) {
  EncodeOptions options{max_length, arguments.truncation_strategy, arguments.system, arguments.pretraining,
                        arguments.task_type == "embedding"};
  options.preference = arguments.alignment && arguments.rlhf_type != "kto";
  options.labelled = arguments.alignment && arguments.rlhf_type == "kto";
  return options;
}

// ms-swift's advice for KTO: the desirable rows' total weight at 1 to 4/3 times the undesirable ones'.
void warn_of_kto_imbalance(const Arguments& arguments, const std::vector<Example>& train) {
  const auto desirable = std::count_if(train.begin(), train.end(), [](const Example& e) { return e.desirable.value_or(true); });
  const auto undesirable = static_cast<int64_t>(train.size()) - desirable;
  if (undesirable == 0 || desirable == 0) {
    fmt::print(stderr, "lathe: kto: the training set has {} desirable and {} undesirable rows\n", desirable, undesirable);
    return;
  }
  const double ratio = arguments.desirable_weight * static_cast<double>(desirable) /
                       (arguments.undesirable_weight * static_cast<double>(undesirable));
  if (ratio < 1.0 || ratio > 4.0 / 3.0) {
    fmt::print(stderr,
               "lathe: kto: desirable_weight x {} desirable rows / (undesirable_weight x {} undesirable) = {:.3f}, outside "
               "the recommended [1, 4/3]; adjust --desirable_weight or --undesirable_weight\n",
               desirable, undesirable, ratio);
  }
}

// KTO's global batch, within which every row's KL completion comes from another row.
int64_t kto_chunk(const Arguments& arguments) {
  return std::max<int64_t>(1, arguments.per_device_train_batch_size) * std::max<int64_t>(1, arguments.gradient_accumulation_steps);
}

// --dataset_num_proc, else SWIFT's --dataloader_num_workers, else every core (0).
int64_t encoding_threads(const Arguments& arguments) {
  return arguments.dataset_num_proc > 0 ? arguments.dataset_num_proc : arguments.dataloader_num_workers;
}

ConversationEdit conversation_edit(const Arguments& arguments) {
  if (arguments.model_name.empty() && arguments.model_author.empty()) return {};
  return self_cognition_edit(arguments.model_name.empty() ? std::vector<std::string>{"Lathe"} : arguments.model_name,
                             arguments.model_author.empty() ? std::vector<std::string>{"Lathe"} : arguments.model_author);
}

bool trains_reward_model(const Arguments& arguments) { return arguments.alignment && arguments.rlhf_type == "rm"; }

// --rlhf_type rm trains a one-label sequence classifier: a causal LM's folder loads as one (its
// score head seeded by --seed), a classifier's as it is. Every other command trains a causal LM.
CausalLM load_training_model(const Arguments& arguments) {
  if (!trains_reward_model(arguments)) {
    auto model = load_pretrained(arguments.model, base_weight_dtype(arguments), training_projections(arguments));
    if (model->is_classifier()) {
      fail("--model {}: a sequence classifier ({} labels); this trains a causal LM (a reward model trains with "
           "lathe rlhf --rlhf_type rm)", arguments.model, *model->config().num_labels);
    }
    return model;
  }
  torch::manual_seed(static_cast<uint64_t>(arguments.seed));
  auto model = load_pretrained(arguments.model, base_weight_dtype(arguments), training_projections(arguments),
                               classifier_conversion(arguments.model, 1));
  if (model->config().num_labels != 1) {
    fail("--model {}: a classifier with {} labels; a reward model has one (num_labels 1)", arguments.model,
         *model->config().num_labels);
  }
  // The score head trains whole, also over a bfloat16 base, so in float32 as LoRA's own parameters.
  auto head = model->output_weight();
  if (head.scalar_type() != torch::kFloat32) {
    torch::NoGradGuard no_grad;
    head.set_data(head.to(torch::kFloat32));
  }
  return model;
}

// grpo's rows are prompts: a conversation ending with a user message (a final assistant message
// is the reference answer, offered to the reward functions as "solution" when the row has none),
// encoded up to the generation prompt. --max_length bounds the prompt: truncation_strategy left
// keeps its end, delete drops the row.
std::vector<Example> encode_prompts(const std::vector<std::string>& specs, const Template& chat_template,
                                    const Tokenizer& tokenizer, const Arguments& arguments, const ConversationEdit& edit) {
  std::vector<Example> prompts;
  int64_t deleted = 0, truncated = 0;
  for (auto& [row, where] : read_dataset_rows(specs, static_cast<uint64_t>(arguments.seed))) {
    auto [prompt, answer] = to_prompt_row(row, where);
    if (edit) edit(prompt, row);
    if (answer && !row.contains("solution")) row["solution"] = *answer;
    Example example;
    example.input_ids = chat_template.encode(tokenizer, prompt, /*add_generation_prompt=*/true, arguments.system).input_ids;
    if (arguments.max_length > 0 && example.size() > arguments.max_length) {
      if (arguments.truncation_strategy == "delete") {
        ++deleted;
        continue;
      }
      example.input_ids.erase(example.input_ids.begin(), example.input_ids.end() - arguments.max_length);
      ++truncated;
    }
    example.prompt = std::make_shared<const Conversation>(std::move(prompt));
    example.row = std::make_shared<const nlohmann::json>(std::move(row));
    prompts.push_back(std::move(example));
  }
  fmt::print(stderr, "lathe: grpo: {} prompts, {} truncated on the left to --max_length {}, {} deleted\n", prompts.size(),
             truncated, arguments.max_length, deleted);
  return prompts;
}

// ms-swift's repeat sampler: each prompt `group` times in a row, so that a step's completions hold
// whole groups; with --num_iterations each step's prompts come again that many times.
std::vector<Example> repeated_prompts(const std::vector<Example>& prompts, int64_t group, int64_t per_step, int64_t iterations) {
  std::vector<Example> examples;
  for (std::size_t begin = 0; begin < prompts.size(); begin += static_cast<std::size_t>(per_step)) {
    const auto end = std::min(prompts.size(), begin + static_cast<std::size_t>(per_step));
    for (int64_t pass = 0; pass < iterations; ++pass) {
      for (auto i = begin; i < end; ++i) examples.insert(examples.end(), static_cast<std::size_t>(group), prompts[i]);
    }
  }
  return examples;
}

}  // namespace

torch::Dtype base_weight_dtype(const Arguments& arguments) {
  return arguments.torch_dtype == "bfloat16" && arguments.train_type != "full" ? torch::kBFloat16 : torch::kFloat32;
}

ProjectionStorage training_projections(const Arguments& arguments) {
  const bool trains_projections = arguments.train_type == "full";
  const bool rewrites_projections = arguments.init_weights == "pissa";  // PiSSA leaves the residual in the base
  const auto dtype = projection_dtype(arguments.weight_dtype, arguments.torch_dtype, arguments.model,
                                      /*lossless_auto=*/!trains_projections && !rewrites_projections);
  if (dtype && trains_projections)
    fail("--weight_dtype {}: --train_type full trains the projections, which a 16-bit hold would freeze; use "
         "--torch_dtype bfloat16 for bfloat16 computation", arguments.weight_dtype);
  return {dtype, /*embedding=*/false};
}

struct TrainingRun::State {
  Arguments arguments;
  Tokenizer tokenizer;
  CausalLM model;
  Template chat_template;
  LossScalePipeline loss_scale;
  ExampleEncoder encoder;
  std::shared_ptr<ExampleStream> stream;
  std::vector<Example> train, eval;
  std::shared_ptr<Tuner> tuner;
  std::shared_ptr<TrainingObjective> objective;  // lathe rlhf
  AlignmentReference reference;                   // grpo's, until its objective is made
  std::shared_ptr<const std::vector<Example>> rollout_prompts;  // grpo --dynamic_sample's draws
  std::unique_ptr<ExampleEncoder> trajectory_encoder;            // grpo's multi-turn trajectories
  fs::path run_dir;

  explicit State(Arguments given)
      : arguments((check_arguments(given), std::move(given))),
        tokenizer(Tokenizer::from_file(arguments.model)),
        model(load_training_model(arguments)),
        chat_template(Template::for_model(arguments.model, arguments.template_name)),
        loss_scale(arguments.loss_scale, arguments),
        encoder(chat_template, tokenizer,
                [this](const std::vector<Context>& contexts, const Conversation& conversation) {
                  return loss_scale.apply(contexts, conversation);
                },
                encode_options(arguments, max_length())) {
    chat_template.set_agent_template(make_agent_template(arguments, chat_template.spec()));
    // Before the data is encoded, so that a wrong alignment setting is reported at once.
    if (trains_with_rollouts(arguments)) {
      reference = alignment_reference(arguments, model);
    } else if (arguments.alignment) {
      objective = make_alignment_objective(arguments, alignment_reference(arguments, model));
    }
    encode_data();
    if (arguments.alignment) arguments.lora_dropout = 0;
    tuner = tuner_registry().create(arguments.train_type, arguments);
    // SWIFT's --adapters in sft: training goes on from a saved adapter, whose own config (rank,
    // alpha, targets) replaces the tuner arguments.
    if (arguments.adapters.empty()) {
      tuner->prepare_model(arguments, model);
    } else {
      tuner->from_pretrained(model, arguments.adapters.front(), /*trainable=*/true);
    }
    if (arguments.alignment) disable_adapter_dropout(model);
    const auto trainable = count_parameters(model, true), total = count_parameters(model, false);
    fmt::print(stderr, "lathe: {} tuner, trainable parameters: {} of {} ({:.4f}%)\n", arguments.train_type, trainable,
               total, 100.0 * static_cast<double>(trainable) / static_cast<double>(std::max<int64_t>(1, total)));
    run_dir = make_run_dir(arguments);
    fs::create_directories(run_dir);
    write_file_atomic(run_dir / "args.json", arguments.to_json().dump(2));
    fmt::print(stderr, "lathe: output folder {}\n", run_dir.string());
    if (trains_with_rollouts(arguments)) objective = make_grpo_objective(arguments, grpo_setup());
  }

  GrpoSetup grpo_setup() {
    GrpoSetup setup{std::move(reference)};
    setup.engine.max_batch_size = std::max<int64_t>(1, arguments.max_batch_size);
    setup.engine.decode = [this](const std::vector<int32_t>& ids) { return tokenizer.decode(ids, /*skip_special_tokens=*/false); };
    setup.engine.fit_max_new_tokens = true;
    for (const auto& word : chat_template.spec().stop_words) {
      if (auto id = tokenizer.token_to_id(word)) setup.stop_token_ids.push_back(*id);
    }
    for (const auto id : model->config().eos_token_ids) setup.stop_token_ids.push_back(static_cast<int32_t>(id));
    if (arguments.log_completions) setup.completions_file = run_dir / "completions.jsonl";
    setup.prompt_pool = rollout_prompts;
    if (!arguments.multi_turn_scheduler.empty()) {
      setup.agent_template = chat_template.agent_template();
      setup.stop_strings = chat_template.stop_words();  // the agent template's too (ReAct's "Observation:")
      setup.encode_prompt = [this](const Conversation& conversation) {
        return chat_template.encode(tokenizer, conversation, /*add_generation_prompt=*/true, arguments.system).input_ids;
      };
      // Not cut to --max_length, the prompt's limit: a trajectory's answers make it longer.
      trajectory_encoder = std::make_unique<ExampleEncoder>(
          chat_template, tokenizer,
          [this](const std::vector<Context>& contexts, const Conversation& conversation) {
            return loss_scale.apply(contexts, conversation);
          },
          EncodeOptions{0, arguments.truncation_strategy, arguments.system});
      setup.encode_trajectory = [this](const Conversation& conversation) { return *trajectory_encoder->encode(conversation); };
    }
    return setup;
  }

  void encode_rollout_prompts(const ConversationEdit& edit) {
    const auto group = arguments.num_generations;
    const auto per_step = std::max<int64_t>(1, arguments.per_device_train_batch_size) *
                          std::max<int64_t>(1, arguments.gradient_accumulation_steps) / group;
    auto prompts = encode_prompts(arguments.dataset, chat_template, tokenizer, arguments, edit);
    auto eval_prompts = arguments.val_dataset.empty()
                            ? split_off(prompts, arguments.split_dataset_ratio, static_cast<uint64_t>(arguments.seed),
                                        arguments.dataset_shuffle)
                            : encode_prompts(arguments.val_dataset, chat_template, tokenizer, arguments, edit);
    // The data order is the prompts' (shuffled here, seeded), so the trainer keeps it.
    if (arguments.dataset_shuffle) {
      std::mt19937_64 rng(static_cast<uint64_t>(arguments.seed));
      std::shuffle(prompts.begin(), prompts.end(), rng);
    }
    arguments.train_dataloader_shuffle = false;
    const auto whole = prompts.size() - prompts.size() % static_cast<std::size_t>(per_step);  // ms-swift drops the rest
    if (whole == 0)
      fail("grpo: {} training prompts, fewer than the {} one step takes (per_device_train_batch_size x "
           "gradient_accumulation_steps / num_generations)", prompts.size(), per_step);
    prompts.resize(whole);
    train = repeated_prompts(prompts, group, per_step, arguments.num_iterations);
    if (arguments.dynamic_sample) rollout_prompts = std::make_shared<const std::vector<Example>>(std::move(prompts));
    const auto eval_group = arguments.num_generations_eval.value_or(group);
    eval = repeated_prompts(eval_prompts, eval_group, static_cast<int64_t>(std::max<std::size_t>(1, eval_prompts.size())), 1);
    if (!arguments.metric_for_best_model) arguments.metric_for_best_model = "reward";
  }

  // --max_length 0 means the model's context.
  int64_t max_length() {
    if (arguments.max_length <= 0) arguments.max_length = model->config().max_position_embeddings;
    return arguments.max_length;
  }

  void encode_data() {
    const auto edit = conversation_edit(arguments);
    if (trains_with_rollouts(arguments)) return encode_rollout_prompts(edit);
    const auto seed = static_cast<uint64_t>(arguments.seed);
    DatasetStats stats, eval_stats;
    if (arguments.streaming) {
      if (arguments.split_dataset_ratio > 0) fail("--streaming: use --val_dataset (a stream cannot be split)");
      stream = std::make_shared<ExampleStream>(arguments.dataset, encoder, arguments.strict, edit, seed);
    } else {
      train = encode_datasets(arguments.dataset, encoder, arguments.strict, encoding_threads(arguments), seed, stats, edit);
      fmt::print(stderr, "lathe: train dataset: {}\n", stats.summary());
    }
    eval = arguments.val_dataset.empty()
               ? split_off(train, arguments.split_dataset_ratio, seed, arguments.dataset_shuffle)
               : encode_datasets(arguments.val_dataset, encoder, arguments.strict, encoding_threads(arguments), seed,
                                 eval_stats, edit);
    if (!eval.empty()) fmt::print(stderr, "lathe: eval dataset: {} rows\n", eval.size());
    if (arguments.alignment && arguments.rlhf_type == "kto") {
      // As ms-swift: shuffled first, so that a row's KL completion comes from an unrelated row.
      std::mt19937_64 rng(seed);
      std::shuffle(train.begin(), train.end(), rng);
      attach_kl_completions(train, kto_chunk(arguments));
      warn_of_kto_imbalance(arguments, train);
      if (!eval.empty()) attach_kl_completions(eval, std::max<int64_t>(2, kto_chunk(arguments)));
    }
  }
};

TrainingRun::TrainingRun(Arguments arguments) : state_(std::make_unique<State>(std::move(arguments))) {}

TrainingRun::~TrainingRun() = default;

TrainingResult TrainingRun::train(std::vector<std::shared_ptr<Callback>> extra_callbacks) {
  auto& s = *state_;
  TrainerSetup setup{s.arguments, s.model, s.tuner, std::move(s.train), s.stream, std::move(s.eval), s.run_dir,
                     files_to_copy(s.arguments.model), std::move(extra_callbacks),
                     static_cast<int32_t>(s.model->config().pad_token_id.value_or(0))};
  setup.decode = [&s](const std::vector<int32_t>& ids) { return s.tokenizer.decode(ids, /*skip_special_tokens=*/true); };
  setup.stop_token_ids = stop_token_ids();
  setup.objective = s.objective;
  Trainer trainer(std::move(setup));
  return trainer.train();
}

const Arguments& TrainingRun::arguments() const { return state_->arguments; }
CausalLM& TrainingRun::model() { return state_->model; }
const Tokenizer& TrainingRun::tokenizer() const { return state_->tokenizer; }
const Template& TrainingRun::chat_template() const { return state_->chat_template; }
const fs::path& TrainingRun::run_dir() const { return state_->run_dir; }

std::vector<int32_t> TrainingRun::stop_token_ids() const {
  std::vector<int32_t> ids;
  for (const auto& word : state_->chat_template.spec().stop_words) {
    if (auto id = state_->tokenizer.token_to_id(word)) ids.push_back(*id);
  }
  return ids;
}

}  // namespace lathe
