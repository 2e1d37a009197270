#pragma once
// The learning-rate schedules of --lr_scheduler_type and the parameter grouping of the built-in
// optimizers, public for optimizer plugins that reuse them.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/optimizer.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The schedules of --lr_scheduler_type: cosine, linear, constant, constant_with_warmup,
// cosine_with_min_lr (min rate 10% of the peak unless plugin_args {"min_lr_rate": r}).
std::shared_ptr<LRScheduler> make_scheduler(const std::string& type, int64_t warmup_steps, int64_t total_steps,
                                            double min_lr_rate = 0.1);
// Warm-up steps from --warmup_steps, else --warmup_ratio of the total.
int64_t warmup_steps_for(const Arguments& arguments, int64_t total_steps);

// Trainable parameters split as Hugging Face's Trainer does: weight decay on matrices, none on
// biases and norm weights.
struct ParameterGroups {
  std::vector<torch::Tensor> decay, no_decay;
  std::vector<std::string> decay_names, no_decay_names;
};
ParameterGroups trainable_parameter_groups(CausalLMImpl& model);

// The optimizer a run uses: --optimizer when set to other than "default", else galore with
// --use_galore, lorap with --lorap_lr_ratio > 0, else default.
std::string optimizer_name(const Arguments& arguments);

}  // namespace lathe

LATHE_API_END
