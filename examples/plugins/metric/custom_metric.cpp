// A metric plugin registered as "custom": top-k next-token accuracy. Its preprocessing keeps the
// k most likely token ids of each position instead of the full logits; compute counts a label
// token as right when it is among them.
//   lathe sft ... --external_plugins examples/plugins/metric/custom_metric.cpp --metric custom \
//       --plugin_args '{"custom": {"top_k": 2}}'
// The value is logged as eval_top_k_acc. With top_k 1 it equals acc's eval_token_acc.
#include <lathe/plugin.h>
#include <lathe/plugin/metric.h>

#include <torch/torch.h>

#include <algorithm>

namespace {

class TopKAccuracy : public lathe::Metric {
 public:
  explicit TopKAccuracy(int64_t k) : k_(std::max<int64_t>(1, k)) {}

  torch::Tensor preprocess_logits(const torch::Tensor& logits, const torch::Tensor&) override {
    return std::get<1>(logits.topk(std::min(k_, logits.size(-1)), -1));  // [batch, seq, k]
  }

  std::map<std::string, double> compute(const lathe::EvalPrediction& prediction) override {
    int64_t correct = 0, total = 0;
    for (std::size_t batch = 0; batch < prediction.predictions.size(); ++batch) {
      const auto& top = prediction.predictions[batch];
      const auto& labels = prediction.labels[batch];
      // Position t predicts label t + 1.
      auto predicted = top.narrow(1, 0, top.size(1) - 1);
      auto next = labels.narrow(1, 1, labels.size(1) - 1).to(torch::kLong);
      auto mask = next.ne(-100);
      auto hit = predicted.eq(next.unsqueeze(-1)).any(-1).logical_and(mask);
      correct += hit.sum().item<int64_t>();
      total += mask.sum().item<int64_t>();
    }
    return {{"top_k_acc", total == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(total)}};
  }

 private:
  int64_t k_;
};

}  // namespace

LATHE_PLUGIN() {
  lathe::metric_registry().add("custom", "top-k next-token accuracy (settings: top_k, default 2)",
                               [](const lathe::PluginContext& context) {
                                 return std::make_shared<TopKAccuracy>(context.setting("top_k", int64_t{2}));
                               });
}
