#pragma once
// What a run shows and records: logging.jsonl rows (SWIFT's keys), the progress line on a
// terminal (plain lines otherwise), and the end summary with plots.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/plugin/callback.h"

namespace lathe {

class RunLog {
 public:
  explicit RunLog(std::filesystem::path run_dir);
  void start(const TrainerState& state);
  nlohmann::json step_entry(const TrainerState& state, double loss, double grad_norm, double learning_rate,
                            int64_t steps, int64_t tokens, double seconds);
  nlohmann::json eval_entry(const TrainerState& state, const std::map<std::string, double>& metrics);
  void write(const nlohmann::json& entry);  // appends to logging.jsonl and shows it
  void progress(const TrainerState& state);
  void finish(const TrainerState& state, const std::filesystem::path& last, const std::string& best);
  const std::filesystem::path& run_dir() const { return run_dir_; }

 private:
  std::string timing(const TrainerState& state) const;
  std::filesystem::path run_dir_;
  std::chrono::steady_clock::time_point start_;
  int64_t start_step_ = 0;
  bool terminal_ = false;
  double last_loss_ = 0, last_rate_ = 0;
};

// A callback with where it came from, so that an exception it throws can name it.
struct NamedCallback {
  std::string name;
  std::string origin;  // "built-in" or the plugin file that registered it
  std::shared_ptr<Callback> callback;
};

// The trainer's own callbacks: the flow (when to log, evaluate, save), the progress display and
// the logging.jsonl writer, then those named by --callbacks.
std::vector<NamedCallback> default_callbacks(const Arguments& arguments, RunLog& log);

// Peak resident memory of this process in GiB.
double peak_memory_gib();

}  // namespace lathe
