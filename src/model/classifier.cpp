#include "lathe/model/classifier.h"

#include <torch/torch.h>

#include "lathe/common/format.h"

namespace lathe {

torch::Tensor classifier_logits(CausalLM& model, const std::vector<std::span<const int32_t>>& sequences) {
  if (!model->is_classifier()) fail("scoring needs a sequence classifier (the model has an output head over the vocabulary)");
  std::vector<int64_t> ids, lengths, last;
  for (const auto& sequence : sequences) {
    if (sequence.empty()) fail("an empty sequence has no last token to score");
    ids.insert(ids.end(), sequence.begin(), sequence.end());
    lengths.push_back(static_cast<int64_t>(sequence.size()));
    last.push_back(static_cast<int64_t>(ids.size()) - 1);
  }
  const auto packed = torch::tensor(ids, torch::kLong).unsqueeze(0);
  const auto hidden = model->forward({packed, packed_position_ids(lengths), {}, nullptr, lengths}).squeeze(0);
  const auto rows = hidden.index_select(0, torch::tensor(last, torch::kLong));
  // In float32 whatever the body computes in: a trained head is held in float32.
  return torch::linear(rows.to(torch::kFloat32), model->output_weight().to(torch::kFloat32));
}

}  // namespace lathe
