#pragma once
// Scoring with a sequence classifier (a reward model): its score head on the hidden state of each
// sequence's last token, as transformers' *ForSequenceClassification reads a row's last non-pad
// token. Shared by reward-model training and the reward-model plugins that score with it.
#include <cstdint>
#include <span>
#include <vector>

#include "lathe/model/model.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// [S, num_labels] float32 logits, one row per sequence; the sequences go through one padding-free
// forward. Throws lathe::Error for a model that is not a classifier or an empty sequence.
torch::Tensor classifier_logits(CausalLM& model, const std::vector<std::span<const int32_t>>& sequences);

}  // namespace lathe

LATHE_API_END
