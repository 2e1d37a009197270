// lathe rlhf --rlhf_type grpo (grpo.h): rollouts on the generation engine, rewards from the ORM
// registry, ms-swift's advantages, surrogate loss, KL and metrics.
#include "lathe/train/grpo.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/plugin/multi_turn.h"
#include "lathe/plugin/orm.h"
#include "lathe/plugin/reward_model.h"

namespace lathe {
namespace {

using nlohmann::json;

// ms-swift's scale_rewards default of each estimator.
std::string scale_of(const Arguments& arguments) {
  if (arguments.scale_rewards) return *arguments.scale_rewards;
  if (arguments.advantage_estimator == "rloo") return "none";
  if (arguments.advantage_estimator == "reinforce_plus_plus") return "batch";
  return "group";
}

// The unbiased std of each row ([groups, K] -> [groups]); 0 for a single value.
torch::Tensor row_std(const torch::Tensor& grouped) {
  return grouped.size(1) > 1 ? grouped.std(1, /*unbiased=*/true) : torch::zeros({grouped.size(0)}, grouped.options());
}

torch::Tensor batch_std(const torch::Tensor& values) {
  return values.numel() > 1 ? values.std(/*unbiased=*/true) : torch::zeros({}, values.options());
}

}  // namespace

torch::Tensor group_advantages(const torch::Tensor& rewards, int64_t group, const std::string& estimator,
                               const std::string& scale) {
  if (group < 1 || rewards.size(0) % group != 0)
    fail("{} rewards do not form groups of {} completions", rewards.size(0), group);
  const auto grouped = rewards.view({-1, group});
  const auto mean = grouped.mean(1).repeat_interleave(group);
  auto advantages = rewards - mean;
  if (estimator == "rloo" && group > 1) advantages = advantages * (static_cast<double>(group) / static_cast<double>(group - 1));
  torch::Tensor std;
  const auto& scaled = estimator == "reinforce_plus_plus" ? advantages : rewards;
  if (scale == "batch") std = batch_std(scaled).expand_as(rewards);
  else if (scale == "group") std = row_std(scaled.view({-1, group})).repeat_interleave(group);
  else if (scale != "none") fail("--scale_rewards {:?}: expected group, batch or none", scale);
  return std.defined() ? advantages / (std + 1e-4) : advantages;
}

torch::Tensor k3_kl(const torch::Tensor& reference_logps, const torch::Tensor& logps) {
  const auto d = (reference_logps - logps).clamp(-20, 20);
  return (torch::exp(d) - d - 1).clamp(-10, 10);
}

namespace {

// Per-sequence means of per-token values under the mask, broadcast back to the tokens.
torch::Tensor sequence_means(const GrpoTokens& tokens, const torch::Tensor& values) {
  const auto counts = torch::zeros({tokens.sequences}, tokens.mask.options()).index_add(0, tokens.sequence, tokens.mask);
  const auto sums = torch::zeros({tokens.sequences}, values.options()).index_add(0, tokens.sequence, values * tokens.mask);
  return sums / counts.clamp_min(1);
}

double masked_mean(const torch::Tensor& values, const torch::Tensor& mask) {
  return ((values * mask).sum() / mask.sum().clamp_min(1)).item<double>();
}

}  // namespace

GrpoLoss grpo_loss(const GrpoTokens& tokens, const GrpoLossSettings& s) {
  const auto log_ratio = tokens.logps - tokens.old_logps;
  torch::Tensor log_weights;
  const bool sequence_level = s.importance_sampling_level != "token";
  if (!sequence_level) {
    log_weights = log_ratio;
  } else {
    const auto per_sequence = sequence_means(tokens, log_ratio).index_select(0, tokens.sequence);
    log_weights = s.importance_sampling_level == "sequence"
                      ? per_sequence
                      : tokens.logps - tokens.logps.detach() + per_sequence.detach();  // GSPO-token
  }
  auto ratio = torch::exp(log_weights);
  const auto& advantages = tokens.advantages;
  torch::Tensor per_token;
  GrpoLoss result;
  if (s.loss_type == "cispo") {
    per_token = -torch::clamp_max(ratio, s.epsilon_high).detach() * advantages * tokens.logps;
  } else {
    const auto clipped = torch::clamp(ratio, 1 - s.epsilon, 1 + s.epsilon_high);
    if (s.delta) ratio = torch::clamp_max(ratio, *s.delta);  // ms-swift counts the clips on this too
    per_token = -torch::min(ratio * advantages, clipped * advantages);
  }
  if (tokens.reference_logps.defined() && s.beta != 0) {
    const auto kl = k3_kl(tokens.reference_logps, tokens.logps);
    per_token = per_token + s.beta * kl;
    result.kl = masked_mean(kl.detach(), tokens.mask);
  }
  const auto masked = per_token * tokens.mask;
  const auto micro = static_cast<double>(std::max<int64_t>(1, s.micro_batches));
  if (s.loss_type == "grpo") {
    const auto counts = torch::zeros({tokens.sequences}, tokens.mask.options()).index_add(0, tokens.sequence, tokens.mask);
    const auto sums = torch::zeros({tokens.sequences}, masked.options()).index_add(0, tokens.sequence, masked);
    result.loss = (sums / counts.clamp_min(1)).mean() / micro;
  } else if (s.loss_type == "bnpo") {
    result.loss = masked.sum() / tokens.mask.sum().clamp_min(1) / micro;
  } else if (s.loss_type == "dr_grpo") {
    result.loss = masked.sum() / static_cast<double>(tokens.sequences * s.max_completion_length) / micro;
  } else if (s.loss_type == "dapo" || s.loss_type == "cispo") {
    // ms-swift normalises by the whole rollout batch's tokens and undoes the Trainer's division
    // by the accumulation steps.
    result.loss = masked.sum() / std::max(1.0, s.window_tokens);
  } else {
    fail("--loss_type {}: grpo takes grpo, bnpo, dr_grpo, dapo or cispo", s.loss_type);
  }
  {
    torch::NoGradGuard no_grad;
    const auto r = ratio.detach();
    const auto positive = (advantages > 0).to(torch::kFloat32), negative = (advantages < 0).to(torch::kFloat32);
    if (s.loss_type == "cispo") {
      result.clip_high = masked_mean((r > s.epsilon_high).to(torch::kFloat32) * positive, tokens.mask);
    } else {
      const auto low = (r < 1 - s.epsilon).to(torch::kFloat32) * negative;
      const auto high = (r > 1 + s.epsilon_high).to(torch::kFloat32) * positive;
      result.clip_low = masked_mean(low, tokens.mask);
      result.clip_high = masked_mean(high, tokens.mask);
      result.clip_region = masked_mean(torch::clamp_max(low + high, 1), tokens.mask);
    }
  }
  return result;
}

double grpo_beta(const Arguments& arguments) { return arguments.beta.value_or(0.04); }

bool grpo_kl_in_reward(const Arguments& arguments) {
  return arguments.kl_in_reward.value_or(arguments.advantage_estimator != "grpo");
}

void check_grpo_arguments(const Arguments& arguments) {
  const auto batch = std::max<int64_t>(1, arguments.per_device_train_batch_size);
  const auto accumulation = std::max<int64_t>(1, arguments.gradient_accumulation_steps);
  if (arguments.reward_funcs.empty() && arguments.reward_model.empty())
    fail("--reward_funcs: grpo needs at least one reward function (lathe plugins lists them: accuracy, format, ...) "
         "or a --reward_model");
  const auto sources = arguments.reward_funcs.size() + arguments.reward_model.size();
  if (!arguments.reward_weights.empty() && arguments.reward_weights.size() != sources)
    fail("--reward_weights: one weight per reward function, then per reward model ({} functions, {} models, {} weights)",
         arguments.reward_funcs.size(), arguments.reward_model.size(), arguments.reward_weights.size());
  for (const auto& name : arguments.reward_funcs) orm_registry().get(name);  // an unknown name lists the known ones
  const auto& plugins = arguments.reward_model_plugin;
  if (plugins.size() > 1 && plugins.size() != arguments.reward_model.size())
    fail("--reward_model_plugin: one plugin for every reward model, or one per model ({} models, {} plugins)",
         arguments.reward_model.size(), plugins.size());
  for (const auto& name : plugins) reward_model_registry().get(name);
  std::error_code ec;
  for (const auto& dir : arguments.reward_model)
    if (!std::filesystem::is_directory(dir, ec)) fail_not_local("--reward_model folder", dir);
  if (arguments.loss_type.size() > 1) fail("--loss_type: grpo takes one loss (grpo, bnpo, dr_grpo, dapo or cispo)");
  if (!arguments.loss_type.empty()) {
    static const std::vector<std::string> known{"grpo", "bnpo", "dr_grpo", "dapo", "cispo"};
    if (std::find(known.begin(), known.end(), arguments.loss_type.front()) == known.end())
      fail("--loss_type {}: grpo takes grpo, bnpo, dr_grpo, dapo or cispo", arguments.loss_type.front());
  }
  // ms-swift counts the batch in completions: a step's rollouts must hold whole groups.
  const auto steps_per_generation = arguments.steps_per_generation.value_or(accumulation);
  if (arguments.steps_per_generation && arguments.generation_batch_size)
    fail("--steps_per_generation and --generation_batch_size: set at most one");
  const auto generation_batch = arguments.generation_batch_size.value_or(batch * steps_per_generation);
  if (generation_batch != batch * accumulation)
    fail("--generation_batch_size {} (or --steps_per_generation): Lathe generates once per optimizer step, so the "
         "rollout batch is per_device_train_batch_size x gradient_accumulation_steps = {} completions",
         generation_batch, batch * accumulation);
  if (generation_batch % arguments.num_generations != 0)
    fail("per_device_train_batch_size x gradient_accumulation_steps = {} completions per step must be a multiple of "
         "--num_generations {} (each prompt's completions form one group); e.g. --per_device_train_batch_size {}",
         generation_batch, arguments.num_generations, arguments.num_generations);
  const auto eval_group = arguments.num_generations_eval.value_or(arguments.num_generations);
  if (std::max<int64_t>(1, arguments.per_device_eval_batch_size) % eval_group != 0)
    fail("--per_device_eval_batch_size {} must be a multiple of the evaluation group {} (--num_generations_eval, "
         "else --num_generations)", arguments.per_device_eval_batch_size, eval_group);
  if (arguments.sync_ref_model && grpo_beta(arguments) == 0)
    fail("--sync_ref_model: with --beta 0 there is no reference model to sync");
  if (arguments.sync_ref_model && (arguments.train_type == "lora" || arguments.train_type == "ia3") &&
      arguments.ref_model.empty() && arguments.ref_adapters.empty() && arguments.init_weights != "pissa")
    fail("--sync_ref_model: the reference of a {} run is the model with its adapters bypassed, which cannot move "
         "toward the policy (as in TRL, syncing needs a separate reference: --train_type full, or --ref_model)",
         arguments.train_type);
  if (!arguments.multi_turn_scheduler.empty()) multi_turn_registry().get(arguments.multi_turn_scheduler);
  if (arguments.max_turns && *arguments.max_turns < 1) fail("--max_turns must be at least 1");
  if (arguments.epsilon_high && *arguments.epsilon_high < 0) fail("--epsilon_high must be at least 0");
}

namespace {

// Turns a multi-turn rollout takes at most without --max_turns (ms-swift sets no limit; a scheduler
// that never finished would hang the run).
constexpr int64_t kDefaultMaxTurns = 10;

// ms-swift logs each built-in under its class name: rewards/MathAccuracy/mean.
std::string reward_metric_name(const std::string& name) {
  static const std::map<std::string, std::string> classes{
      {"accuracy", "MathAccuracy"}, {"format", "Format"}, {"react_format", "ReActFormat"},
      {"cosine", "CosineReward"}, {"repetition", "RepetitionPenalty"}, {"soft_overlong", "SoftOverlong"}};
  const auto found = classes.find(name);
  return found != classes.end() && orm_registry().get(name).origin == "built-in" ? found->second : name;
}

// One completion of a prompt, with what its loss needs.
struct Rollout {
  const Example* source = nullptr;         // the prompt: its conversation and dataset row
  std::vector<int32_t> input_ids, labels;  // prompt + completion; the prompt untrained
  std::vector<double> scores;              // one per reward function, then per reward model (NaN: none)
  int64_t turns = 1;
  std::shared_ptr<const Conversation> conversation;  // multi-turn: the whole trajectory
  json rollout_infos;
  std::vector<float> old_logps, reference_logps;  // per completion token; empty when not needed
  std::string text;
  bool truncated = false;
  double advantage = 0;
  int64_t completion_tokens = 0;
};

std::vector<TokenSequence> sequences_of(const std::vector<Rollout>& rollouts, const std::vector<std::size_t>& picked) {
  std::vector<TokenSequence> sequences;
  for (const auto index : picked) sequences.push_back({rollouts[index].input_ids, rollouts[index].labels});
  return sequences;
}

std::vector<float> to_floats(const torch::Tensor& values) {
  const auto flat = values.detach().to(torch::kFloat32).contiguous();
  return {flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel()};
}

// Per-sequence slices of per-token values in row order.
std::vector<std::vector<float>> split_by_sequence(const SequenceScores& scores, std::size_t count) {
  std::vector<std::vector<float>> parts(count);
  const auto values = to_floats(scores.token_logps);
  const auto owner = scores.token_sequence.contiguous();
  const auto* sequence = owner.data_ptr<int64_t>();
  for (std::size_t k = 0; k < values.size(); ++k) parts[static_cast<std::size_t>(sequence[k])].push_back(values[k]);
  return parts;
}

double nan_mean(const std::vector<double>& values, std::size_t& count) {
  double sum = 0;
  count = 0;
  for (const double value : values)
    if (!std::isnan(value)) sum += value, ++count;
  return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

double nan_std(const std::vector<double>& values, double mean, std::size_t count) {
  if (count < 2) return 0;
  double squares = 0;
  for (const double value : values)
    if (!std::isnan(value)) squares += (value - mean) * (value - mean);
  return std::sqrt(squares / static_cast<double>(count - 1));
}

class GrpoObjective : public TrainingObjective {
 public:
  GrpoObjective(const Arguments& arguments, GrpoSetup setup)
      : arguments_(arguments), setup_(std::move(setup)), beta_(grpo_beta(arguments)),
        kl_in_reward_(grpo_kl_in_reward(arguments)), scale_(scale_of(arguments)) {
    check_grpo_arguments(arguments);
    settings_.loss_type = arguments.loss_type.empty() ? "grpo" : arguments.loss_type.front();
    settings_.importance_sampling_level = arguments.importance_sampling_level;
    settings_.epsilon = arguments.epsilon;
    settings_.epsilon_high = arguments.epsilon_high.value_or(arguments.epsilon);
    settings_.delta = arguments.delta;
    settings_.beta = kl_in_reward_ ? 0.0 : beta_;
    settings_.max_completion_length = arguments.max_completion_length;
    for (const auto& name : arguments.reward_funcs) {
      functions_.push_back(orm_registry().create(name, arguments));
      metric_names_.push_back(reward_metric_name(name));
      source_names_.push_back(name);
    }
    // Reward models come after the functions, as in ms-swift's --reward_weights; each logs under
    // its folder's name.
    for (std::size_t m = 0; m < arguments.reward_model.size(); ++m) {
      const std::filesystem::path dir = arguments.reward_model[m];
      const auto& plugins = arguments.reward_model_plugin;
      const auto plugin = plugins.empty() ? std::string("default") : plugins.size() == 1 ? plugins[0] : plugins[m];
      models_.push_back(reward_model_registry().create(plugin, arguments, dir));
      const auto name = dir.lexically_normal().filename().empty() ? dir.lexically_normal().parent_path().filename()
                                                                  : dir.lexically_normal().filename();
      metric_names_.push_back(name.string());
      source_names_.push_back(fmt::format("reward model {} ({})", dir.string(), plugin));
    }
    weights_ = arguments.reward_weights.empty() ? std::vector<double>(metric_names_.size(), 1.0) : arguments.reward_weights;
    if (!arguments.multi_turn_scheduler.empty()) {
      if (!setup_.encode_prompt || !setup_.encode_trajectory) fail("grpo: multi-turn rollouts need the run's template");
      scheduler_ = multi_turn_registry().create(arguments.multi_turn_scheduler, arguments_, setup_.agent_template);
    }
  }

  std::string name() const override { return fmt::format("grpo ({})", settings_.loss_type); }

  void begin_step(CausalLM& model, const std::vector<std::vector<const Example*>>& micro_batches, int64_t step,
                  bool training, MetricTotals& metrics) override {
    std::vector<const Example*> examples;
    for (const auto& micro : micro_batches) examples.insert(examples.end(), micro.begin(), micro.end());
    auto& batch = training ? training_ : evaluation_;
    current_ = &batch;
    micro_batches_ = static_cast<int64_t>(micro_batches.size());
    // num_iterations > 1: the recipe repeats each step's prompts, and the rollouts are reused.
    const bool reuse = training && arguments_.num_iterations > 1 && step % arguments_.num_iterations != 0 &&
                       batch.rollouts.size() == examples.size();
    if (training && arguments_.sync_ref_model && step > 0 && step % arguments_.ref_model_sync_steps == 0 && !reuse)
      sync_reference(model);
    if (!reuse) {
      const auto group = training ? arguments_.num_generations
                                  : arguments_.num_generations_eval.value_or(arguments_.num_generations);
      if (examples.size() % static_cast<std::size_t>(group) != 0)
        fail("grpo: {} completions do not form groups of {}", examples.size(), group);
      const auto start = std::chrono::steady_clock::now();
      batch.rollouts = roll_out(model, examples, rollout_seed(step, training ? 0 : 1, examples.size()));
      const auto generated = std::chrono::steady_clock::now();
      score(model, batch, group, step, training, metrics);
      log_timing(batch.rollouts, start, generated, metrics);
    }
    batch.index.clear();
    for (std::size_t i = 0; i < examples.size(); ++i) batch.index[examples[i]] = i;
    // ms-swift counts every completion token here, the ones --overlong_filter masks too.
    settings_.window_tokens = 0;
    for (const auto& rollout : batch.rollouts) settings_.window_tokens += static_cast<double>(rollout.completion_tokens);
  }

  torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t /*examples_in_step*/,
                     MetricTotals& metrics) override {
    if (!current_) fail("grpo: a loss without its rollouts (begin_step was not called)");
    std::vector<std::size_t> picked;
    for (const auto* example : examples) {
      const auto found = current_->index.find(example);
      if (found == current_->index.end()) fail("grpo: an example of the micro-batch has no rollout");
      picked.push_back(found->second);
    }
    const auto& rollouts = current_->rollouts;
    const auto scores = score_sequences(model, sequences_of(rollouts, picked));
    GrpoTokens tokens;
    tokens.logps = scores.token_logps.to(torch::kFloat32);
    tokens.sequence = scores.token_sequence;
    tokens.sequences = static_cast<int64_t>(picked.size());
    std::vector<float> advantages, mask, old, reference;
    for (std::size_t s = 0; s < picked.size(); ++s) {
      const auto& rollout = rollouts[picked[s]];
      const float keep = arguments_.overlong_filter && rollout.truncated ? 0.0F : 1.0F;
      for (int64_t t = 0; t < rollout.completion_tokens; ++t) {
        advantages.push_back(static_cast<float>(rollout.advantage));
        mask.push_back(keep);
      }
      old.insert(old.end(), rollout.old_logps.begin(), rollout.old_logps.end());
      reference.insert(reference.end(), rollout.reference_logps.begin(), rollout.reference_logps.end());
    }
    const auto count = tokens.logps.size(0);
    if (static_cast<int64_t>(advantages.size()) != count) fail("grpo: {} scored tokens for {} completion tokens", count, advantages.size());
    tokens.advantages = torch::tensor(advantages, torch::kFloat32);
    tokens.mask = torch::tensor(mask, torch::kFloat32);
    tokens.old_logps = static_cast<int64_t>(old.size()) == count ? torch::tensor(old, torch::kFloat32) : tokens.logps.detach();
    if (settings_.beta != 0) tokens.reference_logps = torch::tensor(reference, torch::kFloat32);
    auto settings = settings_;
    settings.micro_batches = micro_batches_;
    const auto result = grpo_loss(tokens, settings);
    if (result.kl) metrics.add("kl", *result.kl);
    if (settings.loss_type == "cispo") {
      metrics.add("cispo_clip_ratio", result.clip_high);
    } else {
      metrics.add("clip_ratio/low_mean", result.clip_low);
      metrics.add("clip_ratio/low_min", result.clip_low);
      metrics.add("clip_ratio/high_mean", result.clip_high);
      metrics.add("clip_ratio/high_max", result.clip_high);
      metrics.add("clip_ratio/region_mean", result.clip_region);
    }
    return result.loss;
  }

 private:
  struct Batch {
    std::vector<Rollout> rollouts;
    std::unordered_map<const Example*, std::size_t> index;
  };

  // Seeds from --seed, the step and the draw (0: training, 1: evaluation, 2...: dynamic resampling)
  // and the completion: a rerun (or a resumed run) draws the same.
  uint64_t rollout_seed(int64_t step, int64_t draw, std::size_t completions) const {
    const auto per_step = static_cast<uint64_t>(completions) * static_cast<uint64_t>(2 + arguments_.max_resample_times);
    return static_cast<uint64_t>(arguments_.seed) * 1000003ULL + static_cast<uint64_t>(step) * per_step +
           static_cast<uint64_t>(draw) * completions;
  }

  // One answer per prompt from the live policy, sampled as the arguments say.
  std::vector<Generation> generate(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts, uint64_t seed) {
    SamplingParams params;
    params.max_new_tokens = arguments_.max_completion_length;
    params.temperature = arguments_.temperature;
    params.top_k = arguments_.top_k;
    params.top_p = arguments_.top_p;
    params.min_p = arguments_.min_p;
    params.repetition_penalty = arguments_.repetition_penalty;
    params.stop_token_ids = setup_.stop_token_ids;
    params.stop = setup_.stop_strings;
    std::vector<GenerationRequest> requests;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      params.seed = seed + i;
      requests.push_back({prompts[i], params});
    }
    const bool was_training = model->is_training();
    model->eval();
    std::vector<Generation> generations;
    {
      GenerationEngine engine(model, setup_.engine);
      for (auto& future : engine.submit_all(std::move(requests))) generations.push_back(future.get());
    }
    model->train(was_training);
    return generations;
  }

  std::vector<Rollout> roll_out(CausalLM& model, const std::vector<const Example*>& examples, uint64_t seed) {
    for (const auto* example : examples)
      if (!example->prompt) fail("grpo: an example without its prompt (rows are encoded by the recipe)");
    if (scheduler_) return roll_out_turns(model, examples, seed);
    std::vector<std::vector<int32_t>> prompts;
    for (const auto* example : examples) prompts.push_back(example->input_ids);
    auto generations = generate(model, prompts, seed);
    std::vector<Rollout> rollouts;
    for (std::size_t i = 0; i < examples.size(); ++i) {
      auto& generation = generations[i];
      Rollout rollout;
      rollout.source = examples[i];
      rollout.input_ids = examples[i]->input_ids;
      rollout.labels.assign(rollout.input_ids.size(), kIgnoreIndex);
      rollout.input_ids.insert(rollout.input_ids.end(), generation.ids.begin(), generation.ids.end());
      rollout.labels.insert(rollout.labels.end(), generation.ids.begin(), generation.ids.end());
      rollout.text = std::move(generation.text);
      rollout.truncated = generation.finish_reason == "length";
      rollout.completion_tokens = static_cast<int64_t>(generation.ids.size());
      rollouts.push_back(std::move(rollout));
    }
    return rollouts;
  }

  // ms-swift's multi-turn loop: every unfinished trajectory answers its conversation so far (all of
  // them in one batch per turn), the scheduler sees each answer and, unless the trajectory is
  // finished, adds the next turn's input. The finished conversation is encoded with every answer
  // trained and the scheduler's messages not; the reward functions see its last message.
  std::vector<Rollout> roll_out_turns(CausalLM& model, const std::vector<const Example*>& examples, uint64_t seed) {
    std::vector<Trajectory> trajectories;
    for (const auto* example : examples)
      trajectories.push_back({*example->prompt, example->row ? *example->row : json::object()});
    scheduler_->on_trajectory_start(trajectories);
    const auto max_turns = arguments_.max_turns.value_or(kDefaultMaxTurns);
    std::vector<std::size_t> active(trajectories.size());
    std::iota(active.begin(), active.end(), std::size_t{0});
    for (int64_t turn = 0; !active.empty(); ++turn) {
      std::vector<std::vector<int32_t>> prompts;
      for (const auto i : active) prompts.push_back(setup_.encode_prompt(trajectories[i].conversation));
      auto generations = generate(model, prompts, seed + static_cast<uint64_t>(turn) * 7919 * trajectories.size());
      std::vector<std::size_t> next;
      for (std::size_t k = 0; k < active.size(); ++k) {
        auto& trajectory = trajectories[active[k]];
        trajectory.conversation.messages.push_back({"assistant", std::move(generations[k].text), {}, {}});
        trajectory.finish_reason = generations[k].finish_reason;
        ++trajectory.turns;
        scheduler_->on_turn_end(trajectory);
        if (scheduler_->check_finished(trajectory, max_turns)) continue;
        scheduler_->step(trajectory);
        next.push_back(active[k]);
      }
      active = std::move(next);
    }
    std::vector<Rollout> rollouts;
    for (std::size_t i = 0; i < trajectories.size(); ++i) {
      const auto& trajectory = trajectories[i];
      auto encoded = setup_.encode_trajectory(trajectory.conversation);
      Rollout rollout;
      rollout.source = examples[i];
      rollout.input_ids = std::move(encoded.input_ids);
      rollout.labels = std::move(encoded.labels);
      rollout.completion_tokens = std::count_if(rollout.labels.begin(), rollout.labels.end(), [](int32_t label) { return label != kIgnoreIndex; });
      rollout.text = trajectory.conversation.messages.back().content;
      rollout.truncated = trajectory.finish_reason == "length";
      rollout.turns = trajectory.turns;
      rollout.conversation = std::make_shared<const Conversation>(trajectory.conversation);
      rollout.rollout_infos = trajectory.rollout_infos;
      rollouts.push_back(std::move(rollout));
    }
    return rollouts;
  }

  // Each rollout's scores from the reward functions and models (NaN where one gave none), with
  // ms-swift's keyword data in each row: the conversation with the completion, is_truncated and
  // trainer_state.
  void rate(std::vector<Rollout>& rollouts, int64_t step) {
    std::vector<RewardInput> inputs;
    for (std::size_t i = 0; i < rollouts.size(); ++i) {
      const auto* source = rollouts[i].source;
      json row = source->row ? *source->row : json::object();
      auto conversation = conversation_of(rollouts[i]);
      row["messages"] = to_messages_json(conversation);
      row["is_truncated"] = rollouts[i].truncated;
      row["trainer_state"] = {{"global_step", step}};
      if (scheduler_) row["rollout_infos"] = rollouts[i].rollout_infos.is_null() ? json::object() : rollouts[i].rollout_infos;
      if (scheduler_) row["rollout_infos"]["num_turns"] = rollouts[i].turns;
      inputs.push_back({rollouts[i].text, std::move(row), rollouts[i].completion_tokens});
    }
    std::vector<RewardModelInput> conversations;
    if (!models_.empty()) {
      for (const auto& input : inputs) {
        conversations.push_back({conversation_of(rollouts[conversations.size()]), input.row});
      }
    }
    for (auto& rollout : rollouts) rollout.scores.assign(metric_names_.size(), 0.0);
    for (std::size_t f = 0; f < metric_names_.size(); ++f) {
      std::vector<double> scores;
      try {
        scores = f < functions_.size() ? functions_[f]->score(inputs) : models_[f - functions_.size()]->score(conversations);
      } catch (const std::exception& error) {
        fail("{} failed: {}", describe_source(f), error.what());
      }
      if (scores.size() != inputs.size())
        fail("{} returned {} rewards for {} completions", describe_source(f), scores.size(), inputs.size());
      for (std::size_t i = 0; i < scores.size(); ++i) rollouts[i].scores[f] = scores[i];
    }
  }

  // The conversation the rewards judge: the prompt and the completion, or the whole trajectory.
  static Conversation conversation_of(const Rollout& rollout) {
    if (rollout.conversation) return *rollout.conversation;
    auto conversation = *rollout.source->prompt;
    conversation.messages.push_back({"assistant", rollout.text, {}, {}});
    return conversation;
  }

  // The weighted sum of a rollout's rewards, skipping the NaN ones; nullopt when none is a number.
  std::optional<double> weighted_total(const Rollout& rollout) const {
    std::optional<double> total;
    for (std::size_t f = 0; f < rollout.scores.size(); ++f) {
      if (std::isnan(rollout.scores[f])) continue;
      total = total.value_or(0.0) + weights_[f] * rollout.scores[f];
    }
    return total;
  }

  // ms-swift's dynamic sampling (DAPO): groups whose rewards are all equal teach nothing; they are
  // replaced by groups of freshly drawn prompts, up to --max_resample_times draws of a whole batch,
  // or the batch stays as it was (with a notice) when too few groups differ.
  void resample(CausalLM& model, Batch& batch, int64_t group, int64_t step) {
    const auto size = batch.rollouts.size();
    std::vector<Rollout> kept;
    const auto keep_varied = [&](std::vector<Rollout>& rollouts) {
      for (std::size_t begin = 0; begin < rollouts.size() && kept.size() < size; begin += static_cast<std::size_t>(group)) {
        std::vector<double> totals;
        for (auto i = begin; i < begin + static_cast<std::size_t>(group); ++i) totals.push_back(weighted_total(rollouts[i]).value_or(0.0));
        const auto std = row_std(torch::tensor(totals, torch::kDouble).view({1, -1}))[0].item<double>();
        if (std::abs(std) <= 1e-8) continue;
        for (auto i = begin; i < begin + static_cast<std::size_t>(group); ++i) kept.push_back(std::move(rollouts[i]));
      }
    };
    keep_varied(batch.rollouts);
    std::mt19937_64 rng(rollout_seed(step, 2, size));
    for (int64_t draw = 0; kept.size() < size && draw < arguments_.max_resample_times; ++draw) {
      if (!setup_.prompt_pool || setup_.prompt_pool->empty()) fail("--dynamic_sample: no prompts to draw from");
      std::uniform_int_distribution<std::size_t> pick(0, setup_.prompt_pool->size() - 1);
      std::vector<const Example*> drawn;
      for (std::size_t g = 0; g < size / static_cast<std::size_t>(group); ++g)
        drawn.insert(drawn.end(), static_cast<std::size_t>(group), &(*setup_.prompt_pool)[pick(rng)]);
      auto fresh = roll_out(model, drawn, rollout_seed(step, 2 + draw, size));
      rate(fresh, step);
      keep_varied(fresh);
    }
    if (kept.size() < size) {
      fmt::print(stderr, "lathe: grpo: --dynamic_sample: groups with equal rewards remain after {} draws; step {} keeps its batch\n",
                 arguments_.max_resample_times, step + 1);
      return;
    }
    batch.rollouts = std::move(kept);
  }

  // TRL's SyncRefModelCallback: every --ref_model_sync_steps steps the reference moves toward the
  // policy, reference <- alpha * policy + (1 - alpha) * reference, parameter by parameter.
  void sync_reference(CausalLM& policy) {
    if (setup_.reference.kind != AlignmentReference::Kind::frozen_model) fail("--sync_ref_model needs a frozen reference model");
    torch::NoGradGuard no_grad;
    const auto current = policy->named_parameters();
    const double alpha = arguments_.ref_model_mixup_alpha;
    for (auto& item : setup_.reference.model->named_parameters()) {
      const auto* source = current.find(item.key());
      if (!source || source->sizes() != item.value().sizes())
        fail("--sync_ref_model: the reference's {} has no counterpart of its shape in the policy", item.key());
      auto& target = item.value();
      target.copy_((target.to(torch::kFloat32) * (1 - alpha) + source->detach().to(torch::kFloat32) * alpha).to(target.scalar_type()));
    }
  }

  std::string describe_source(std::size_t f) const {
    return f < functions_.size() ? fmt::format("reward function '{}'", source_names_[f]) : source_names_[f];
  }

  // Old and reference log-probabilities where the loss or the reward needs them.
  void take_logps(CausalLM& model, std::vector<Rollout>& rollouts) {
    std::vector<std::size_t> all(rollouts.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    const auto sequences = sequences_of(rollouts, all);
    const bool needs_old = arguments_.num_iterations > 1 || (kl_in_reward_ && beta_ != 0);
    if (needs_old) {
      torch::NoGradGuard no_grad;
      const auto parts = split_by_sequence(score_sequences(model, sequences), rollouts.size());
      for (std::size_t i = 0; i < rollouts.size(); ++i) rollouts[i].old_logps = parts[i];
    }
    if (beta_ != 0) {
      const auto parts = split_by_sequence(reference_scores(setup_.reference, model, sequences), rollouts.size());
      for (std::size_t i = 0; i < rollouts.size(); ++i) rollouts[i].reference_logps = parts[i];
    }
  }

  void score(CausalLM& model, Batch& batch, int64_t group, int64_t step, bool training, MetricTotals& metrics) {
    rate(batch.rollouts, step);
    if (training && arguments_.dynamic_sample) resample(model, batch, group, step);
    auto& rollouts = batch.rollouts;
    take_logps(model, rollouts);
    const auto n = static_cast<int64_t>(rollouts.size());
    std::vector<double> totals(rollouts.size(), 0.0);
    int64_t unscored = 0;
    for (std::size_t i = 0; i < rollouts.size(); ++i) {
      const auto total = weighted_total(rollouts[i]);
      totals[i] = total.value_or(0.0);
      if (!total) ++unscored;
      if (kl_in_reward_ && beta_ != 0) {
        double kl = 0;
        for (std::size_t t = 0; t < rollouts[i].old_logps.size(); ++t) kl += rollouts[i].old_logps[t] - rollouts[i].reference_logps[t];
        totals[i] -= beta_ * kl;
      }
    }
    if (unscored > 0)
      fmt::print(stderr, "lathe: grpo: {} of {} completions got no reward from any function (counted as 0)\n", unscored, n);
    const auto rewards = torch::tensor(totals, torch::kDouble);
    const auto advantages = group_advantages(rewards, group, arguments_.advantage_estimator, scale_);
    for (std::size_t i = 0; i < rollouts.size(); ++i) rollouts[i].advantage = advantages[static_cast<int64_t>(i)].item<double>();
    log_reward_metrics(rewards, rollouts, group, metrics);
    log_lengths(rollouts, metrics);
    if (scheduler_) {
      double turns = 0;
      for (const auto& rollout : rollouts) turns += static_cast<double>(rollout.turns);
      metrics.add("num_turns", turns / static_cast<double>(rollouts.size()));
    }
    if (training && !setup_.completions_file.empty()) write_completions(rollouts, step);
  }

  void log_reward_metrics(const torch::Tensor& rewards, const std::vector<Rollout>& rollouts, int64_t group,
                          MetricTotals& metrics) {
    const auto grouped = rewards.view({-1, group});
    metrics.add("reward", grouped.mean(1).mean().item<double>());
    metrics.add("reward_std", scale_ == "batch" ? batch_std(rewards).item<double>() : row_std(grouped).mean().item<double>());
    const auto stds = row_std(grouped);
    metrics.add("frac_reward_zero_std", torch::isclose(stds, torch::zeros_like(stds)).to(torch::kDouble).mean().item<double>());
    for (std::size_t f = 0; f < metric_names_.size(); ++f) {
      std::vector<double> column;
      for (const auto& rollout : rollouts) column.push_back(rollout.scores[f]);
      std::size_t count = 0;
      const double mean = nan_mean(column, count);
      if (count == 0) continue;  // a function with no reward in this batch (a task absent from it)
      metrics.add("rewards/" + metric_names_[f] + "/mean", mean);
      metrics.add("rewards/" + metric_names_[f] + "/std", nan_std(column, mean, count));
    }
  }

  // The step's time split: generating, then scoring (rewards, old and reference log-probabilities);
  // what the log's train_speed adds beyond both is the policy's forward and backward.
  static void log_timing(const std::vector<Rollout>& rollouts, std::chrono::steady_clock::time_point start,
                         std::chrono::steady_clock::time_point generated, MetricTotals& metrics) {
    const auto seconds = [](auto duration) { return std::chrono::duration<double>(duration).count(); };
    const double generating = seconds(generated - start);
    double tokens = 0;
    for (const auto& rollout : rollouts) tokens += static_cast<double>(rollout.completion_tokens);
    metrics.add("rollout/seconds", generating);
    metrics.add("rollout/tokens_per_second", generating > 0 ? tokens / generating : 0.0);
    metrics.add("rollout/scoring_seconds", seconds(std::chrono::steady_clock::now() - generated));
  }

  static void log_lengths(const std::vector<Rollout>& rollouts, MetricTotals& metrics) {
    double sum = 0, truncated = 0;
    int64_t shortest = std::numeric_limits<int64_t>::max(), longest = 0;
    for (const auto& rollout : rollouts) {
      sum += static_cast<double>(rollout.completion_tokens);
      shortest = std::min(shortest, rollout.completion_tokens);
      longest = std::max(longest, rollout.completion_tokens);
      truncated += rollout.truncated;
    }
    const auto count = static_cast<double>(rollouts.size());
    metrics.add("completions/mean_length", sum / count);
    metrics.add("completions/min_length", static_cast<double>(shortest));
    metrics.add("completions/max_length", static_cast<double>(longest));
    metrics.add("completions/clipped_ratio", truncated / count);
  }

  // --log_completions: one line per completion, as ms-swift's completions table.
  void write_completions(const std::vector<Rollout>& rollouts, int64_t step) {
    std::string lines;
    for (std::size_t i = 0; i < rollouts.size(); ++i) {
      json line = {{"step", step + 1},
                   {"prompt", to_messages_json(*rollouts[i].source->prompt)},
                   {"completion", rollouts[i].text},
                   {"advantages", rollouts[i].advantage}};
      for (std::size_t f = 0; f < metric_names_.size(); ++f)
        line[metric_names_[f]] = std::isnan(rollouts[i].scores[f]) ? json(nullptr) : json(rollouts[i].scores[f]);
      const auto& row = rollouts[i].source->row;
      if (row && row->contains("solution")) line["solution"] = (*row)["solution"];
      if (rollouts[i].conversation) {
        line["messages"] = to_messages_json(*rollouts[i].conversation);
        line["num_turns"] = rollouts[i].turns;
      }
      lines += line.dump() + "\n";
    }
    std::ofstream out(setup_.completions_file, std::ios::app);
    out << lines;
    if (!out) fail("{}: cannot append the step's completions", setup_.completions_file.string());
  }

  Arguments arguments_;
  GrpoSetup setup_;
  double beta_;
  bool kl_in_reward_;
  std::string scale_;
  GrpoLossSettings settings_;
  std::vector<std::shared_ptr<OutcomeRewardModel>> functions_;
  std::vector<std::shared_ptr<RewardModelScorer>> models_;
  std::shared_ptr<MultiTurnScheduler> scheduler_;
  std::vector<std::string> metric_names_, source_names_;
  std::vector<double> weights_;
  Batch training_, evaluation_;
  Batch* current_ = nullptr;
  int64_t micro_batches_ = 1;
};

}  // namespace

std::shared_ptr<TrainingObjective> make_grpo_objective(const Arguments& arguments, GrpoSetup setup) {
  return std::make_shared<GrpoObjective>(arguments, std::move(setup));
}

}  // namespace lathe
