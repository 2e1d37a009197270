#pragma once
// The built-in embedding losses (--loss_type cosine_similarity | contrastive | online_contrastive |
// infonce with --task_type embedding) and the pooling they share, public for plugins that combine
// them. They take pooled embeddings, one row per sequence, and labels per pair or per candidate;
// their losses are means over pairs or groups, as in SWIFT.
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The hidden state of each row's last real token: hidden [B, S, H], attention_mask [B, S]
// (nonzero = real token; left or right padding). Returns [B, H].
torch::Tensor last_token_embeddings(const torch::Tensor& hidden, const torch::Tensor& attention_mask);

// Pair layout (cosine_similarity, contrastive, online_contrastive): embeddings [2P, H] interleaved
// as (first_0, second_0, first_1, second_1, ...); labels [P] (a similarity score, or 1 = similar,
// 0 = dissimilar).
// Mean over pairs of (cos(first, second) - label)^2.
torch::Tensor cosine_similarity_loss(const torch::Tensor& embeddings, const torch::Tensor& labels);
// Mean over pairs of 0.5 * (y d^2 + (1 - y) relu(margin - d)^2), d = 1 - cos.
torch::Tensor contrastive_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                               double margin = 0.5);
// Sum over hard pairs only of d^2 (positives) and relu(margin - d)^2 (negatives), as
// sentence-transformers' OnlineContrastiveLoss: a positive is hard when its distance exceeds the
// smallest negative distance, a negative when it is below the largest positive distance (with
// fewer than two pairs on the other side, the own side's mean distance is the threshold).
torch::Tensor online_contrastive_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                                      double margin = 0.5);

// Group layout (infonce, SWIFT's): embeddings are groups (anchor, positive, negative...) laid end
// to end; labels has one entry per non-anchor row, 1 for the positive that opens a group and 0
// for its (hard) negatives, so [1,0,0, 1] is two groups of 4 and 2 rows.
struct InfoNCEOptions {
  double temperature = 0.1;
  // Every group's positives and negatives are candidates for every anchor (in-batch negatives);
  // false: only the anchor's own group.
  bool use_batch = true;
  // Keep at most this many hard negatives per group (the first ones).
  std::optional<int64_t> hard_negatives;
};
// Mean over groups of the cross entropy of cos(anchor, candidates) / temperature with the group's
// positive as the target.
torch::Tensor infonce_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                           const InfoNCEOptions& options = {});

}  // namespace lathe

LATHE_API_END
