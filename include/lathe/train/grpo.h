#pragma once
// lathe rlhf --rlhf_type grpo (docs/commands.md): ms-swift's GRPO. Each optimizer step the policy
// writes num_generations completions for every prompt of the step on Lathe's generation engine
// (from its live weights), the reward functions of the ORM registry score them, group-relative
// advantages weigh each completion's tokens, and the clipped surrogate (plus beta times the k3 KL
// to the reference) is the loss. The formulas are ms-swift's (docs/commands.md).
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/infer/engine.h"
#include "lathe/model/model.h"
#include "lathe/template/agent_template.h"
#include "lathe/train/alignment.h"
#include "lathe/train/objective.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Advantages of rewards [N] taken in consecutive groups of `group` completions: estimator grpo
// (R - group mean), rloo (K/(K-1) times that) or reinforce_plus_plus (R - group mean, scaled by
// the std of those); scale group, batch or none divides by the unbiased std + 1e-4.
torch::Tensor group_advantages(const torch::Tensor& rewards, int64_t group, const std::string& estimator,
                               const std::string& scale);

// ms-swift's k3 estimate of the KL to the reference, per token: d = clamp(ref - logp, -20, 20),
// clamp(e^d - d - 1, -10, 10).
torch::Tensor k3_kl(const torch::Tensor& reference_logps, const torch::Tensor& logps);

// One micro-batch's completion tokens, in row order: [K] tensors.
struct GrpoTokens {
  torch::Tensor logps;            // the policy's, with gradient
  torch::Tensor old_logps;        // at rollout time (on-policy: logps detached)
  torch::Tensor reference_logps;  // undefined without a KL term in the loss
  torch::Tensor advantages;       // each token's completion's advantage
  torch::Tensor mask;             // float 1 where the token takes part
  torch::Tensor sequence;         // int64: the completion of each token, 0 .. sequences-1
  int64_t sequences = 0;
};

struct GrpoLossSettings {
  std::string loss_type = "grpo";  // grpo | bnpo | dr_grpo | dapo | cispo
  std::string importance_sampling_level = "token";  // token | sequence | sequence_token
  double epsilon = 0.2, epsilon_high = 0.2;
  std::optional<double> delta;
  double beta = 0.04;  // 0: no KL term
  int64_t max_completion_length = 512;  // dr_grpo's normaliser
  double window_tokens = 0;  // dapo, cispo: the completion tokens of the whole rollout batch
  int64_t micro_batches = 1;  // of the optimizer step: grpo, bnpo and dr_grpo are divided by it
};

struct GrpoLoss {
  torch::Tensor loss;  // scalar
  std::optional<double> kl;  // masked mean of k3, with a KL term
  double clip_low = 0, clip_high = 0, clip_region = 0;  // masked means (cispo: clip_high only)
};

// The per-token surrogate -min(rho A, clip(rho) A) (cispo: -sg(min(rho, epsilon_high)) A logp),
// plus beta times the k3 KL, aggregated as loss_type says.
GrpoLoss grpo_loss(const GrpoTokens& tokens, const GrpoLossSettings& settings);

// What the recipe hands the objective besides the arguments.
struct GrpoSetup {
  AlignmentReference reference;  // none when beta is 0 (or the KL goes into the reward)
  EngineOptions engine;          // decode for the completions' text, --max_batch_size
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop_strings;  // an answer ends before the first (multi-turn: the agent template's)
  std::filesystem::path completions_file;  // --log_completions; empty otherwise
  // --dynamic_sample: the training prompts (each once), from which replacement groups are drawn.
  std::shared_ptr<const std::vector<Example>> prompt_pool;
  // --multi_turn_scheduler: the run's agent template (for schedulers that parse tool calls), the
  // prompt of a conversation so far (up to the generation prompt), and a finished trajectory's
  // training form (its answers trained, what the scheduler added not).
  std::shared_ptr<const AgentTemplate> agent_template;
  std::function<std::vector<int32_t>(const Conversation&)> encode_prompt;
  std::function<Example(const Conversation&)> encode_trajectory;
};

// Checks grpo's settings before anything is loaded or written: lathe::Error naming the option.
void check_grpo_arguments(const Arguments& arguments);
// grpo's --beta (default 0.04) and whether the loss carries the KL (not with --kl_in_reward).
double grpo_beta(const Arguments& arguments);
bool grpo_kl_in_reward(const Arguments& arguments);

std::shared_ptr<TrainingObjective> make_grpo_objective(const Arguments& arguments, GrpoSetup setup);

}  // namespace lathe

LATHE_API_END
