// Collation: padded and packed batches carry the same tokens, labels and weights, with masks and
// positions that keep each sequence on its own.
#include <gtest/gtest.h>

#include <algorithm>

#include "lathe/train/batch.h"

namespace lathe {
namespace {

Example example(std::vector<int32_t> ids, std::vector<int32_t> labels, std::vector<float> scale = {}) {
  return Example{std::move(ids), std::move(labels), std::move(scale)};
}

TEST(Collate, PaddedRightPadsAndCountsShiftedLabels) {
  auto a = example({1, 2, 3}, {-100, 2, 3});
  auto b = example({4, 5}, {4, 5});  // the first label has nothing before it: not counted
  auto batch = collate_padded({&a, &b}, 0);
  EXPECT_TRUE(torch::equal(batch.input_ids, torch::tensor({1, 2, 3, 4, 5, 0}, torch::kLong).view({2, 3})));
  EXPECT_TRUE(torch::equal(batch.labels, torch::tensor({-100, 2, 3, 4, 5, -100}, torch::kLong).view({2, 3})));
  EXPECT_EQ(batch.label_tokens, 3);
  EXPECT_EQ(batch.tokens, 5);
  EXPECT_FALSE(batch.loss_scale.defined());
  // Row 1 may not attend its padding column.
  EXPECT_FALSE(batch.attention_mask[1][0][1][2].item<bool>());
  EXPECT_TRUE(batch.attention_mask[1][0][1][0].item<bool>());
  EXPECT_FALSE(batch.attention_mask[0][0][0][1].item<bool>());  // causal
}

TEST(Collate, WeightsTravelOnlyWhenFractional) {
  auto a = example({1, 2}, {-100, 2}, {0.f, 2.5f});
  auto b = example({3, 4}, {-100, 4});
  auto batch = collate_padded({&a, &b}, 0);
  ASSERT_TRUE(batch.loss_scale.defined());
  EXPECT_TRUE(torch::equal(batch.loss_scale, torch::tensor({0.f, 2.5f, 0.f, 1.f}).view({2, 2})));
}

TEST(Collate, PackedKeepsSequencesApart) {
  auto a = example({1, 2, 3}, {1, 2, 3});
  auto b = example({4, 5}, {4, 5});
  auto batch = collate_packed({&a, &b});
  EXPECT_TRUE(torch::equal(batch.input_ids, torch::tensor({1, 2, 3, 4, 5}, torch::kLong).view({1, 5})));
  // The first token of each sequence is never a target (it would be predicted across the boundary).
  EXPECT_TRUE(torch::equal(batch.labels, torch::tensor({-100, 2, 3, -100, 5}, torch::kLong).view({1, 5})));
  EXPECT_TRUE(torch::equal(batch.position_ids, torch::tensor({0, 1, 2, 0, 1}, torch::kLong).view({1, 5})));
  // Attention is kept within each sequence by their lengths; no [total, total] mask is built.
  EXPECT_EQ(batch.sequence_lengths, (std::vector<int64_t>{3, 2}));
  EXPECT_FALSE(batch.attention_mask.defined());
  EXPECT_EQ(batch.label_tokens, 3);
}

TEST(Collate, BinsRespectTheLimit) {
  std::vector<Example> examples;
  for (int n : {5, 3, 4, 2, 6, 1}) examples.push_back(example(std::vector<int32_t>(n, 1), std::vector<int32_t>(n, 1)));
  auto bins = pack_into_bins(examples, 7);
  std::size_t placed = 0;
  for (const auto& bin : bins) {
    int64_t total = 0;
    for (auto index : bin) total += examples[index].size();
    EXPECT_LE(total, 7);
    placed += bin.size();
  }
  EXPECT_EQ(placed, examples.size());
  EXPECT_EQ(bins.size(), 3u);  // 21 tokens in bins of 7: first fit decreasing finds the optimum here
}

// First fit decreasing written as the definition says: each example, longest first, goes into the
// first bin (in creation order) with room, else into a new bin.
std::vector<std::vector<std::size_t>> first_fit_by_scan(const std::vector<Example>& examples, int64_t limit) {
  std::vector<std::size_t> order(examples.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return examples[a].size() > examples[b].size(); });
  std::vector<std::vector<std::size_t>> bins;
  std::vector<int64_t> used;
  for (auto index : order) {
    const auto size = static_cast<int64_t>(examples[index].size());
    std::size_t bin = 0;
    while (bin < bins.size() && used[bin] + size > limit) ++bin;
    if (bin == bins.size()) {
      bins.emplace_back();
      used.push_back(0);
    }
    bins[bin].push_back(index);
    used[bin] += size;
  }
  return bins;
}

TEST(Collate, BinsAreFirstFitDecreasingIncludingOversizedExamples) {
  std::vector<Example> examples;
  uint64_t state = 12345;
  for (int i = 0; i < 3000; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto n = static_cast<int>(1 + (state >> 33) % 300);  // a few longer than the limit of 256
    examples.push_back(example(std::vector<int32_t>(n, 1), std::vector<int32_t>(n, 1)));
  }
  EXPECT_EQ(pack_into_bins(examples, 256), first_fit_by_scan(examples, 256));
}

TEST(Collate, EpochOrderIsASeededPermutationThatChangesWithTheEpoch) {
  const auto first = epoch_training_order(50, 7, 0);
  auto sorted = first;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_EQ(epoch_training_order(50, 7, 0), first);
  EXPECT_NE(epoch_training_order(50, 7, 1), first);
  EXPECT_EQ(epoch_training_order(50, 8, 0), epoch_training_order(50, 7, 1)) << "seed + epoch seeds the shuffle";
}

}  // namespace
}  // namespace lathe
