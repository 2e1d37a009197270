// The training loop. One optimizer step = gradient_accumulation_steps micro-batches whose losses
// are each divided by the step's total count of trained tokens (num_items_in_batch), so that
// accumulation gives the same loss and gradients as one large batch (plugins.md §2).
#include "lathe/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fmt/chrono.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "common/format.h"
#include "lathe/files.h"
#include "lathe/generate.h"
#include "lathe/plugin/metric.h"
#include "train/checkpoint.h"
#include "train/run_log.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// bfloat16 autocast on the CPU for the forward pass; float32 master weights stay untouched.
class AutocastScope {
 public:
  explicit AutocastScope(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(false);
  }

 private:
  bool enabled_;
};

std::string loss_name(const Arguments& arguments) {
  if (!arguments.loss_type.empty()) return arguments.loss_type;
  return arguments.loss_scale == "default" || arguments.loss_scale == "all" || arguments.loss_scale == "last_round"
             ? "cross_entropy"
             : "loss_scale";
}

std::vector<std::string> metric_names(const Arguments& arguments) {
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

// Positions whose logits are computed at once in evaluation: [1, chunk, vocab] stays small
// whatever the sequence length and the eval set's size.
constexpr int64_t kLogitChunk = 512;

}  // namespace

struct NamedMetric {
  std::string name, origin;
  std::shared_ptr<Metric> metric;
};

struct Trainer::Impl {
  TrainerSetup setup;
  Arguments& arguments = setup.arguments;
  TrainerState state;
  TrainerControl control;
  std::vector<NamedCallback> callbacks;
  LossFunction loss_function;
  std::string loss_label;  // "loss 'name' (origin)", for errors
  std::vector<NamedMetric> metrics;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;
  std::vector<torch::Tensor> trainable;

  std::vector<std::vector<std::size_t>> units;  // examples trained together in one sequence or row
  bool packed = false;
  int64_t micro_per_epoch = 0, steps_per_epoch = 0;
  std::optional<std::map<std::string, double>> last_eval;
  int64_t consecutive_nonfinite = 0;
  RunLog log;
  fs::path last_checkpoint;

  explicit Impl(TrainerSetup s) : setup(std::move(s)), log(setup.run_dir) {}

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
    const auto name = loss_name(arguments);
    const auto& loss = loss_registry().get(name);
    loss_function = loss.factory(arguments);
    loss_label = fmt::format("loss '{}' ({})", name, loss.origin);
    for (const auto& metric_name : metric_names(arguments)) {
      const auto& entry = metric_registry().get(metric_name);
      metrics.push_back({metric_name, entry.origin, entry.factory(arguments)});
    }
    callbacks = default_callbacks(arguments, log);
    for (std::size_t i = 0; i < setup.extra_callbacks.size(); ++i) {
      callbacks.push_back({fmt::format("extra #{}", i + 1), "the program", setup.extra_callbacks[i]});
    }
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
    if (arguments.max_steps <= 0) fail("--streaming needs --max_steps (a streamed dataset has no known length)");
    if (arguments.packing) fail("--streaming cannot pack (packing needs every row up front); use --padding_free");
    packed = arguments.padding_free;
    state.max_steps = arguments.max_steps;
    steps_per_epoch = state.max_steps;
    micro_per_epoch = state.max_steps * std::max<int64_t>(1, arguments.gradient_accumulation_steps);
    state.num_train_epochs = 1;
  }

  std::vector<Batch> streamed_batches() {
    const auto batch = std::max<int64_t>(1, arguments.per_device_train_batch_size);
    std::vector<Batch> batches;
    for (int64_t micro = 0; micro < std::max<int64_t>(1, arguments.gradient_accumulation_steps); ++micro) {
      std::vector<Example> examples;
      for (int64_t i = 0; i < batch; ++i) examples.push_back(setup.stream->next());
      std::vector<const Example*> pointers;
      for (const auto& example : examples) pointers.push_back(&example);
      batches.push_back(packed ? collate_packed(pointers) : collate_padded(pointers, setup.pad_token_id));
    }
    return batches;
  }

  void build_optimizer() {
    auto made = optimizer_registry().factory(optimizer_name(arguments))(arguments, *setup.model, state.max_steps);
    optimizer = std::move(made.optimizer);
    scheduler = made.scheduler ? made.scheduler
                               : make_scheduler(arguments.lr_scheduler_type, warmup_steps_for(arguments, state.max_steps),
                                                state.max_steps, arguments.plugin_args.value("min_lr_rate", 0.1));
    scheduler->remember_base_rates(*optimizer);
    for (auto& group : optimizer->param_groups()) {
      for (auto& parameter : group.params()) trainable.push_back(parameter);
    }
  }

  // The micro-batches of optimizer step `step` of epoch `epoch`: shuffled with seed + epoch, so
  // a resumed run sees the same order without saving it.
  std::vector<Batch> step_batches(int64_t epoch, int64_t step) {
    if (setup.stream) return streamed_batches();
    std::vector<std::size_t> order(units.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::mt19937_64 rng(static_cast<uint64_t>(arguments.seed + epoch));
    std::shuffle(order.begin(), order.end(), rng);
    const auto batch = std::max<int64_t>(1, arguments.per_device_train_batch_size);
    const auto accumulation = std::max<int64_t>(1, arguments.gradient_accumulation_steps);
    std::vector<Batch> batches;
    for (int64_t micro = step * accumulation; micro < std::min(micro_per_epoch, (step + 1) * accumulation); ++micro) {
      std::vector<const Example*> examples;
      for (int64_t u = micro * batch; u < std::min<int64_t>(static_cast<int64_t>(units.size()), (micro + 1) * batch); ++u) {
        for (auto index : units[order[u]]) examples.push_back(&setup.train[index]);
      }
      batches.push_back(packed ? collate_packed(examples) : collate_padded(examples, setup.pad_token_id));
    }
    return batches;
  }

  torch::Tensor forward_loss(const Batch& batch, std::optional<int64_t> num_items) {
    // The loss runs under autocast too, as in Hugging Face's Trainer: the output head's matmul
    // then runs in bfloat16 like every other projection (chunked_token_cross_entropy).
    AutocastScope autocast(arguments.torch_dtype == "bfloat16");
    const auto hidden = setup.model->forward(
        {batch.input_ids, batch.position_ids, batch.attention_mask, nullptr, batch.sequence_lengths});
    ModelOutputs outputs(*setup.model, hidden);
    try {
      return loss_function(outputs, batch.labels, batch.loss_scale, num_items);
    } catch (const std::exception& error) {
      fail("{} failed in step {}: {}; {}", loss_label, state.global_step + 1, error.what(), checkpoint_note());
    }
  }

  struct StepOutcome {
    double loss = 0, grad_norm = 0;
    int64_t tokens = 0;
    bool finite = true;
  };

  StepOutcome run_step(int64_t epoch, int64_t step) {
    StepOutcome outcome;
    auto batches = step_batches(epoch, step);
    const int64_t num_items = std::accumulate(batches.begin(), batches.end(), int64_t{0},
                                              [](int64_t sum, const Batch& b) { return sum + b.label_tokens; });
    for (const auto& batch : batches) {
      auto loss = forward_loss(batch, std::max<int64_t>(1, num_items));
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        outcome.finite = false;
        break;
      }
      loss.backward();
      outcome.loss += value;
      outcome.tokens += batch.tokens;
      emit(&Callback::on_substep_end);
    }
    if (!outcome.finite) {
      optimizer->zero_grad();
      return outcome;
    }
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

  const std::string& best_metric_name() const { return arguments.metric_for_best_model; }
  bool greater_is_better() const {
    return arguments.greater_is_better.value_or(best_metric_name() != "loss" && !best_metric_name().ends_with("loss"));
  }

  void save_checkpoint() {
    const fs::path dir = setup.run_dir / fmt::format("checkpoint-{}", state.global_step);
    if (last_eval) {
      auto key = best_metric_name().starts_with("eval_") ? best_metric_name() : "eval_" + best_metric_name();
      if (auto found = last_eval->find(key); found != last_eval->end()) {
        const bool better = !state.best_metric ||
                            (greater_is_better() ? found->second > *state.best_metric : found->second < *state.best_metric);
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
                double window_seconds) {
    json logs = log.step_entry(state, loss_sum / std::max<int64_t>(1, steps_in_window), outcome.grad_norm,
                               optimizer->param_groups()[0].options().get_lr(), steps_in_window, tokens_in_window,
                               window_seconds);
    state.log_history.push_back(logs);
    auto extra = context();
    extra.logs = &logs;
    emit(&Callback::on_log, extra);
  }

  // Runs `body` and names the metric plugin in any error it throws.
  template <class Body>
  auto with_metric(const NamedMetric& named, Body&& body) {
    try {
      return body();
    } catch (const std::exception& error) {
      fail("metric '{}' ({}) failed at step {}: {}", named.name, named.origin, state.global_step, error.what());
    }
  }

  // The metric's preprocess_logits on logits of at most kLogitChunk positions of one row at a
  // time, the results joined back into [batch, seq, ...].
  torch::Tensor preprocess_in_chunks(const NamedMetric& named, const torch::Tensor& hidden, const torch::Tensor& labels) {
    std::vector<torch::Tensor> rows;
    for (int64_t row = 0; row < hidden.size(0); ++row) {
      std::vector<torch::Tensor> pieces;
      for (int64_t start = 0; start < hidden.size(1); start += kLogitChunk) {
        auto logits = setup.model->logits(hidden.slice(0, row, row + 1).slice(1, start, start + kLogitChunk));
        auto piece = with_metric(named, [&] {
          return named.metric->preprocess_logits(logits, labels.slice(0, row, row + 1).slice(1, start, start + kLogitChunk));
        });
        if (!piece.defined()) return {};
        pieces.push_back(piece);
      }
      rows.push_back(torch::cat(pieces, 1));
    }
    return torch::cat(rows, 0);
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
  torch::manual_seed(static_cast<uint64_t>(s.arguments.seed));
  s.maybe_resume();
  s.setup.model->train();
  s.emit(&Callback::on_train_begin);
  s.log.start(s.state);

  double loss_sum = 0;
  int64_t window_steps = 0, window_tokens = 0;
  auto window_start = std::chrono::steady_clock::now();
  bool saved_at_last_step = false;
  while (!s.control.should_training_stop && s.state.global_step < s.state.max_steps) {
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
        s.state.trained_tokens += outcome.tokens;
      } else {
        s.note_nonfinite();
      }
      if (s.state.global_step >= s.state.max_steps) s.control.should_training_stop = true;
      s.emit(&Callback::on_step_end);
      saved_at_last_step = false;
      if (s.control.should_log && window_steps > 0) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
        s.log_step(outcome, loss_sum, window_steps, window_tokens, seconds);
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
    if (s.state.step_in_epoch >= s.steps_per_epoch) {
      s.state.epoch_index += 1;
      s.state.step_in_epoch = 0;
      s.emit(&Callback::on_epoch_end);
    }
  }
  if (!saved_at_last_step) {
    if (!s.last_eval && !s.setup.eval.empty()) s.run_evaluation(*this);
    s.save_checkpoint();
  }
  s.emit(&Callback::on_train_end);
  s.log.finish(s.state, s.last_checkpoint, s.state.best_model_checkpoint);
  return {s.setup.run_dir, s.last_checkpoint, fs::path(s.state.best_model_checkpoint), s.state};
}

std::map<std::string, double> Trainer::evaluate() {
  auto& s = *impl_;
  torch::NoGradGuard no_grad;
  s.setup.model->eval();
  // One EvalPrediction per metric: each keeps what its own preprocess_logits returns.
  std::vector<EvalPrediction> predictions(s.metrics.size());
  double loss_sum = 0;
  int64_t tokens = 0;
  const auto batch_size = static_cast<std::size_t>(std::max<int64_t>(1, s.arguments.per_device_eval_batch_size));
  for (std::size_t start = 0; start < s.setup.eval.size(); start += batch_size) {
    std::vector<const Example*> examples;
    for (std::size_t i = start; i < std::min(s.setup.eval.size(), start + batch_size); ++i) examples.push_back(&s.setup.eval[i]);
    auto batch = collate_padded(examples, s.setup.pad_token_id);
    AutocastScope autocast(s.arguments.torch_dtype == "bfloat16");
    const auto hidden = s.setup.model->forward({batch.input_ids, batch.position_ids, batch.attention_mask, nullptr});
    auto shifted = shift_tokens(hidden, batch.labels, torch::Tensor());
    if (shifted.targets.numel() == 0) continue;
    loss_sum += chunked_token_cross_entropy(shifted.hidden, s.setup.model->output_weight(), shifted.targets).sum().item<double>();
    tokens += shifted.targets.numel();
    for (std::size_t m = 0; m < s.metrics.size(); ++m) {
      if (s.metrics[m].metric->needs_generation()) continue;
      auto preprocessed = s.preprocess_in_chunks(s.metrics[m], hidden, batch.labels);
      if (!preprocessed.defined()) continue;
      predictions[m].predictions.push_back(preprocessed);
      predictions[m].labels.push_back(batch.labels);
    }
  }
  std::map<std::string, double> results;
  if (tokens > 0) {
    results["eval_loss"] = loss_sum / static_cast<double>(tokens);
    std::optional<EvalPrediction> generated;
    for (std::size_t m = 0; m < s.metrics.size(); ++m) {
      const auto& named = s.metrics[m];
      if (named.metric->needs_generation()) {
        if (!generated) generated = s.generate_eval_responses();
        predictions[m].generated = generated->generated;
        predictions[m].references = generated->references;
      }
      for (const auto& [key, value] : s.with_metric(named, [&] { return named.metric->compute(predictions[m]); })) {
        results["eval_" + key] = value;
      }
    }
  }
  s.setup.model->train();
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
