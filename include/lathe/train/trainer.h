#pragma once
// The training loop: gradient accumulation with the num_items_in_batch rule, clipping,
// the optimizer and schedule from the plugins, evaluation, logging, checkpoints, resume.
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/train/batch.h"
#include "lathe/model/model.h"
#include "lathe/plugin/callback.h"
#include "lathe/plugin/loss.h"
#include "lathe/plugin/optimizer.h"
#include "lathe/plugin/tuner.h"
#include "lathe/train/objective.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct TrainingResult {
  std::filesystem::path run_dir;
  std::filesystem::path last_checkpoint;
  std::filesystem::path best_checkpoint;
  TrainerState state;
};

struct TrainerSetup {
  Arguments arguments;
  CausalLM model{nullptr};
  std::shared_ptr<Tuner> tuner;
  std::vector<Example> train;
  std::shared_ptr<ExampleStream> stream;  // --streaming: used instead of `train`
  std::vector<Example> eval;
  std::filesystem::path run_dir;     // where logs and checkpoints go
  std::vector<std::filesystem::path> files_to_copy;  // tokenizer/config files copied into checkpoints
  std::vector<std::shared_ptr<Callback>> extra_callbacks;
  int32_t pad_token_id = 0;
  // Generation metrics (--predict_with_generate): token ids -> text, and the ids that end a response.
  std::function<std::string(const std::vector<int32_t>&)> decode;
  std::vector<int32_t> stop_token_ids;
  // lathe rlhf: what each step optimises instead of the loss plugin's token loss (no --metric
  // plugins then: evaluation reports eval_loss and the objective's measurements).
  std::shared_ptr<TrainingObjective> objective;
};

class Trainer {
 public:
  explicit Trainer(TrainerSetup setup);
  ~Trainer();
  TrainingResult train();
  // eval_loss (mean over label tokens) and eval_<key> for every key of the --metric plugins (acc
  // by default, nlg with --predict_with_generate); with an objective, its loss (mean over rows) and
  // eval_<key> for everything it measures.
  std::map<std::string, double> evaluate();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// output_dir/vN-YYYYMMDD-HHMMSS (or output_dir itself without --add_version).
std::filesystem::path make_run_dir(const Arguments& arguments);

}  // namespace lathe

LATHE_API_END
