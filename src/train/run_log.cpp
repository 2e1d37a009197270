#include "train/run_log.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>

#include "lathe/common/format.h"
#include "train/plots.h"
#include "train/tensorboard.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

double peak_memory_gib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / (1024.0 * 1024.0);  // kB
  }
  return 0.0;
}

static std::string duration_text(double seconds) {
  const auto total = static_cast<int64_t>(std::max(0.0, seconds));
  if (total >= 3600) return fmt::format("{}h {}m {}s", total / 3600, total % 3600 / 60, total % 60);
  if (total >= 60) return fmt::format("{}m {}s", total / 60, total % 60);
  return fmt::format("{}s", total);
}

static double round_to(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

RunLog::RunLog(fs::path run_dir) : run_dir_(std::move(run_dir)), terminal_(isatty(STDERR_FILENO)) {}

void RunLog::start(const TrainerState& state) {
  start_ = std::chrono::steady_clock::now();
  start_step_ = state.global_step;
}

std::string RunLog::timing(const TrainerState& state) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const auto done = std::max<int64_t>(1, state.global_step - start_step_);
  const double remaining = elapsed / static_cast<double>(done) * static_cast<double>(state.max_steps - state.global_step);
  return duration_text(elapsed) + "|" + duration_text(remaining);
}

json RunLog::step_entry(const TrainerState& state, double loss, double grad_norm, double learning_rate, int64_t steps,
                        int64_t tokens, double seconds) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const auto done = std::max<int64_t>(1, state.global_step - start_step_);
  const double remaining = elapsed / static_cast<double>(done) * static_cast<double>(state.max_steps - state.global_step);
  last_loss_ = loss;
  last_rate_ = learning_rate;
  return {{"loss", round_to(loss, 8)},
          {"grad_norm", round_to(grad_norm, 8)},
          {"learning_rate", learning_rate},
          {"epoch", round_to(state.epoch, 4)},
          {"global_step/max_steps", fmt::format("{}/{}", state.global_step, state.max_steps)},
          {"percentage", fmt::format("{:.2f}%", 100.0 * state.global_step / std::max<int64_t>(1, state.max_steps))},
          {"elapsed_time", duration_text(elapsed)},
          {"remaining_time", duration_text(remaining)},
          {"memory(GiB)", round_to(peak_memory_gib(), 2)},
          // ms-swift 4.x's key and unit: seconds per optimizer step.
          {"train_speed(s/it)", round_to(steps > 0 ? seconds / steps : 0.0, 6)},
          {"tokens/s", round_to(seconds > 0 ? tokens / seconds : 0.0, 2)},
          {"global_step", state.global_step}};
}

json RunLog::eval_entry(const TrainerState& state, const std::map<std::string, double>& metrics) {
  json entry = json::object();
  for (const auto& [name, value] : metrics) entry[name] = round_to(value, 8);
  entry["epoch"] = round_to(state.epoch, 4);
  entry["global_step/max_steps"] = fmt::format("{}/{}", state.global_step, state.max_steps);
  entry["global_step"] = state.global_step;
  return entry;
}

void RunLog::write(const json& entry) {
  fs::create_directories(run_dir_);
  std::ofstream out(run_dir_ / "logging.jsonl", std::ios::app);
  out << entry.dump() << "\n";
  if (terminal_) fmt::print(stderr, "\r\033[K");
  fmt::print(stderr, "{}\n", entry.dump());
}

void RunLog::progress(const TrainerState& state) {
  if (!terminal_) return;
  const int width = 30;
  const double share = static_cast<double>(state.global_step) / std::max<int64_t>(1, state.max_steps);
  const int filled = static_cast<int>(share * width);
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = (state.global_step - start_step_) / std::max(1e-9, elapsed);
  fmt::print(stderr, "\r\033[KTrain: [{}{}] {}/{} loss {:.4f} lr {:.2e} {:.2f}it/s [{}]", std::string(filled, '#'),
             std::string(width - filled, '.'), state.global_step, state.max_steps, last_loss_, last_rate_, rate,
             timing(state));
  std::fflush(stderr);
}

void RunLog::finish(const TrainerState& state, const fs::path& last, const std::string& best) {
  if (terminal_) fmt::print(stderr, "\n");
  write_training_plots(run_dir_ / "logging.jsonl", run_dir_ / "images");
  fmt::print(stderr, "lathe: trained {} steps ({} tokens)\n", state.global_step, state.trained_tokens);
  const auto shown = last.empty() ? std::string("None") : last.string();  // --save_strategy no
  fmt::print(stderr, "last_model_checkpoint: {}\n", shown);
  fmt::print(stderr, "best_model_checkpoint: {}\n", best.empty() ? shown : best);
}

namespace {

// When to log, evaluate and save (Hugging Face's DefaultFlowCallback, with SWIFT's cadence).
class FlowCallback : public Callback {
 public:
  void on_step_end(const Arguments& a, S& state, C& control, const X&) override {
    const auto step = state.global_step;
    const bool last = control.should_training_stop || step >= state.max_steps;
    if (step == 1 || (a.logging_steps > 0 && step % a.logging_steps == 0) || last) control.should_log = true;
    // The fractional epoch is (steps done in the epoch) / (steps per epoch) past the whole ones:
    // exactly whole after an epoch's last step.
    const bool epoch_end = state.epoch == std::floor(state.epoch);
    auto due = [&](const std::string& strategy, int64_t every) {
      if (strategy == "no") return false;
      if (strategy == "epoch") return epoch_end || last;
      return (every > 0 && step % every == 0) || last;
    };
    const auto& eval_strategy = a.eval_strategy.empty() ? a.save_strategy : a.eval_strategy;
    if (due(eval_strategy, a.eval_steps > 0 ? a.eval_steps : a.save_steps)) control.should_evaluate = true;
    if (due(a.save_strategy, a.save_steps)) control.should_save = true;
  }
};

class LogCallback : public Callback {
 public:
  explicit LogCallback(RunLog& log) : log_(&log) {}
  void on_log(const Arguments&, S&, C&, const X& context) override {
    if (context.logs) log_->write(*context.logs);
  }
  void on_step_end(const Arguments&, S& state, C&, const X&) override { log_->progress(state); }

 private:
  RunLog* log_;
};

// --report_to tensorboard: each numeric log value as a scalar, named as Hugging Face's
// TensorBoardCallback names them (eval_x -> eval/x, everything else train/x).
class TensorBoardCallback : public Callback {
 public:
  explicit TensorBoardCallback(const fs::path& runs_dir) : runs_dir_(runs_dir) {}
  void on_log(const Arguments&, S& state, C&, const X& context) override {
    if (!context.logs) return;
    if (!writer_) writer_ = std::make_unique<TensorBoardWriter>(runs_dir_);
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    for (const auto& [key, value] : context.logs->items()) {
      if (!value.is_number() || key == "global_step") continue;
      const auto tag = key.starts_with("eval_") ? "eval/" + key.substr(5) : "train/" + key;
      writer_->scalar(tag, value.get<double>(), state.global_step, now);
    }
    writer_->flush();
  }

 private:
  fs::path runs_dir_;
  std::unique_ptr<TensorBoardWriter> writer_;
};

}  // namespace

std::vector<NamedCallback> default_callbacks(const Arguments& arguments, RunLog& log) {
  std::vector<NamedCallback> callbacks{{"flow", "built-in", std::make_shared<FlowCallback>()},
                                       {"logging", "built-in", std::make_shared<LogCallback>(log)}};
  const auto& trackers = arguments.report_to;
  if (std::find(trackers.begin(), trackers.end(), "tensorboard") != trackers.end() ||
      std::find(trackers.begin(), trackers.end(), "all") != trackers.end()) {
    callbacks.push_back({"tensorboard", "built-in", std::make_shared<TensorBoardCallback>(log.run_dir() / "runs")});
  }
  auto names = arguments.callbacks;
  // early_stop joins when asked for by --early_stop_interval.
  if (arguments.early_stop_interval > 0 && std::find(names.begin(), names.end(), "early_stop") == names.end()) {
    names.push_back("early_stop");
  }
  for (const auto& name : names) {
    const auto& entry = callback_registry().get(name);
    callbacks.push_back({name, entry.origin, entry.factory(PluginContext(arguments, plugin_settings(arguments, name)))});
  }
  return callbacks;
}

}  // namespace lathe
