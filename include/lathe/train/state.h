#pragma once
// What the trainer shows its callbacks: the run's state (saved as trainer_state.json in every
// checkpoint), the control flags through which callbacks steer training, and what an event can
// look at besides them. Implemented in src/train/ (the trainer and its checkpoints).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/model/model.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace torch::optim {
class Optimizer;
}

namespace lathe {

// Saved as trainer_state.json in every checkpoint and restored on resume.
struct TrainerState {
  double epoch = 0.0;  // fractional
  int64_t global_step = 0;
  int64_t max_steps = 0;
  double num_train_epochs = 0;
  double total_flos = 0;
  std::vector<nlohmann::json> log_history;
  std::optional<double> best_metric;
  std::string best_model_checkpoint;
  bool is_world_process_zero = true;
  // Lathe's own: where the data position stands, and counters that must survive a resume.
  int64_t epoch_index = 0;           // whole epochs completed
  int64_t step_in_epoch = 0;         // optimizer steps done in the current epoch
  int64_t skipped_nonfinite_steps = 0;
  int64_t trained_tokens = 0;

  nlohmann::json to_json() const;
  static TrainerState from_json(const nlohmann::json& json, const std::string& source);
};

struct TrainerControl {
  bool should_training_stop = false;  // never reset
  bool should_epoch_stop = false;     // reset at each epoch start
  bool should_save = false;           // reset at each step start
  bool should_evaluate = false;       // reset at each step start
  bool should_log = false;            // reset at each step start
};

class LRScheduler;

// What an event can look at besides args/state/control.
struct CallbackContext {
  CausalLMImpl* model = nullptr;
  torch::optim::Optimizer* optimizer = nullptr;
  LRScheduler* scheduler = nullptr;
  const std::map<std::string, double>* metrics = nullptr;  // on_evaluate
  const nlohmann::json* logs = nullptr;                    // on_log
  std::string checkpoint_dir;                              // on_save
};

}  // namespace lathe

LATHE_API_END
