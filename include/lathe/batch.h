#pragma once
// Collation: examples -> tensors. Padded batches (right padding, causal + padding mask), or packed
// rows (sequences end to end, attention kept within each sequence by their lengths, positions
// restarting at 0).
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "lathe/training_data.h"

namespace lathe {

struct Batch {
  torch::Tensor input_ids;       // int64 [B, T]
  torch::Tensor labels;          // int64 [B, T], -100 ignored (shifted by the loss)
  torch::Tensor loss_scale;      // float32 [B, T] or undefined
  torch::Tensor attention_mask;  // bool [B, 1, T, T]; undefined for packed rows (see below)
  torch::Tensor position_ids;    // int64 [B, T]
  // Packed: the lengths of the sequences laid end to end in the single row, for
  // ForwardInputs::sequence_lengths (attention per sequence, no [T, T] mask). Empty when padded.
  std::vector<int64_t> sequence_lengths;
  int64_t tokens = 0;            // real (non-padding) tokens
  int64_t label_tokens = 0;      // non-ignored shifted labels: this batch's share of num_items_in_batch
};

Batch collate_padded(const std::vector<const Example*>& examples, int32_t pad_id = 0);
Batch collate_packed(const std::vector<const Example*>& examples);

// Groups examples into bins of at most max_length tokens (first fit, longest first), for --packing.
std::vector<std::vector<std::size_t>> pack_into_bins(const std::vector<Example>& examples, int64_t max_length);

}  // namespace lathe
