#pragma once
// Collation: examples -> tensors. Padded batches (right padding, causal + padding mask), or packed
// rows (sequences end to end, attention kept within each sequence by their lengths, positions
// restarting at 0).
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "lathe/data/training_data.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

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
  torch::Tensor pooled_positions;  // collate_embeddings: each sequence's last token in the row
};

Batch collate_padded(const std::vector<const Example*>& examples, int32_t pad_id = 0);
Batch collate_packed(const std::vector<const Example*>& examples);
// --task_type embedding: every sequence of every example end to end in one row (as packed rows),
// labels the examples' embedding_labels in order (float32 [candidates]) and pooled_positions the
// index of each sequence's last token (int64 [sequences]). label_tokens counts the examples.
Batch collate_embeddings(const std::vector<const Example*>& examples);

// Groups examples into bins of at most max_length tokens (first fit, longest first), for --packing.
// O(n log n): the first bin with room is found in a tree of the bins' free space.
std::vector<std::vector<std::size_t>> pack_into_bins(const std::vector<Example>& examples, int64_t max_length);

// The order in which the trainer takes `units` (examples, or packed bins) in epoch `epoch`:
// 0..units-1 shuffled by std::shuffle with a std::mt19937_64 seeded with seed + epoch, so that a
// resumed run sees the same order without saving it.
std::vector<std::size_t> epoch_training_order(std::size_t units, uint64_t seed, int64_t epoch);

}  // namespace lathe

LATHE_API_END
