// Callback plugins (docs/plugins.md). The trainer's own flow and logging callbacks live in
// src/train/run_log.cpp; the callbacks a user selects with --callbacks are registered at the
// bottom of this file.
#include "lathe/plugin/callback.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>

namespace lathe {

namespace {

// Stops training after `patience` saves without a better best_metric (SWIFT's early_stop).
class EarlyStopCallback : public Callback {
 public:
  explicit EarlyStopCallback(int64_t patience) : patience_(patience) {}
  void on_save(const Arguments& arguments, S& state, C& control, const X&) override {
    if (!state.best_metric) return;
    const bool greater = arguments.best_metric_greater_is_better();
    const double current = *state.best_metric;
    const bool improved = !best_ || (greater ? current > *best_ : current < *best_);
    if (improved) {
      best_ = current;
      saves_without_improvement_ = 0;
    } else {
      ++saves_without_improvement_;
    }
    if (saves_without_improvement_ >= patience_) {
      fmt::print(stderr, "lathe: early stop: {} saves without a better {}\n", saves_without_improvement_,
                 arguments.best_model_metric());
      control.should_training_stop = true;
    }
  }

 private:
  int64_t patience_;
  std::optional<double> best_;
  int64_t saves_without_improvement_ = 0;
};

// Measured float32 GEMM rate of this machine, the denominator of the model FLOP utilisation.
double measure_gemm_flops() {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({512, 512}), b = torch::randn({512, 512});
  torch::mm(a, b);  // warm-up
  int repeats = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  while (seconds < 0.2) {
    torch::mm(a, b);
    ++repeats;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return 2.0 * 512 * 512 * 512 * repeats / seconds;
}

// Tokens per second and model FLOP utilisation (6N FLOPs per trained token for full training,
// 4N with frozen base weights) at each log.
class PerfLogCallback : public Callback {
 public:
  void on_train_begin(const Arguments&, S&, C&, const X& context) override {
    peak_ = measure_gemm_flops();
    int64_t total = 0, trainable = 0;
    for (const auto& parameter : context.model->parameters()) {
      total += parameter.numel();
      if (parameter.requires_grad()) trainable += parameter.numel();
    }
    flops_per_token_ = (trainable * 2 >= total ? 6.0 : 4.0) * static_cast<double>(total);
    last_tokens_ = 0;
    last_time_ = std::chrono::steady_clock::now();
  }
  void on_log(const Arguments&, S& state, C&, const X& context) override {
    if (!context.logs || !context.logs->contains("loss")) return;
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - last_time_).count();
    const double tokens = static_cast<double>(state.trained_tokens - last_tokens_);
    last_tokens_ = state.trained_tokens;
    last_time_ = now;
    if (seconds <= 0) return;
    const double rate = tokens / seconds;
    fmt::print(stderr, "perf_log: step {}: {:.1f} tokens/s, MFU {:.1f}% of a measured {:.1f} GFLOP/s GEMM peak\n",
               state.global_step, rate, 100.0 * rate * flops_per_token_ / peak_, peak_ / 1e9);
  }

 private:
  double peak_ = 1, flops_per_token_ = 0;
  int64_t last_tokens_ = 0;
  std::chrono::steady_clock::time_point last_time_;
};

}  // namespace

Registry<CallbackFactory>& callback_registry() {
  static Registry<CallbackFactory> registry = [] {
    Registry<CallbackFactory> built_ins("callback");
    built_ins.add("early_stop", "stop after --early_stop_interval saves without a better metric (added automatically)",
                  [](const PluginContext& context) { return std::make_shared<EarlyStopCallback>(context.arguments.early_stop_interval); });
    built_ins.add("perf_log", "log tokens/s and model FLOP utilisation against a measured GEMM peak",
                  [](const PluginContext&) { return std::make_shared<PerfLogCallback>(); });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
