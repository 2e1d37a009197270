// The training loop. One optimizer step = gradient_accumulation_steps micro-batches whose losses
// are each divided by the step's total count of trained tokens (num_items_in_batch), so that
// accumulation gives the same loss and gradients as one large batch (docs/plugins.md). With an
// objective (lathe rlhf) each micro-batch's examples go to it instead, its losses divided by the
// step's examples for the same equality.
#include "lathe/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <fmt/chrono.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <mutex>
#include <numeric>
#include <random>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/infer/generate.h"
#include "lathe/evaluate/metric_evaluation.h"
#include "lathe/plugin/token_losses.h"
#include "lathe/plugin/schedules.h"
#include "train/checkpoint.h"
#include "train/run_log.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// bfloat16 autocast on the CPU for the forward pass; float32 master weights stay untouched. The
// caller's autocast setting (enabled or not, and its dtype) is back in place when the scope ends.
class AutocastScope {
 public:
  explicit AutocastScope(bool enabled)
      : enabled_(enabled), was_enabled_(at::autocast::is_cpu_enabled()), previous_dtype_(at::autocast::get_autocast_cpu_dtype()) {
    if (!enabled_) return;
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_, was_enabled_;
  at::ScalarType previous_dtype_;
};

// The model in evaluation mode for the scope, then back in the mode it was in, on every way out.
class EvalModeScope {
 public:
  explicit EvalModeScope(CausalLM& model) : model_(model), was_training_(model->is_training()) { model_->eval(); }
  ~EvalModeScope() { model_->train(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  CausalLM& model_;
  bool was_training_;
};

std::atomic<int> received_stop_signal{0};
extern "C" void remember_stop_signal(int signal) { received_stop_signal = signal; }

// SIGINT / SIGTERM during train(): the step in progress finishes, is logged, evaluated and saved,
// then training stops. The handlers before train() are back in place on every way out of it.
class StopSignalScope {
 public:
  StopSignalScope() {
    received_stop_signal = 0;
    previous_int_ = std::signal(SIGINT, remember_stop_signal);
    previous_term_ = std::signal(SIGTERM, remember_stop_signal);
  }
  ~StopSignalScope() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;
  int received() const { return received_stop_signal.load(); }

 private:
  void (*previous_int_)(int) = SIG_DFL;
  void (*previous_term_)(int) = SIG_DFL;
};

// The default CPU generator (which dropout and gradient checkpointing draw from) holds the
// trainer's own stream for the scope; the caller's stream is back in place afterwards, so that
// training neither reseeds nor advances it.
class GeneratorScope {
 public:
  explicit GeneratorScope(torch::Tensor& trainer_state) : trainer_state_(trainer_state) {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    caller_state_ = generator.get_state();
    generator.set_state(trainer_state_);
  }
  ~GeneratorScope() {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    trainer_state_ = generator.get_state();
    generator.set_state(caller_state_);
  }
  GeneratorScope(const GeneratorScope&) = delete;
  GeneratorScope& operator=(const GeneratorScope&) = delete;

 private:
  torch::Tensor& trainer_state_;
  torch::Tensor caller_state_;
};

torch::Tensor seeded_generator_state(uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return generator.get_state();
}

bool embedding_task(const Arguments& arguments) { return arguments.task_type == "embedding"; }

std::string loss_name(const Arguments& arguments) {
  if (arguments.loss_type.size() > 1) {
    fail("--loss_type: one loss plugin trains sft and pt (got {}); a mix of losses is lathe rlhf's, for dpo",
         arguments.loss_type.size());
  }
  const std::string chosen = arguments.loss_type.empty() ? std::string() : arguments.loss_type.front();
  if (embedding_task(arguments)) {
    if (chosen == "cross_entropy" || chosen == "loss_scale") {
      fail("--loss_type {} trains tokens; --task_type embedding takes an embedding loss (infonce, cosine_similarity, "
           "contrastive, online_contrastive, or a plugin's)",
           chosen);
    }
    return chosen.empty() ? "infonce" : chosen;
  }
  if (!chosen.empty()) return chosen;
  return arguments.loss_scale == "default" || arguments.loss_scale == "all" || arguments.loss_scale == "last_round"
             ? "cross_entropy"
             : "loss_scale";
}

std::vector<std::string> metric_names(const Arguments& arguments) {
  if (embedding_task(arguments)) {
    if (!arguments.metric.empty()) fail("--metric: embedding training is evaluated by its loss (eval_loss) alone");
    return {};
  }
  if (!arguments.metric.empty()) return arguments.metric;
  return {arguments.predict_with_generate ? "nlg" : "acc"};
}

using Event = void (Callback::*)(const Arguments&, TrainerState&, TrainerControl&, const CallbackContext&);

const char* event_name(Event event) {
  static const std::pair<Event, const char*> names[] = {
      {&Callback::on_init_end, "on_init_end"},
      {&Callback::on_train_begin, "on_train_begin"},
      {&Callback::on_train_end, "on_train_end"},
      {&Callback::on_epoch_begin, "on_epoch_begin"},
      {&Callback::on_epoch_end, "on_epoch_end"},
      {&Callback::on_step_begin, "on_step_begin"},
      {&Callback::on_substep_end, "on_substep_end"},
      {&Callback::on_pre_optimizer_step, "on_pre_optimizer_step"},
      {&Callback::on_optimizer_step, "on_optimizer_step"},
      {&Callback::on_step_end, "on_step_end"},
      {&Callback::on_evaluate, "on_evaluate"},
      {&Callback::on_save, "on_save"},
      {&Callback::on_log, "on_log"},
  };
  for (const auto& [known, name] : names) {
    if (known == event) return name;
  }
  return "an event";
}

// The span [start, end) of the last trained run of labels: the last response, whose prompt is
// everything before it.
std::pair<std::size_t, std::size_t> last_response_span(const std::vector<int32_t>& labels) {
  std::size_t end = labels.size();
  while (end > 0 && labels[end - 1] == kIgnoreIndex) --end;
  std::size_t start = end;
  while (start > 0 && labels[start - 1] != kIgnoreIndex) --start;
  return {start, end};
}

}  // namespace

struct Trainer::Impl {
  TrainerSetup setup;
  Arguments& arguments = setup.arguments;
  TrainerState state;
  TrainerControl control;
  std::vector<NamedCallback> callbacks;
  LossFunction loss_function;
  std::string loss_label;  // "loss 'name' (origin)", for errors
  std::unique_ptr<MetricEvaluation> metrics;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;
  std::vector<torch::Tensor> trainable;

  std::vector<std::vector<std::size_t>> units;  // examples trained together in one sequence or row
  bool packed = false;
  int64_t micro_per_epoch = 0, steps_per_epoch = 0;
  std::optional<std::map<std::string, double>> last_eval;
  int64_t last_eval_step = -1;  // the step last_eval was taken at
  torch::Tensor generator_state;  // the trainer's own random stream (GeneratorScope)
  std::vector<std::size_t> epoch_order;  // the shuffled units of epoch `ordered_epoch`
  int64_t ordered_epoch = -1;
  int64_t consecutive_nonfinite = 0;
  RunLog log;
  fs::path last_checkpoint;

  explicit Impl(TrainerSetup s)
      : setup(std::move(s)), generator_state(seeded_generator_state(static_cast<uint64_t>(arguments.seed))), log(setup.run_dir) {}

  CallbackContext context() {
    return CallbackContext{setup.model.get(), optimizer.get(), scheduler.get(), nullptr, nullptr, {}};
  }
  // A throwing callback stops the run with an error naming it; checkpoints already written stay
  // as they are (each is renamed into place only once complete).
  void emit(Event event, const CallbackContext& extra) {
    for (auto& named : callbacks) {
      try {
        ((*named.callback).*event)(arguments, state, control, extra);
      } catch (const std::exception& error) {
        fail("callback '{}' ({}) failed in {} at step {}: {}; {}", named.name, named.origin, event_name(event),
             state.global_step, error.what(), checkpoint_note());
      }
    }
  }
  void emit(Event event) { emit(event, context()); }

  std::string checkpoint_note() const {
    return last_checkpoint.empty() ? "no checkpoint was saved" : "the last checkpoint is " + last_checkpoint.string();
  }

  void select_plugins() {
    callbacks = default_callbacks(arguments, log);
    for (std::size_t i = 0; i < setup.extra_callbacks.size(); ++i) {
      callbacks.push_back({fmt::format("extra #{}", i + 1), "the program", setup.extra_callbacks[i]});
    }
    if (setup.objective) return;  // it replaces the loss plugin and the token metrics
    const auto name = loss_name(arguments);
    const auto& loss = loss_registry().get(name);
    loss_function = loss.factory(PluginContext(arguments, plugin_settings(arguments, name)));
    loss_label = fmt::format("loss '{}' ({})", name, loss.origin);
    metrics = std::make_unique<MetricEvaluation>(arguments, metric_names(arguments));
  }

  void plan_data() {
    if (setup.stream) return plan_stream();
    if (setup.train.empty()) fail("the training set is empty (no rows survived encoding)");
    packed = arguments.packing || arguments.padding_free;
    if (arguments.packing) {
      const auto limit = arguments.max_length > 0 ? arguments.max_length : setup.model->config().max_position_embeddings;
      units = pack_into_bins(setup.train, limit);
    } else {
      for (std::size_t i = 0; i < setup.train.size(); ++i) units.push_back({i});
    }
    const auto batch = std::max<int64_t>(1, arguments.per_device_train_batch_size);
    micro_per_epoch = (static_cast<int64_t>(units.size()) + batch - 1) / batch;
    const auto accumulation = std::max<int64_t>(1, arguments.gradient_accumulation_steps);
    steps_per_epoch = std::max<int64_t>(1, (micro_per_epoch + accumulation - 1) / accumulation);
    state.max_steps = arguments.max_steps > 0
                          ? arguments.max_steps
                          : static_cast<int64_t>(std::ceil(arguments.num_train_epochs * static_cast<double>(steps_per_epoch)));
    state.num_train_epochs = arguments.max_steps > 0 ? std::ceil(static_cast<double>(state.max_steps) / steps_per_epoch)
                                                      : arguments.num_train_epochs;
  }

  // A stream has no length: --max_steps says how long to train, and the whole run is one "epoch".
  void plan_stream() {
    if (setup.objective) fail("--streaming: {} trains on the whole dataset (it is not streamed)", setup.objective->name());
    if (arguments.max_steps <= 0) fail("--streaming needs --max_steps (a streamed dataset has no known length)");
    if (arguments.packing) fail("--streaming cannot pack (packing needs every row up front); use --padding_free");
    packed = arguments.padding_free;
    state.max_steps = arguments.max_steps;
    steps_per_epoch = state.max_steps;
    micro_per_epoch = state.max_steps * std::max<int64_t>(1, arguments.gradient_accumulation_steps);
    state.num_train_epochs = 1;
  }

  Batch collate(const std::vector<const Example*>& examples) const {
    RECORD_USER_SCOPE("lathe::collate");
    if (embedding_task(arguments)) return collate_embeddings(examples);
    return packed ? collate_packed(examples) : collate_padded(examples, setup.pad_token_id);
  }

  std::vector<Batch> streamed_batches() {
    const auto batch = std::max<int64_t>(1, arguments.per_device_train_batch_size);
    std::vector<Batch> batches;
    for (int64_t micro = 0; micro < std::max<int64_t>(1, arguments.gradient_accumulation_steps); ++micro) {
      std::vector<Example> examples;
      for (int64_t i = 0; i < batch; ++i) examples.push_back(setup.stream->next());
      std::vector<const Example*> pointers;
      for (const auto& example : examples) pointers.push_back(&example);
      batches.push_back(collate(pointers));
    }
    return batches;
  }

  void build_optimizer() {
    auto made = optimizer_registry().create(optimizer_name(arguments), arguments, *setup.model, state.max_steps);
    optimizer = std::move(made.optimizer);
    scheduler = made.scheduler ? made.scheduler
                               : make_scheduler(arguments.lr_scheduler_type, warmup_steps_for(arguments, state.max_steps),
                                                state.max_steps, arguments.lr_scheduler_kwargs.value("min_lr_rate", 0.1));
    scheduler->remember_base_rates(*optimizer);
    for (auto& group : optimizer->param_groups()) {
      for (auto& parameter : group.params()) trainable.push_back(parameter);
    }
  }

  // The units of epoch `epoch` in training order: shuffled with seed + epoch, so a resumed run
  // sees the same order without saving it (in dataset order without --train_dataloader_shuffle).
  // Computed once per epoch.
  const std::vector<std::size_t>& order_of_epoch(int64_t epoch) {
    if (ordered_epoch != epoch) {
      if (arguments.train_dataloader_shuffle) {
        epoch_order = epoch_training_order(units.size(), static_cast<uint64_t>(arguments.seed), epoch);
      } else {
        epoch_order.resize(units.size());
        std::iota(epoch_order.begin(), epoch_order.end(), std::size_t{0});
      }
      ordered_epoch = epoch;
    }
    return epoch_order;
  }

  using ExampleGroup = std::vector<const Example*>;

  // The examples of each micro-batch of optimizer step `step` of epoch `epoch`.
  std::vector<ExampleGroup> step_groups(int64_t epoch, int64_t step) {
    const auto& order = order_of_epoch(epoch);
    const auto batch = std::max<int64_t>(1, arguments.per_device_train_batch_size);
    const auto accumulation = std::max<int64_t>(1, arguments.gradient_accumulation_steps);
    std::vector<ExampleGroup> groups;
    for (int64_t micro = step * accumulation; micro < std::min(micro_per_epoch, (step + 1) * accumulation); ++micro) {
      ExampleGroup examples;
      for (int64_t u = micro * batch; u < std::min<int64_t>(static_cast<int64_t>(units.size()), (micro + 1) * batch); ++u) {
        for (auto index : units[order[u]]) examples.push_back(&setup.train[index]);
      }
      groups.push_back(std::move(examples));
    }
    return groups;
  }

  std::vector<Batch> step_batches(int64_t epoch, int64_t step) {
    if (setup.stream) return streamed_batches();
    std::vector<Batch> batches;
    for (const auto& examples : step_groups(epoch, step)) batches.push_back(collate(examples));
    return batches;
  }

  torch::Tensor forward_loss(const Batch& batch, std::optional<int64_t> num_items) {
    // The loss runs under autocast too, as in Hugging Face's Trainer: the output head's matmul
    // then runs in bfloat16 like every other projection (chunked_token_cross_entropy).
    AutocastScope autocast(arguments.torch_dtype == "bfloat16");
    const auto hidden = setup.model->forward(
        {batch.input_ids, batch.position_ids, batch.attention_mask, nullptr, batch.sequence_lengths});
    // Embedding losses see one row per sequence: the hidden state of its last token.
    ModelOutputs outputs = batch.pooled_positions.defined()
                               ? ModelOutputs(hidden.squeeze(0).index_select(0, batch.pooled_positions), torch::Tensor())
                               : ModelOutputs(*setup.model, hidden);
    try {
      return loss_function(outputs, batch.labels, batch.loss_scale, num_items);
    } catch (const std::exception& error) {
      fail("{} failed in step {}: {}; {}", loss_label, state.global_step + 1, error.what(), checkpoint_note());
    }
  }

  // The evaluation set in batches of --per_device_eval_batch_size rows.
  template <class Visit>
  void for_each_eval_batch(Visit&& visit) {
    const auto batch_size = static_cast<std::size_t>(std::max<int64_t>(1, arguments.per_device_eval_batch_size));
    for (std::size_t start = 0; start < setup.eval.size(); start += batch_size) {
      std::vector<const Example*> examples;
      for (std::size_t i = start; i < std::min(setup.eval.size(), start + batch_size); ++i) examples.push_back(&setup.eval[i]);
      visit(examples);
      emit(&Callback::on_prediction_step);
    }
  }

  // eval_loss of an embedding run: each evaluation batch's loss, weighted by its rows.
  std::map<std::string, double> evaluate_embeddings() {
    double loss_sum = 0;
    std::size_t rows = 0;
    for_each_eval_batch([&](const std::vector<const Example*>& examples) {
      loss_sum += forward_loss(collate_embeddings(examples), std::nullopt).item<double>() * static_cast<double>(examples.size());
      rows += examples.size();
    });
    if (rows == 0) return {};
    return {{"eval_loss", loss_sum / static_cast<double>(rows)}};
  }

  // The objective's loss of one micro-batch, under the same autocast as the token losses.
  torch::Tensor objective_loss(const ExampleGroup& examples, int64_t examples_in_step, MetricTotals& measured) {
    AutocastScope autocast(arguments.torch_dtype == "bfloat16");
    try {
      return setup.objective->loss(setup.model, examples, examples_in_step, measured);
    } catch (const std::exception& error) {
      fail("{} failed in step {}: {}; {}", setup.objective->name(), state.global_step + 1, error.what(), checkpoint_note());
    }
  }

  void begin_objective_step(const std::vector<ExampleGroup>& groups, int64_t step, bool training, MetricTotals& measured) {
    try {
      setup.objective->begin_step(setup.model, groups, step, training, measured);
    } catch (const std::exception& error) {
      fail("{} failed preparing step {}: {}; {}", setup.objective->name(), step + 1, error.what(), checkpoint_note());
    }
  }

  // eval_loss of an objective: each evaluation batch's loss (a mean over its rows), weighted by its
  // rows; eval_<key> for each measurement.
  std::map<std::string, double> evaluate_objective() {
    double loss_sum = 0;
    std::size_t rows = 0;
    MetricTotals measured;
    for_each_eval_batch([&](const ExampleGroup& examples) {
      const auto count = static_cast<int64_t>(examples.size());
      begin_objective_step({examples}, state.global_step, /*training=*/false, measured);
      loss_sum += objective_loss(examples, count, measured).item<double>() * static_cast<double>(count);
      rows += examples.size();
    });
    if (rows == 0) return {};
    auto results = measured.means("eval_");
    results["eval_loss"] = loss_sum / static_cast<double>(rows);
    return results;
  }

  struct StepOutcome {
    double loss = 0, grad_norm = 0;
    int64_t tokens = 0;
    bool finite = true;
    MetricTotals measured;  // the objective's, for the step's log entry
  };

  // Backpropagates one micro-batch's loss into the step; false (and nothing applied) when it is
  // not finite.
  bool accumulate(const torch::Tensor& loss, int64_t tokens, StepOutcome& outcome) {
    const double value = loss.item<double>();
    if (!std::isfinite(value)) return outcome.finite = false;
    loss.backward();
    outcome.loss += value;
    outcome.tokens += tokens;
    emit(&Callback::on_substep_end);
    return true;
  }

  StepOutcome token_loss_step(int64_t epoch, int64_t step) {
    StepOutcome outcome;
    auto batches = step_batches(epoch, step);
    const int64_t num_items = std::accumulate(batches.begin(), batches.end(), int64_t{0},
                                              [](int64_t sum, const Batch& b) { return sum + b.label_tokens; });
    for (const auto& batch : batches) {
      auto loss = forward_loss(batch, std::max<int64_t>(1, num_items));
      // Embedding losses are means per micro-batch, so the step's loss is their mean (as Hugging
      // Face's Trainer divides a loss that ignores num_items_in_batch by the accumulation steps).
      if (embedding_task(arguments)) loss = loss / static_cast<double>(batches.size());
      if (!accumulate(loss, batch.tokens, outcome)) break;
    }
    return outcome;
  }

  StepOutcome objective_step(int64_t epoch, int64_t step) {
    StepOutcome outcome;
    const auto groups = step_groups(epoch, step);
    int64_t examples_in_step = 0;
    for (const auto& examples : groups) examples_in_step += static_cast<int64_t>(examples.size());
    begin_objective_step(groups, state.global_step, /*training=*/true, outcome.measured);
    for (const auto& examples : groups) {
      const auto loss = objective_loss(examples, examples_in_step, outcome.measured);
      const auto tokens = std::accumulate(examples.begin(), examples.end(), int64_t{0},
                                          [](int64_t sum, const Example* example) { return sum + example->size(); });
      if (!accumulate(loss, tokens, outcome)) break;
    }
    return outcome;
  }

  StepOutcome run_step(int64_t epoch, int64_t step) {
    auto outcome = setup.objective ? objective_step(epoch, step) : token_loss_step(epoch, step);
    if (!outcome.finite) {
      optimizer->zero_grad();
      return outcome;
    }
    RECORD_USER_SCOPE("lathe::optimizer_step");  // clipping included: bench/trace_summary.py's optimizer family
    outcome.grad_norm = arguments.max_grad_norm > 0
                            ? torch::nn::utils::clip_grad_norm_(trainable, arguments.max_grad_norm)
                            : gradient_norm();
    emit(&Callback::on_pre_optimizer_step);
    scheduler->apply(*optimizer, state.global_step);
    optimizer->step();
    emit(&Callback::on_optimizer_step);
    optimizer->zero_grad();
    return outcome;
  }

  double gradient_norm() {
    double sum = 0;
    for (auto& parameter : trainable) {
      if (parameter.grad().defined()) sum += parameter.grad().to(torch::kDouble).pow(2).sum().item<double>();
    }
    return std::sqrt(sum);
  }

  void note_nonfinite() {
    ++state.skipped_nonfinite_steps;
    ++consecutive_nonfinite;
    fmt::print(stderr, "lathe: step {}: the loss is not finite; the step is skipped ({} so far)\n",
               state.global_step, state.skipped_nonfinite_steps);
    if (consecutive_nonfinite >= arguments.max_nan_steps) {
      fail("the loss was not finite in {} consecutive steps (lower --learning_rate, check the data, or "
           "raise --max_nan_steps); the last checkpoint is {}",
           consecutive_nonfinite, last_checkpoint.empty() ? "none" : last_checkpoint.string());
    }
  }

  void save_checkpoint() {
    const fs::path dir = setup.run_dir / fmt::format("checkpoint-{}", state.global_step);
    if (last_eval && last_eval_step == state.global_step) {
      const auto metric = arguments.best_model_metric();
      const auto key = metric.starts_with("eval_") ? metric : "eval_" + metric;
      if (auto found = last_eval->find(key); found != last_eval->end()) {
        const bool better = !state.best_metric ||
                            (arguments.best_metric_greater_is_better() ? found->second > *state.best_metric : found->second < *state.best_metric);
        if (better) {
          state.best_metric = found->second;
          state.best_model_checkpoint = dir.string();
        }
      }
    }
    CheckpointContents contents{setup.model, *setup.tuner, arguments, state, setup.files_to_copy,
                                arguments.save_only_model ? nullptr : optimizer.get(), state.global_step};
    write_checkpoint(dir, contents);
    last_checkpoint = dir;
    auto extra = context();
    extra.checkpoint_dir = dir.string();
    emit(&Callback::on_save, extra);
    prune_checkpoints(setup.run_dir, arguments.save_total_limit, {dir, fs::path(state.best_model_checkpoint)});
  }

  void maybe_resume() {
    if (arguments.resume_from_checkpoint.empty()) return;
    const fs::path dir = arguments.resume_from_checkpoint;
    setup.tuner->from_pretrained(setup.model, dir, /*trainable=*/true);
    if (arguments.resume_only_model) return;
    auto restored = read_checkpoint_state(dir, optimizer.get());
    state = restored;
    state.max_steps = std::max(state.max_steps, state.global_step);
    plan_max_steps_after_resume();
    if (setup.stream) skip_streamed_examples(state.global_step);
    last_checkpoint = dir;
    fmt::print(stderr, "lathe: resumed from {} at step {}\n", dir.string(), state.global_step);
  }

  // The stream's order depends only on the seed: skipping what the first run consumed puts a
  // resumed run exactly where the first one stopped.
  void skip_streamed_examples(int64_t steps) {
    const auto per_step = std::max<int64_t>(1, arguments.per_device_train_batch_size) *
                          std::max<int64_t>(1, arguments.gradient_accumulation_steps);
    for (int64_t i = 0; i < steps * per_step; ++i) setup.stream->next();
  }

  void plan_max_steps_after_resume() {
    if (setup.stream) return;
    // The plan comes from the arguments, as in the first run; the state only moves the position.
    state.max_steps = arguments.max_steps > 0
                          ? arguments.max_steps
                          : static_cast<int64_t>(std::ceil(arguments.num_train_epochs * static_cast<double>(steps_per_epoch)));
  }

  void log_step(const StepOutcome& outcome, double loss_sum, int64_t steps_in_window, int64_t tokens_in_window,
                double window_seconds, const MetricTotals& measured) {
    json logs = log.step_entry(state, loss_sum / std::max<int64_t>(1, steps_in_window), outcome.grad_norm,
                               optimizer->param_groups()[0].options().get_lr(), steps_in_window, tokens_in_window,
                               window_seconds);
    for (const auto& [key, value] : measured.means()) logs[key] = value;
    state.log_history.push_back(logs);
    auto extra = context();
    extra.logs = &logs;
    emit(&Callback::on_log, extra);
  }

  // Greedy responses to the prompts of the eval rows (everything before each row's last
  // response) and the responses the data holds, as text.
  EvalPrediction generate_eval_responses() {
    if (!setup.decode) fail("a generation metric needs the tokenizer (this trainer was set up without one)");
    SamplingParams params;
    params.max_new_tokens = arguments.max_new_tokens;
    params.stop_token_ids = setup.stop_token_ids;
    EvalPrediction prediction;
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& example : setup.eval) {
      const auto [start, end] = last_response_span(example.labels);
      if (start == end) continue;
      prompts.emplace_back(example.input_ids.begin(), example.input_ids.begin() + static_cast<std::ptrdiff_t>(start));
      prediction.references.push_back(setup.decode(
          {example.labels.begin() + static_cast<std::ptrdiff_t>(start), example.labels.begin() + static_cast<std::ptrdiff_t>(end)}));
    }
    const auto batch_size = static_cast<std::size_t>(std::max<int64_t>(1, arguments.per_device_eval_batch_size));
    for (std::size_t start = 0; start < prompts.size(); start += batch_size) {
      const std::vector<std::vector<int32_t>> group(prompts.begin() + static_cast<std::ptrdiff_t>(start),
                                                    prompts.begin() + static_cast<std::ptrdiff_t>(std::min(prompts.size(), start + batch_size)));
      for (const auto& generation : generate(setup.model, group, params)) prediction.generated.push_back(setup.decode(generation.ids));
    }
    return prediction;
  }

  void run_evaluation(Trainer& trainer) {
    if (setup.eval.empty()) return;
    auto metrics = trainer.evaluate();
    last_eval = metrics;
    last_eval_step = state.global_step;
    json logs = log.eval_entry(state, metrics);
    state.log_history.push_back(logs);
    auto extra = context();
    extra.metrics = &metrics;
    emit(&Callback::on_evaluate, extra);
    extra.logs = &logs;
    emit(&Callback::on_log, extra);
  }
};

Trainer::Trainer(TrainerSetup setup) : impl_(std::make_unique<Impl>(std::move(setup))) {
  auto& s = *impl_;
  s.select_plugins();
  s.plan_data();
  s.build_optimizer();
  s.setup.model->set_gradient_checkpointing(s.arguments.gradient_checkpointing);
  s.emit(&Callback::on_init_end);
}

Trainer::~Trainer() = default;

TrainingResult Trainer::train() {
  auto& s = *impl_;
  GeneratorScope generator(s.generator_state);
  StopSignalScope stop_signals;
  s.maybe_resume();
  s.setup.model->train();
  s.emit(&Callback::on_train_begin);
  s.log.start(s.state);

  double loss_sum = 0;
  int64_t window_steps = 0, window_tokens = 0;
  MetricTotals window_measured;
  auto window_start = std::chrono::steady_clock::now();
  bool saved_at_last_step = false;
  const auto epochs = static_cast<int64_t>(std::ceil(s.state.num_train_epochs));
  while (!s.control.should_training_stop && s.state.global_step < s.state.max_steps && s.state.epoch_index < epochs) {
    const int64_t epoch = s.state.epoch_index;
    if (s.state.step_in_epoch == 0) {
      s.control.should_epoch_stop = false;
      s.emit(&Callback::on_epoch_begin);
    }
    for (int64_t step = s.state.step_in_epoch; step < s.steps_per_epoch; ++step) {
      s.control.should_log = s.control.should_save = s.control.should_evaluate = false;
      s.emit(&Callback::on_step_begin);
      auto outcome = s.run_step(epoch, step);
      s.state.global_step += 1;
      s.state.step_in_epoch = step + 1;
      s.state.epoch = static_cast<double>(epoch) + static_cast<double>(step + 1) / static_cast<double>(s.steps_per_epoch);
      if (outcome.finite) {
        s.consecutive_nonfinite = 0;
        loss_sum += outcome.loss;
        window_steps += 1;
        window_tokens += outcome.tokens;
        window_measured.merge(outcome.measured);
        s.state.trained_tokens += outcome.tokens;
      } else {
        s.note_nonfinite();
      }
      if (s.state.global_step >= s.state.max_steps) s.control.should_training_stop = true;
      // Before on_step_end, so that the flow logs, evaluates and saves this step as the last one.
      if (const int signal = stop_signals.received(); signal != 0 && !s.control.should_training_stop) {
        fmt::print(stderr, "\nlathe: signal {} received: saving a checkpoint at step {} and stopping\n", signal,
                   s.state.global_step);
        s.control.should_training_stop = true;
      }
      s.emit(&Callback::on_step_end);
      saved_at_last_step = false;
      if (s.control.should_log && window_steps > 0) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
        s.log_step(outcome, loss_sum, window_steps, window_tokens, seconds, window_measured);
        window_measured.clear();
        loss_sum = 0;
        window_steps = window_tokens = 0;
        window_start = std::chrono::steady_clock::now();
      }
      if (s.control.should_evaluate) s.run_evaluation(*this);
      if (s.control.should_save) {
        s.save_checkpoint();
        saved_at_last_step = true;
      }
      if (s.control.should_training_stop || s.control.should_epoch_stop) break;
    }
    // An epoch ends when its steps are done or a callback ended it (should_epoch_stop).
    if (s.state.step_in_epoch >= s.steps_per_epoch || (s.control.should_epoch_stop && !s.control.should_training_stop)) {
      s.state.epoch_index += 1;
      s.state.step_in_epoch = 0;
      s.emit(&Callback::on_epoch_end);
    }
  }
  if (!saved_at_last_step && s.arguments.save_strategy != "no") {
    if (s.last_eval_step != s.state.global_step && !s.setup.eval.empty()) s.run_evaluation(*this);
    s.save_checkpoint();
  }
  s.emit(&Callback::on_train_end);
  s.log.finish(s.state, s.last_checkpoint, s.state.best_model_checkpoint);
  return {s.setup.run_dir, s.last_checkpoint, fs::path(s.state.best_model_checkpoint), s.state};
}

std::map<std::string, double> Trainer::evaluate() {
  auto& s = *impl_;
  torch::NoGradGuard no_grad;
  EvalModeScope eval_mode(s.setup.model);
  if (s.setup.objective) return s.evaluate_objective();
  if (embedding_task(s.arguments)) return s.evaluate_embeddings();
  double loss_sum = 0;
  int64_t tokens = 0;
  const auto when = fmt::format("at step {}", s.state.global_step);
  s.for_each_eval_batch([&](const std::vector<const Example*>& examples) {
    auto batch = collate_padded(examples, s.setup.pad_token_id);
    AutocastScope autocast(s.arguments.torch_dtype == "bfloat16");
    const auto hidden = s.setup.model->forward({batch.input_ids, batch.position_ids, batch.attention_mask, nullptr});
    auto shifted = shift_tokens(hidden, batch.labels, torch::Tensor());
    if (shifted.targets.numel() == 0) return;
    loss_sum += chunked_token_cross_entropy(shifted.hidden, s.setup.model->output_weight(), shifted.targets).sum().item<double>();
    tokens += shifted.targets.numel();
    s.metrics->add_batch(*s.setup.model, hidden, batch.labels, when);
  });
  std::map<std::string, double> results;
  if (tokens == 0) {
    s.metrics->compute(when);  // clears what was gathered
    return results;
  }
  results["eval_loss"] = loss_sum / static_cast<double>(tokens);
  if (s.metrics->any_generation()) {
    auto generated = s.generate_eval_responses();
    s.metrics->set_generated(std::move(generated.generated), std::move(generated.references));
  }
  for (const auto& [name, values] : s.metrics->compute(when)) {
    for (const auto& [key, value] : values) results["eval_" + key] = value;
  }
  return results;
}

fs::path make_run_dir(const Arguments& arguments) {
  const fs::path base = arguments.output_dir;
  if (!arguments.add_version) return base;
  int version = 0;
  std::error_code ec;
  if (fs::is_directory(base, ec)) {
    for (const auto& entry : fs::directory_iterator(base)) {
      const auto name = entry.path().filename().string();
      if (name.size() > 1 && name[0] == 'v' && std::isdigit(static_cast<unsigned char>(name[1]))) {
        version = std::max(version, std::stoi(name.substr(1)) + 1);
      }
    }
  }
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  return base / fmt::format("v{}-{:%Y%m%d-%H%M%S}", version, fmt::localtime(now));
}

}  // namespace lathe
