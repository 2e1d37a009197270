#include "lathe/train/batch.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <random>

#include "lathe/model/model.h"

namespace lathe {

static int64_t shifted_label_count(const Example& example) {
  return std::count_if(example.labels.begin() + std::min<std::size_t>(1, example.labels.size()), example.labels.end(),
                       [](int32_t label) { return label != kIgnoreIndex; });
}

static bool any_fractional(const std::vector<const Example*>& examples) {
  return std::any_of(examples.begin(), examples.end(), [](const Example* e) { return !e->loss_scale.empty(); });
}

// Writes one example into row `row` of the batch tensors starting at column `offset`.
static void place(const Example& example, int64_t row, int64_t offset, Batch& batch, bool first_label_ignored) {
  const auto n = example.size();
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto labels = batch.labels.accessor<int64_t, 2>();
  for (int64_t t = 0; t < n; ++t) {
    ids[row][offset + t] = example.input_ids[t];
    labels[row][offset + t] = example.labels[t];
  }
  // In a packed row the first token's label would be predicted from the previous sequence.
  if (first_label_ignored && n > 0) labels[row][offset] = kIgnoreIndex;
  if (batch.loss_scale.defined()) {
    auto scale = batch.loss_scale.accessor<float, 2>();
    for (int64_t t = 0; t < n; ++t) {
      scale[row][offset + t] = example.loss_scale.empty() ? (example.labels[t] == kIgnoreIndex ? 0.f : 1.f)
                                                          : example.loss_scale[t];
    }
  }
  batch.tokens += n;
  batch.label_tokens += shifted_label_count(example);
}

Batch collate_padded(const std::vector<const Example*>& examples, int32_t pad_id) {
  Batch batch;
  const auto rows = static_cast<int64_t>(examples.size());
  int64_t width = 0;
  for (const auto* example : examples) width = std::max(width, example->size());
  batch.input_ids = torch::full({rows, width}, static_cast<int64_t>(pad_id), torch::kLong);
  batch.labels = torch::full({rows, width}, static_cast<int64_t>(kIgnoreIndex), torch::kLong);
  if (any_fractional(examples)) batch.loss_scale = torch::zeros({rows, width}, torch::kFloat32);
  auto key_padding = torch::zeros({rows, width}, torch::kBool);
  for (int64_t r = 0; r < rows; ++r) {
    place(*examples[r], r, 0, batch, false);
    key_padding[r].slice(0, 0, examples[r]->size()).fill_(true);
  }
  batch.attention_mask = causal_padding_mask(key_padding, width);
  batch.position_ids = torch::arange(width, torch::kLong).unsqueeze(0).expand({rows, width}).contiguous();
  return batch;
}

Batch collate_packed(const std::vector<const Example*>& examples) {
  Batch batch;
  std::vector<int64_t> lengths;
  for (const auto* example : examples) lengths.push_back(example->size());
  const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  batch.input_ids = torch::zeros({1, total}, torch::kLong);
  batch.labels = torch::full({1, total}, static_cast<int64_t>(kIgnoreIndex), torch::kLong);
  if (any_fractional(examples)) batch.loss_scale = torch::zeros({1, total}, torch::kFloat32);
  int64_t offset = 0;
  for (const auto* example : examples) {
    place(*example, 0, offset, batch, true);
    offset += example->size();
  }
  batch.position_ids = packed_position_ids(lengths);
  batch.sequence_lengths = std::move(lengths);
  return batch;
}

Batch collate_embeddings(const std::vector<const Example*>& examples) {
  Batch batch;
  std::vector<int64_t> ids, lengths, last_tokens;
  std::vector<float> labels;
  int64_t end = 0;
  for (const auto* example : examples) {
    if (example->segment_lengths.empty()) throw std::logic_error("collate_embeddings: an example without sequences");
    ids.insert(ids.end(), example->input_ids.begin(), example->input_ids.end());
    labels.insert(labels.end(), example->embedding_labels.begin(), example->embedding_labels.end());
    for (auto length : example->segment_lengths) {
      lengths.push_back(length);
      end += length;
      last_tokens.push_back(end - 1);
    }
  }
  batch.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);
  batch.labels = torch::tensor(labels, torch::kFloat32);
  batch.pooled_positions = torch::tensor(last_tokens, torch::kLong);
  batch.position_ids = packed_position_ids(lengths);
  batch.sequence_lengths = std::move(lengths);
  batch.tokens = static_cast<int64_t>(ids.size());
  batch.label_tokens = static_cast<int64_t>(examples.size());
  return batch;
}

namespace {

// The free space of each bin in a max tree, so that the first bin with at least `size` free is
// found in O(log bins) instead of by a scan over every bin.
class FreeSpaceTree {
 public:
  explicit FreeSpaceTree(std::size_t capacity) {
    while (leaves_ < std::max<std::size_t>(1, capacity)) leaves_ *= 2;
    room_.assign(2 * leaves_, -1);
  }
  // The first bin (in creation order) with at least `size` free, or nullopt.
  std::optional<std::size_t> first_fit(int64_t size) const {
    if (room_[1] < size) return std::nullopt;
    std::size_t node = 1;
    while (node < leaves_) node = room_[2 * node] >= size ? 2 * node : 2 * node + 1;
    return node - leaves_;
  }
  void set(std::size_t bin, int64_t room) {
    std::size_t node = bin + leaves_;
    room_[node] = room;
    for (node /= 2; node >= 1; node /= 2) room_[node] = std::max(room_[2 * node], room_[2 * node + 1]);
  }
  int64_t room(std::size_t bin) const { return room_[bin + leaves_]; }

 private:
  std::size_t leaves_ = 1;
  std::vector<int64_t> room_;  // -1: no bin there yet
};

}  // namespace

std::vector<std::vector<std::size_t>> pack_into_bins(const std::vector<Example>& examples, int64_t max_length) {
  std::vector<std::size_t> order(examples.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return examples[a].size() > examples[b].size(); });
  std::vector<std::vector<std::size_t>> bins;
  FreeSpaceTree free_space(examples.size());
  for (auto index : order) {
    const auto size = static_cast<int64_t>(examples[index].size());
    if (const auto bin = free_space.first_fit(size)) {
      bins[*bin].push_back(index);
      free_space.set(*bin, free_space.room(*bin) - size);
    } else {
      // An example longer than max_length gets a bin of its own, as the linear scan gave it.
      free_space.set(bins.size(), std::max<int64_t>(max_length - size, -1));
      bins.push_back({index});
    }
  }
  return bins;
}

std::vector<std::size_t> epoch_training_order(std::size_t units, uint64_t seed, int64_t epoch) {
  std::vector<std::size_t> order(units);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937_64 rng(seed + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

}  // namespace lathe
