// Training benchmark: drives the real Trainer, as `lathe sft` does, on a randomly
// initialised model and a synthetic SFT dataset, and reports trained tokens/s, ms/step, peak
// resident memory and model FLOP utilisation against the GEMM peak measured in the same process.
//
//   train_bench --model a|b|qwen2.5-0.5b|qwen2.5-1.5b --train lora|full [--dtype float32|bfloat16]
//               [--steps 4] [--warmup 1] [--batch 4] [--max-length 1024] [--padded] [--plan FILE]
//               [--weight_dtype bfloat16|float16] [--trace FILE] [--objective sft|dpo|sft-pairs]
//
// Model a: Qwen2-style, hidden 512, 8 layers, 8 heads, 2 KV heads, intermediate 1408, vocabulary
// 151,936 (tied head). Model b: hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 704,
// vocabulary 4,096. qwen2.5-0.5b and qwen2.5-1.5b: those models' shapes (random weights). Examples
// are 32..max-length tokens long (uniform), the first quarter an untrained
// prompt. One configuration per process, so the peak resident memory (VmHWM) is that
// configuration's own. --plan writes the lengths of every step's examples, in the order the
// Trainer draws them, for bench/reference_train.py to train the same batches.
//
// --objective dpo trains `lathe rlhf --rlhf_type dpo` (sigmoid; LoRA's reference is the policy
// with its adapters bypassed, full tuning's a frozen copy) on --batch synthetic pairs per step: a
// shared prompt (a quarter of the chosen length) with a chosen and a rejected answer of independent
// lengths. --objective sft-pairs trains plain SFT on the same sequences, each pair's two as rows
// of one step, and then times one forward of each step's sequences without autograd (the
// reference's cost): the DPO step's yardstick is sft-pairs' ms_per_step + reference_forward_ms.
// Both keep the dataset order (no shuffle), so that step k holds pairs kB..kB+B-1 in either.
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <chrono>
#include <ctime>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "benchmark_model.h"
#include "lathe/model/runtime.h"
#include "lathe/recipe/training.h"
#include "lathe/train/alignment.h"
#include "lathe/train/trainer.h"

#include <ATen/autocast_mode.h>

using namespace lathe;
namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model = "a", train = "lora", dtype = "float32", weight_dtype, plan, trace, objective = "sft";
  int64_t steps = 4, warmup = 1, batch = 4, max_length = 1024;
  bool padding_free = true;  // as `lathe sft`; --padded for the library default (SWIFT's)
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--model") options.model = value();
    else if (flag == "--train") options.train = value();
    else if (flag == "--dtype") options.dtype = value();
    else if (flag == "--steps") options.steps = std::stoll(value());
    else if (flag == "--warmup") options.warmup = std::stoll(value());
    else if (flag == "--batch") options.batch = std::stoll(value());
    else if (flag == "--max-length") options.max_length = std::stoll(value());
    else if (flag == "--plan") options.plan = value();
    else if (flag == "--trace") options.trace = value();
    else if (flag == "--weight_dtype") options.weight_dtype = value();
    else if (flag == "--padded") options.padding_free = false;
    else if (flag == "--objective") options.objective = value();
    else throw std::runtime_error("unknown option " + flag);
  }
  if (options.model != "a" && options.model != "b" && options.model != "qwen2.5-0.5b" && options.model != "qwen2.5-1.5b")
    throw std::runtime_error("--model is a, b, qwen2.5-0.5b or qwen2.5-1.5b");
  if (!options.weight_dtype.empty() && (options.train != "lora" || options.dtype != "float32" ||
                                       (options.weight_dtype != "bfloat16" && options.weight_dtype != "float16")))
    throw std::runtime_error("--weight_dtype is bfloat16 or float16, with --train lora --dtype float32");
  if (options.max_length < 64) throw std::runtime_error("--max-length is at least 64");
  if (options.train != "lora" && options.train != "full") throw std::runtime_error("--train is lora or full");
  if (options.dtype != "float32" && options.dtype != "bfloat16") throw std::runtime_error("--dtype is float32 or bfloat16");
  if (options.objective != "sft" && options.objective != "dpo" && options.objective != "sft-pairs")
    throw std::runtime_error("--objective is sft, dpo or sft-pairs");
  return options;
}

// (a) is the shared benchmark model; (b) the small one, in the same family; then the shapes of
// Qwen2.5-0.5B and Qwen2.5-1.5B.
ModelConfig model_config(const std::string& name) {
  ModelConfig config = benchmark_config();
  config.max_position_embeddings = 32768;
  auto shape = [&](int64_t hidden, int64_t layers, int64_t heads, int64_t head_dim, int64_t intermediate) {
    config.hidden_size = hidden;
    config.num_hidden_layers = layers;
    config.num_attention_heads = heads;
    config.head_dim = head_dim;
    config.intermediate_size = intermediate;
  };
  if (name == "qwen2.5-0.5b") shape(896, 24, 14, 64, 4864);
  if (name == "qwen2.5-1.5b") shape(1536, 28, 12, 128, 8960);
  if (name == "b") {
    config.vocab_size = 4096;
    config.hidden_size = 256;
    config.intermediate_size = 704;
    config.num_hidden_layers = 4;
    config.num_attention_heads = 4;
    config.tie_word_embeddings = false;
  }
  return config;
}

// splitmix64: the same lengths are easy to reproduce anywhere.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::vector<Example> synthetic_dataset(int64_t count, int64_t vocab, int64_t max_length) {
  std::vector<Example> examples;
  for (int64_t i = 0; i < count; ++i) {
    const auto length = 32 + static_cast<int64_t>(mix(static_cast<uint64_t>(i)) % static_cast<uint64_t>(max_length - 31));
    const auto prompt = length / 4;
    Example example;
    for (int64_t t = 0; t < length; ++t) {
      const auto id = static_cast<int32_t>(mix(static_cast<uint64_t>(i) << 20 | static_cast<uint64_t>(t)) % vocab);
      example.input_ids.push_back(id);
      example.labels.push_back(t < prompt ? kIgnoreIndex : id);
    }
    examples.push_back(std::move(example));
  }
  return examples;
}

// Pair i: prompt + chosen, then prompt + rejected (the layout the rlhf encoder makes), the prompt
// a quarter of the chosen length and untrained.
std::vector<Example> synthetic_pairs(int64_t count, int64_t vocab, int64_t max_length) {
  auto chosen = synthetic_dataset(count, vocab, max_length);
  std::vector<Example> pairs;
  for (int64_t i = 0; i < count; ++i) {
    auto& example = chosen[static_cast<std::size_t>(i)];
    const auto prompt = example.size() / 4;
    const auto length = 32 + static_cast<int64_t>(mix(static_cast<uint64_t>(i) + (1ull << 40)) % static_cast<uint64_t>(max_length - 31));
    const auto chosen_length = example.size();
    example.segment_lengths = {chosen_length, std::max(length, prompt + 1)};
    for (int64_t t = 0; t < example.segment_lengths[1]; ++t) {
      const auto id = t < prompt ? example.input_ids[static_cast<std::size_t>(t)]
                                 : static_cast<int32_t>(mix(static_cast<uint64_t>(i) << 20 | static_cast<uint64_t>(t) | (1ull << 50)) % vocab);
      example.input_ids.push_back(id);
      example.labels.push_back(t < prompt ? kIgnoreIndex : id);
    }
    pairs.push_back(std::move(example));
  }
  return pairs;
}

// Each pair's two sequences as rows of their own, in order.
std::vector<Example> split_pairs(const std::vector<Example>& pairs) {
  std::vector<Example> rows;
  for (const auto& pair : pairs) {
    std::size_t start = 0;
    for (const auto length : pair.segment_lengths) {
      Example row;
      row.input_ids.assign(pair.input_ids.begin() + static_cast<std::ptrdiff_t>(start),
                           pair.input_ids.begin() + static_cast<std::ptrdiff_t>(start + length));
      row.labels.assign(pair.labels.begin() + static_cast<std::ptrdiff_t>(start),
                        pair.labels.begin() + static_cast<std::ptrdiff_t>(start + length));
      rows.push_back(std::move(row));
      start += static_cast<std::size_t>(length);
    }
  }
  return rows;
}

// Milliseconds of one forward of each measured step's sequences without autograd, under the
// training dtype's autocast: what the reference costs a DPO step.
double reference_forward_ms(CausalLM& model, const std::vector<Example>& rows, int64_t rows_per_step, int64_t warmup,
                            int64_t steps, bool bfloat16) {
  torch::NoGradGuard no_grad;
  AdaptersBypassed bypass;
  const bool was_enabled = at::autocast::is_cpu_enabled();
  at::autocast::set_cpu_enabled(bfloat16);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  double seconds = 0;
  for (int64_t step = warmup; step < steps; ++step) {
    std::vector<TokenSequence> sequences;
    for (int64_t r = step * rows_per_step; r < (step + 1) * rows_per_step; ++r) {
      sequences.push_back({rows[static_cast<std::size_t>(r)].input_ids, rows[static_cast<std::size_t>(r)].labels});
    }
    const auto start = std::chrono::steady_clock::now();
    score_sequences(model, sequences);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  at::autocast::clear_cache();
  at::autocast::set_cpu_enabled(was_enabled);
  return 1000.0 * seconds / static_cast<double>(steps - warmup);
}

// The Trainer's order for epoch 0 cut into steps; the per-step token counts it reports are
// checked against this plan, so a change in how the Trainer batches shows.
std::vector<std::vector<std::size_t>> step_plan(std::size_t examples, int64_t batch, int64_t seed, bool shuffled) {
  auto order = epoch_training_order(examples, static_cast<uint64_t>(seed), 0);
  if (!shuffled) std::iota(order.begin(), order.end(), std::size_t{0});
  std::vector<std::vector<std::size_t>> steps;
  for (std::size_t start = 0; start < order.size(); start += static_cast<std::size_t>(batch)) {
    steps.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                       order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + batch)));
  }
  return steps;
}

int64_t resident_peak_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

// Times every optimizer step and reads the memory peak at the end of the last one (before the
// final checkpoint is written).
// CPU seconds too: on a machine shared with other work, the process's CPU time per step still
// measures the work done (waiting is passive, so idle threads do not spin).
double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

class StepTimer : public Callback {
 public:
  void on_step_begin(const Arguments&, S& state, C&, const X&) override {
    tokens_before_ = state.trained_tokens;
    cpu_start_ = process_cpu_seconds();
    start_ = std::chrono::steady_clock::now();
  }
  void on_step_end(const Arguments&, S& state, C&, const X&) override {
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    cpu_seconds.push_back(process_cpu_seconds() - cpu_start_);
    tokens.push_back(state.trained_tokens - tokens_before_);
    if (state.global_step >= state.max_steps) peak_kib = resident_peak_kib();
  }
  std::vector<double> seconds, cpu_seconds;
  std::vector<int64_t> tokens;
  int64_t peak_kib = 0;

 private:
  std::chrono::steady_clock::time_point start_;
  double cpu_start_ = 0;
  int64_t tokens_before_ = 0;
};

// Best of a few square matrix products: the machine's attainable GEMM rate in this dtype now.
double gemm_peak_flops(torch::Dtype dtype) {
  const int64_t n = 2048;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  auto c = torch::mm(a, b);
  double best = 0;
  for (int repeat = 0; repeat < 5; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    torch::mm_out(c, a, b);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * n * n * n / seconds);
  }
  return best;
}

// Model FLOPs per trained step: (6 full | 4 LoRA) x N per real token, N = every parameter except the
// input embedding (the output head counts, tied or not), plus causal attention: per sequence of L
// tokens, QK^T and AV cost 2 x 2 x d_attn x L^2 / 2 per layer forward, x3 with backward.
double step_model_flops(const ModelConfig& config, const std::vector<int64_t>& lengths, bool full) {
  const double hidden = static_cast<double>(config.hidden_size), layers = static_cast<double>(config.num_hidden_layers);
  const double q = static_cast<double>(config.num_attention_heads * config.head_dim);
  const double kv = static_cast<double>(config.num_key_value_heads * config.head_dim);
  const double per_layer = hidden * (q + 2 * kv) + (q + 2 * kv) /* biases */ + q * hidden +
                           3 * hidden * static_cast<double>(config.intermediate_size) + 2 * hidden /* norms */;
  const double n = layers * per_layer + hidden + static_cast<double>(config.vocab_size) * hidden;
  double flops = 0;
  for (auto length : lengths) {
    const double l = static_cast<double>(length);
    flops += (full ? 6 : 4) * n * l + 3 * layers * 2 * q * l * l;
  }
  return flops;
}

// DPO's reference: LoRA's own base (adapters bypassed), or for full tuning a frozen copy of the
// starting weights.
AlignmentReference dpo_reference(const ModelConfig& config, CausalLM& policy, const Options& options) {
  if (options.train == "lora") return {AlignmentReference::Kind::adapters_off, nullptr};
  CausalLM copy(config, torch::kFloat32);
  torch::NoGradGuard no_grad;
  const auto source = policy->named_parameters();
  for (auto& item : copy->named_parameters()) {
    item.value().copy_(source[item.key()]);
    item.value().set_requires_grad(false);
  }
  copy->eval();
  return {AlignmentReference::Kind::frozen_model, copy};
}

}  // namespace

static int run(int argc, char** argv) {
  configure_runtime(argc, argv);
  const Options options = parse_options(argc, argv);
  const ModelConfig config = model_config(options.model);
  const int64_t steps = options.warmup + options.steps;
  const int64_t seed = 42;

  const bool on_pairs = options.objective != "sft";
  auto examples = on_pairs ? synthetic_pairs(steps * options.batch, config.vocab_size, options.max_length)
                           : synthetic_dataset(steps * options.batch, config.vocab_size, options.max_length);
  if (options.objective == "sft-pairs") examples = split_pairs(examples);
  const int64_t rows_per_step = options.objective == "sft-pairs" ? 2 * options.batch : options.batch;
  const auto plan = step_plan(examples.size(), rows_per_step, seed, !on_pairs);
  std::vector<int64_t> planned_tokens;
  nlohmann::json plan_json = nlohmann::json::array();
  for (const auto& step : plan) {
    int64_t sum = 0;
    nlohmann::json lengths = nlohmann::json::array();
    for (auto index : step) {
      sum += examples[index].size();
      lengths.push_back({examples[index].size(), examples[index].size() / 4});
    }
    planned_tokens.push_back(sum);
    plan_json.push_back(lengths);
  }
  if (!options.plan.empty()) std::ofstream(options.plan) << plan_json.dump() << "\n";

  Arguments arguments;
  arguments.model = "random-init";
  arguments.train_type = options.train;
  arguments.torch_dtype = options.dtype;
  arguments.per_device_train_batch_size = rows_per_step;
  arguments.train_dataloader_shuffle = !on_pairs;
  arguments.alignment = options.objective == "dpo";
  if (arguments.alignment) arguments.lora_dropout = 0;
  arguments.padding_free = options.padding_free;
  arguments.max_length = options.max_length;
  arguments.num_train_epochs = 1;
  arguments.seed = seed;
  arguments.save_steps = 1'000'000;
  arguments.save_only_model = true;
  arguments.add_version = false;
  const fs::path run_dir = fs::temp_directory_path() / fmt::format("lathe-train-bench-{}", getpid());
  arguments.output_dir = run_dir.string();

  // The GEMM peak is the better of a measurement before and one after training: one alone was
  // seen at half the usual bfloat16 rate on this shared machine.
  const auto gemm_dtype = options.dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  const double peak_before = gemm_peak_flops(gemm_dtype);

  // The weight dtype rule of `lathe sft` (the training recipe's).
  CausalLM model(config, base_weight_dtype(arguments));
  // --weight_dtype: the frozen projections held in 16 bits, as `lathe sft --weight_dtype` does.
  if (!options.weight_dtype.empty())
    model->hold_projections_in(options.weight_dtype == "float16" ? torch::kHalf : torch::kBFloat16, false);
  auto tuner = tuner_registry().create(arguments.train_type, arguments);
  tuner->prepare_model(arguments, model);
  auto timer = std::make_shared<StepTimer>();
  fs::create_directories(run_dir);
  const auto rows = options.objective == "sft-pairs" ? examples : std::vector<Example>{};
  {
    TrainerSetup setup{arguments, model, tuner, std::move(examples), nullptr, {}, run_dir, {}, {timer}, 0};
    if (arguments.alignment) setup.objective = make_alignment_objective(arguments, dpo_reference(config, model, options));
    Trainer trainer(std::move(setup));
    // --trace: every operator's time, for chrome://tracing or bench/trace_summary.py.
    std::unique_ptr<torch::autograd::profiler::RecordProfile> trace;
    if (!options.trace.empty()) trace = std::make_unique<torch::autograd::profiler::RecordProfile>(options.trace);
    trainer.train();
  }
  fs::remove_all(run_dir);
  if (timer->tokens != planned_tokens) {
    fmt::print(stderr, "train_bench: the Trainer's batches differ from the plan (its shuffle changed?)\n");
    return 1;
  }

  double seconds = 0, cpu_seconds = 0, flops = 0;
  int64_t tokens = 0;
  for (int64_t step = options.warmup; step < steps; ++step) {
    seconds += timer->seconds[step];
    cpu_seconds += timer->cpu_seconds[step];
    tokens += timer->tokens[step];
    std::vector<int64_t> lengths;
    for (const auto& pair : plan_json[step]) lengths.push_back(pair[0].get<int64_t>());
    flops += step_model_flops(config, lengths, options.train == "full");
  }
  const double peak = std::max(peak_before, gemm_peak_flops(gemm_dtype));
  const double reference_ms = options.objective == "sft-pairs"
                                  ? reference_forward_ms(model, rows, rows_per_step, options.warmup, steps, options.dtype == "bfloat16")
                                  : 0.0;
  nlohmann::json result{{"impl", "lathe"},
                        {"model", options.model},
                        {"train", options.train},
                        {"dtype", options.dtype},
                        {"weight_dtype", options.weight_dtype.empty() ? options.dtype : options.weight_dtype},
                        {"batch", options.batch},
                        {"max_length", options.max_length},
                        {"padding_free", options.padding_free},
                        {"objective", options.objective},
                        {"threads", compute_threads()},
                        {"steps", options.steps},
                        {"tokens_per_s", static_cast<double>(tokens) / seconds},
                        {"ms_per_step", 1000.0 * seconds / static_cast<double>(options.steps)},
                        {"tokens_per_cpu_s", static_cast<double>(tokens) / cpu_seconds},
                        {"peak_rss_mib", static_cast<double>(timer->peak_kib) / 1024.0},
                        {"model_tflops_per_s", flops / seconds / 1e12},
                        {"gemm_peak_tflops_per_s", peak / 1e12},
                        {"mfu", flops / seconds / peak}};
  if (options.objective == "sft-pairs") result["reference_forward_ms"] = reference_ms;
  if (options.objective == "dpo") {  // the FLOP count above is SFT's, not the objective's
    result.erase("model_tflops_per_s");
    result.erase("mfu");
  }
  fmt::print("{}\n", result.dump());
  return 0;
}

int main(int argc, char** argv) { return run_benchmark("train_bench", run, argc, argv); }
