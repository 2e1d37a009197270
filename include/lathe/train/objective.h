#pragma once
// What a training step optimises when it is not a loss plugin's token loss: lathe rlhf's pairwise
// and labelled objectives (lathe/train/alignment.h). The trainer keeps everything else: the data
// order, accumulation, autocast, clipping, the optimizer and schedule, callbacks, evaluation,
// logging and checkpoints; an objective turns one micro-batch of examples into its loss.
#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lathe/data/training_data.h"
#include "lathe/model/model.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Values an objective measures, summed with their counts over the micro-batches of a logging
// window or an evaluation and reported as means (ms-swift's rewards/chosen, logps/rejected, ...).
class MetricTotals {
 public:
  void add(const std::string& key, double sum, double count = 1);
  void merge(const MetricTotals& other);
  // sum / count for every key with a count, under `prefix` + key.
  std::map<std::string, double> means(const std::string& prefix = "") const;
  bool empty() const { return totals_.empty(); }
  void clear() { totals_.clear(); }

 private:
  std::map<std::string, std::pair<double, double>> totals_;
};

class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;
  // The loss of one micro-batch. `examples_in_step` counts the examples of every micro-batch of the
  // optimizer step: a loss that is a mean over examples divides its sum by it, so that accumulation
  // equals one large batch. Adds what it measured to `metrics`. The trainer calls it with autograd
  // in training and under NoGradGuard (the model in eval mode) in evaluation.
  virtual torch::Tensor loss(CausalLM& model, const std::vector<const Example*>& examples, int64_t examples_in_step,
                             MetricTotals& metrics) = 0;
  // Called with all micro-batches of an optimizer step before their losses (and with each
  // evaluation batch before its loss), for an objective that needs the whole step first: grpo
  // generates and scores the step's completions here, as its groups may span micro-batches.
  // `step` counts optimizer steps from 0; `training` is false in evaluation.
  virtual void begin_step(CausalLM& /*model*/, const std::vector<std::vector<const Example*>>& /*micro_batches*/,
                          int64_t /*step*/, bool /*training*/, MetricTotals& /*metrics*/) {}
  // For messages: "dpo (sigmoid)".
  virtual std::string name() const = 0;
};

}  // namespace lathe

LATHE_API_END
