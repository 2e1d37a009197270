#pragma once
// lathe rlhf's objectives (docs/commands.md), ms-swift's formulas: dpo with the preference-loss
// registry's variants (lathe/plugin/preference_loss.h), cpo, simpo, orpo, kto and rm. Every
// sequence of a micro-batch (chosen and rejected, or completion and its mismatched KL completion)
// goes through one padding-free forward; the reference's log-probabilities come from a second
// forward without autograd in the same step.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/train/objective.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Where dpo's and kto's reference log-probabilities come from.
struct AlignmentReference {
  enum class Kind {
    none,          // cpo, simpo, orpo
    adapters_off,  // LoRA and the other adapters: the policy itself with its adapters bypassed
    frozen_model,  // full tuning or --ref_model: a frozen copy
  };
  Kind kind = Kind::none;
  CausalLM model{nullptr};  // frozen_model only
};

// Whether --rlhf_type compares the policy with a reference (dpo, kto; grpo unless its beta is 0).
bool alignment_uses_reference(const Arguments& arguments);

// The objective of --rlhf_type, its settings checked (an unknown --loss_type, --loss_weights of
// the wrong length, a reference where the type takes none): lathe::Error naming the option.
std::shared_ptr<TrainingObjective> make_alignment_objective(const Arguments& arguments, AlignmentReference reference);

// The per-sequence view both objectives and tests use: the log-probabilities of each sequence's
// trained tokens (labels not -100, each predicted by the token before it) under `model`.
struct TokenSequence {
  std::span<const int32_t> input_ids;
  std::span<const int32_t> labels;
};
struct SequenceScores {
  torch::Tensor logps;           // [S] summed log-probabilities of the trained tokens
  torch::Tensor tokens;          // [S] float32: trained tokens per sequence
  torch::Tensor mean_logits;     // [S] detached: summed over trained tokens, each the mean over the vocabulary
  torch::Tensor token_logps;     // [K] every trained token's log-probability, in row order
  torch::Tensor token_sequence;  // [K] int64: the sequence of each
};
SequenceScores score_sequences(CausalLM& model, const std::vector<TokenSequence>& sequences);
// The reference's scores of the sequences, without autograd: the policy with its adapters
// bypassed, or the frozen copy.
SequenceScores reference_scores(const AlignmentReference& reference, CausalLM& policy,
                                const std::vector<TokenSequence>& sequences);

// The formulas of the reference-free and the unpaired objectives on given log-probabilities, as
// ms-swift's (TRL's) cpo_loss, odds_ratio_loss and kto_loss compute them; dpo's are the
// preference-loss registry's. All take and return [n] tensors.
//
// cpo and simpo, per pair: `chosen` and `rejected` are summed log-probabilities (means for ipo and
// simpo); variant sigmoid, hinge, ipo or simpo.
torch::Tensor cpo_losses(const std::string& variant, const torch::Tensor& chosen, const torch::Tensor& rejected, double beta,
                         double label_smoothing, double simpo_gamma);
// orpo, per pair, from mean log-probabilities: the log odds ratio and its log-sigmoid (the loss is
// the chosen NLL minus beta times the mean log-sigmoid).
struct OddsRatio {
  torch::Tensor log_odds, log_sigmoid;
};
OddsRatio orpo_odds_ratio(const torch::Tensor& chosen_means, const torch::Tensor& rejected_means);
// kto: the KL estimate (a detached scalar, at least 0) from the mismatched completions' summed
// log-probabilities, and the losses of the desirable and undesirable rows from their log-ratios
// (policy minus reference); variant kto or apo_zero_unpaired (which ignores kl).
torch::Tensor kto_kl(const torch::Tensor& policy_kl, const torch::Tensor& reference_kl);
struct KtoLosses {
  torch::Tensor desirable, undesirable;
};
KtoLosses kto_losses(const std::string& variant, const torch::Tensor& desirable_ratios,
                     const torch::Tensor& undesirable_ratios, const torch::Tensor& kl, double beta);

// rm: a sequence classifier's reward of each sequence, its one-label score head on the hidden
// state of the sequence's last token (transformers' last non-pad token), float32 [S]. Throws
// lathe::Error for a model that is not a one-label classifier.
torch::Tensor sequence_rewards(CausalLM& model, const std::vector<TokenSequence>& sequences);
// rm's loss per pair, ms-swift's (TRL's) RewardTrainer: -log sigma(chosen - rejected - margin).
torch::Tensor reward_model_losses(const torch::Tensor& chosen, const torch::Tensor& rejected, const torch::Tensor& margins);

// KTO's mismatched pairs, as ms-swift builds them: the examples (in training order) are taken in
// chunks of `chunk` (the global batch); within a chunk example i's KL completion is its own prompt
// with the response of example i - 1 (the first takes the chunk's last). Each example becomes its
// completion then its KL sequence end to end, with segment_lengths holding both lengths. Throws
// lathe::Error when chunk < 2.
void attach_kl_completions(std::vector<Example>& examples, int64_t chunk);

}  // namespace lathe

LATHE_API_END
