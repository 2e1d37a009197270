#pragma once
// Checkpoint folders: checkpoint-N/ with the trained weights (adapter or model), tokenizer and
// config copies, optimizer, scheduler and RNG state, trainer_state.json and args.json. Written to
// a temporary folder and renamed, so a crash never leaves one that looks complete and is not.
#include <torch/optim/optimizer.h>

#include <filesystem>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/callback.h"
#include "lathe/plugin/tuner.h"

namespace lathe {

struct CheckpointContents {
  CausalLM& model;
  Tuner& tuner;
  const Arguments& arguments;
  const TrainerState& state;
  const std::vector<std::filesystem::path>& files_to_copy;
  torch::optim::Optimizer* optimizer;  // nullptr with --save_only_model
  int64_t scheduler_step;
};

void write_checkpoint(const std::filesystem::path& dir, const CheckpointContents& contents);

// Restores the optimizer (when given and saved) and the default CPU generator, and returns the
// trainer state. Errors name the checkpoint and the file.
TrainerState read_checkpoint_state(const std::filesystem::path& dir, torch::optim::Optimizer* optimizer);

// Keeps the newest `limit` checkpoint-N folders of run_dir (all when limit < 0), never deleting
// the ones in `keep` (the best and the last).
void prune_checkpoints(const std::filesystem::path& run_dir, int64_t limit,
                       const std::vector<std::filesystem::path>& keep);

}  // namespace lathe
