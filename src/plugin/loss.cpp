// Loss plugins (docs/plugins.md): the token losses over shifted labels, the embedding losses over
// pooled rows, and at the bottom of the file the registry with every built-in, registered through
// the same add() a user's plugin calls.
#include "lathe/plugin/loss.h"
#include "lathe/plugin/embedding_losses.h"
#include "lathe/plugin/token_losses.h"

#include <torch/torch.h>

#include "lathe/common/format.h"

namespace lathe {
namespace {

constexpr int64_t kIgnoreIndex = -100;

std::string shape_text(const torch::Tensor& tensor) {
  std::string text = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) text += (d ? ", " : "") + std::to_string(tensor.size(d));
  return text + "]";
}

}  // namespace

ShiftedTokens shift_tokens(const torch::Tensor& hidden, const torch::Tensor& labels,
                           const torch::Tensor& loss_scale) {
  TORCH_CHECK(hidden.dim() == 3 && labels.dim() == 2 && hidden.size(0) == labels.size(0) &&
                  hidden.size(1) == labels.size(1),
              "shift_tokens: hidden [batch, seq, H] and labels [batch, seq] expected, got ", hidden.sizes(), " and ",
              labels.sizes());
  TORCH_CHECK(!loss_scale.defined() || loss_scale.sizes() == labels.sizes(),
              "shift_tokens: loss_scale must match labels ", labels.sizes(), ", got ", loss_scale.sizes());
  const auto batch = hidden.size(0), seq = hidden.size(1), width = hidden.size(2);
  // Position t of a row predicts label t + 1; rows are picked straight out of the flat [batch*seq]
  // layout so the shifted hidden states are never copied whole.
  const auto next_labels = labels.slice(1, 1).to(torch::kInt64);
  const auto kept = (next_labels != kIgnoreIndex).nonzero();  // [K, 2]: (row, position)
  const auto flat = kept.select(1, 0) * seq + kept.select(1, 1);
  ShiftedTokens shifted;
  shifted.hidden = hidden.reshape({batch * seq, width}).index_select(0, flat);
  shifted.targets = labels.to(torch::kInt64).reshape(-1).index_select(0, flat + 1);
  if (loss_scale.defined())
    shifted.weights = loss_scale.to(torch::kFloat32).reshape(-1).index_select(0, flat + 1);
  return shifted;
}

namespace {

// Sum of per-token CE (times the weights when use_weights) over the shifted labels, divided by
// num_items_in_batch, or by this batch's count of kept tokens when the trainer gave none.
LossFunction token_loss(std::string name, bool use_weights) {
  return [name, use_weights](ModelOutputs& outputs, const torch::Tensor& labels, const torch::Tensor& loss_scale,
                             std::optional<int64_t> num_items_in_batch) {
    if (outputs.hidden().dim() != 3)
      fail("loss '{}' needs hidden states [batch, seq, hidden], got {} (pooled rows go to the embedding losses)",
           name, shape_text(outputs.hidden()));
    const auto shifted = shift_tokens(outputs.hidden(), labels, use_weights ? loss_scale : torch::Tensor());
    auto per_token = chunked_token_cross_entropy(shifted.hidden, outputs.head_weight(), shifted.targets);
    if (shifted.weights.defined()) per_token = per_token * shifted.weights;
    const auto denominator = num_items_in_batch.value_or(shifted.targets.size(0));
    return per_token.sum().to(torch::kFloat32) / static_cast<double>(std::max<int64_t>(1, denominator));
  };
}

}  // namespace

// ---- Embedding losses -------------------------------------------------------------------------

torch::Tensor last_token_embeddings(const torch::Tensor& hidden, const torch::Tensor& attention_mask) {
  TORCH_CHECK(hidden.dim() == 3 && attention_mask.dim() == 2 && attention_mask.size(0) == hidden.size(0) &&
                  attention_mask.size(1) == hidden.size(1),
              "last_token_embeddings: hidden [B, S, H] and attention_mask [B, S] expected, got ", hidden.sizes(),
              " and ", attention_mask.sizes());
  const auto batch = hidden.size(0), seq = hidden.size(1);
  const auto real = attention_mask != 0;
  TORCH_CHECK(real.any(1).all().item<bool>(), "last_token_embeddings: a row has no real token");
  const auto positions = torch::arange(seq, attention_mask.options().dtype(torch::kInt64));
  const auto last = (positions * real).amax(1);  // padding counts as position 0, never beyond a real token
  const auto flat = torch::arange(batch, last.options()) * seq + last;
  return hidden.reshape({batch * seq, hidden.size(2)}).index_select(0, flat);
}

namespace {

struct Pairs {
  torch::Tensor first, second, labels;  // [P, H], [P, H], [P] float32
};

Pairs split_pairs(const torch::Tensor& embeddings, const torch::Tensor& labels) {
  if (embeddings.dim() != 2 || embeddings.size(0) % 2 != 0 || labels.numel() * 2 != embeddings.size(0))
    fail("pair losses expect embeddings [2P, hidden] (first, second interleaved) and P labels, got {} and {} labels "
         "(with --task_type embedding: an anchor and a positive per row; rows with negatives need infonce)",
         shape_text(embeddings), labels.numel());
  const auto rows = embeddings.to(torch::kFloat32);
  return {rows.slice(0, 0, rows.size(0), 2), rows.slice(0, 1, rows.size(0), 2),
          labels.reshape(-1).to(torch::kFloat32)};
}

torch::Tensor cosine_distance(const Pairs& pairs) {
  return 1 - torch::cosine_similarity(pairs.first, pairs.second, 1);
}

}  // namespace

torch::Tensor cosine_similarity_loss(const torch::Tensor& embeddings, const torch::Tensor& labels) {
  const auto pairs = split_pairs(embeddings, labels);
  return (torch::cosine_similarity(pairs.first, pairs.second, 1) - pairs.labels).pow(2).mean();
}

torch::Tensor contrastive_loss(const torch::Tensor& embeddings, const torch::Tensor& labels, double margin) {
  const auto pairs = split_pairs(embeddings, labels);
  const auto distance = cosine_distance(pairs);
  const auto& y = pairs.labels;
  return (0.5 * (y * distance.pow(2) + (1 - y) * torch::relu(margin - distance).pow(2))).mean();
}

torch::Tensor online_contrastive_loss(const torch::Tensor& embeddings, const torch::Tensor& labels, double margin) {
  const auto pairs = split_pairs(embeddings, labels);
  const auto distance = cosine_distance(pairs);
  const auto negatives = distance.masked_select(pairs.labels == 0);
  const auto positives = distance.masked_select(pairs.labels == 1);
  // Thresholds are data, not part of the graph.
  const auto negative_threshold = (positives.numel() > 1 ? positives.max() : negatives.mean()).detach();
  const auto positive_threshold = (negatives.numel() > 1 ? negatives.min() : positives.mean()).detach();
  const auto hard_negatives = negatives.masked_select(negatives < negative_threshold);
  const auto hard_positives = positives.masked_select(positives > positive_threshold);
  return hard_positives.pow(2).sum() + torch::relu(margin - hard_negatives).pow(2).sum();
}

namespace {

// Row indices of SWIFT's group layout (see loss.h).
struct Groups {
  std::vector<int64_t> anchors;          // one per group
  std::vector<int64_t> candidates;       // positives and kept negatives of every group
  std::vector<int64_t> candidate_group;  // the group of each candidate
  std::vector<int64_t> positives;        // index into candidates, one per group
};

Groups parse_groups(const torch::Tensor& embeddings, const torch::Tensor& labels,
                    std::optional<int64_t> hard_negatives) {
  const auto flags = labels.reshape(-1).to(torch::kInt64).contiguous();
  const auto* flag = flags.data_ptr<int64_t>();
  const auto count = flags.numel();
  if (count == 0 || flag[0] != 1)
    fail("infonce: labels must open each group with 1 (the positive) followed by 0s (its negatives), got {} labels "
         "starting with {}",
         count, count ? std::to_string(flag[0]) : "nothing");
  Groups groups;
  int64_t row = 0, negatives_in_group = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (flag[i] == 1) {
      groups.anchors.push_back(row++);
      groups.positives.push_back(static_cast<int64_t>(groups.candidates.size()));
      negatives_in_group = 0;
    } else if (flag[i] != 0) {
      fail("infonce: label {} is {}, expected 1 (positive) or 0 (negative)", i, flag[i]);
    } else if (hard_negatives && negatives_in_group++ >= *hard_negatives) {
      ++row;
      continue;
    }
    groups.candidates.push_back(row++);
    groups.candidate_group.push_back(static_cast<int64_t>(groups.anchors.size()) - 1);
  }
  if (row != embeddings.size(0))
    fail("infonce: {} labels describe {} groups and {} rows, but there are {} embeddings", count,
         groups.anchors.size(), row, embeddings.size(0));
  return groups;
}

torch::Tensor index_tensor(const std::vector<int64_t>& values, const torch::Device& device) {
  return torch::tensor(values, torch::TensorOptions(torch::kInt64)).to(device);
}

}  // namespace

torch::Tensor infonce_loss(const torch::Tensor& embeddings, const torch::Tensor& labels,
                           const InfoNCEOptions& options) {
  if (embeddings.dim() != 2) fail("infonce: embeddings [rows, hidden] expected, got {}", shape_text(embeddings));
  const auto groups = parse_groups(embeddings, labels, options.hard_negatives);
  const auto device = embeddings.device();
  const auto rows = torch::nn::functional::normalize(embeddings.to(torch::kFloat32),
                                                    torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto anchors = rows.index_select(0, index_tensor(groups.anchors, device));
  const auto candidates = rows.index_select(0, index_tensor(groups.candidates, device));
  auto scores = anchors.mm(candidates.t()) / options.temperature;  // [groups, candidates]
  if (!options.use_batch) {
    const auto own_group = torch::arange(static_cast<int64_t>(groups.anchors.size()), device).unsqueeze(1) ==
                           index_tensor(groups.candidate_group, device).unsqueeze(0);
    scores = scores.masked_fill(~own_group, -std::numeric_limits<float>::infinity());
  }
  return torch::nn::functional::cross_entropy(scores, index_tensor(groups.positives, device));
}

namespace {

// An embedding loss as a LossFunction: ModelOutputs::hidden() holds the pooled rows.
template <class Compute>
LossFunction embedding_loss(std::string name, Compute compute) {
  return [name, compute](ModelOutputs& outputs, const torch::Tensor& labels, const torch::Tensor&,
                         std::optional<int64_t>) -> torch::Tensor {
    if (outputs.hidden().dim() != 2)
      fail("loss '{}' needs pooled embeddings [rows, hidden] (--task_type embedding), got {}", name,
           shape_text(outputs.hidden()));
    return compute(outputs.hidden(), labels);
  };
}

// --plugin_args '{"infonce": {"temperature": 0.1, "use_batch": true, "hard_negatives": n}}'.
InfoNCEOptions infonce_options(const PluginContext& context) {
  InfoNCEOptions options;
  options.temperature = context.setting("temperature", options.temperature);
  options.use_batch = context.setting("use_batch", options.use_batch);
  if (const auto limit = context.setting<int64_t>("hard_negatives", -1); limit >= 0) options.hard_negatives = limit;
  if (!(options.temperature > 0)) fail("--plugin_args: infonce's temperature must be > 0, got {}", options.temperature);
  return options;
}

// ---- The registry: every built-in, as a user's plugin would add it ---------------------------

void add_builtin_losses(Registry<LossFactory>& registry) {
  registry.add("cross_entropy", "sum of per-token cross entropy over shifted labels / num_items_in_batch (default)",
               [](const PluginContext&) { return token_loss("cross_entropy", false); });
  registry.add("loss_scale", "per-token cross entropy times the --loss_scale weight, summed / num_items_in_batch",
               [](const PluginContext&) { return token_loss("loss_scale", true); });
  registry.add("cosine_similarity", "embedding pairs: mean squared error between cos(s1, s2) and the label",
               [](const PluginContext&) { return embedding_loss("cosine_similarity", cosine_similarity_loss); });
  registry.add("contrastive", "embedding pairs: 0.5*(y*d^2 + (1-y)*relu(0.5-d)^2), d = 1 - cos, mean over pairs",
               [](const PluginContext&) {
                 return embedding_loss("contrastive", [](const torch::Tensor& rows, const torch::Tensor& labels) {
                   return contrastive_loss(rows, labels);
                 });
               });
  registry.add("online_contrastive", "embedding pairs: contrastive loss summed over the hard positives and negatives",
               [](const PluginContext&) {
                 return embedding_loss("online_contrastive",
                                       [](const torch::Tensor& rows, const torch::Tensor& labels) {
                                         return online_contrastive_loss(rows, labels);
                                       });
               });
  registry.add("infonce",
               "embedding groups: InfoNCE over in-batch and hard negatives (--plugin_args {\"infonce\": {\"temperature\": "
               "0.1, \"use_batch\": true, \"hard_negatives\": n}})",
               [](const PluginContext& context) {
                 return embedding_loss("infonce", [options = infonce_options(context)](
                                                      const torch::Tensor& rows, const torch::Tensor& labels) {
                   return infonce_loss(rows, labels, options);
                 });
               });
}

}  // namespace

// Never destroyed: factories added by external plugins live in libraries that may be unloaded
// before static destructors run.
Registry<LossFactory>& loss_registry() {
  static Registry<LossFactory>& registry = *[] {
    auto* built = new Registry<LossFactory>("loss");
    add_builtin_losses(*built);
    return built;
  }();
  return registry;
}

}  // namespace lathe
