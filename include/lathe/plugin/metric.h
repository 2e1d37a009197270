#pragma once
// Metric plugins (`--metric name`, docs/plugins.md): a pair of preprocess_logits, run on each eval
// batch so that only what the metric needs is kept (argmax ids instead of full logits), and
// compute, run once over everything gathered. Token metrics read predictions/labels; generation
// metrics read the generated and reference strings.
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct EvalPrediction {
  // One entry per eval batch (lengths differ between batches): preprocess_logits' result and the
  // batch's labels ([batch, seq], -100 where no loss is taken).
  std::vector<torch::Tensor> predictions, labels;
  // Generation metrics: one response and its reference per sample.
  std::vector<std::string> generated, references;
};

class Metric {
 public:
  virtual ~Metric() = default;
  // True when the evaluation must generate responses (then predictions/labels stay empty).
  virtual bool needs_generation() const { return false; }
  // Reduces logits [batch, seq, vocab] to what compute needs; the default keeps the argmax ids.
  // The trainer calls it on slices of positions ([1, up to 512, vocab] with the matching labels)
  // and joins the results along dims 1 then 0, so it must work position by position.
  virtual torch::Tensor preprocess_logits(const torch::Tensor& logits, const torch::Tensor& /*labels*/) {
    return logits.argmax(-1);
  }
  // Metric name -> value; the trainer logs them as eval_<name>.
  virtual std::map<std::string, double> compute(const EvalPrediction& prediction) = 0;
};

using MetricFactory = std::function<std::shared_ptr<Metric>(const PluginContext& context)>;
Registry<MetricFactory>& metric_registry();

}  // namespace lathe

LATHE_API_END
