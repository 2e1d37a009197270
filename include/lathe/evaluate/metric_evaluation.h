#pragma once
// One evaluation with --metric plugins, shared by the trainer's evaluation and `lathe eval`: each
// token metric's preprocess_logits runs on the logits of at most kEvaluationLogitChunk positions
// of one row at a time (so [tokens, vocab] logits never exist whole), its results are gathered
// per batch, and compute runs once at the end; generation metrics get the generated and reference
// texts. An exception from a metric becomes a lathe::Error naming the metric and its origin.
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/plugin/metric.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// [1, chunk, vocab] float32 logits: 512 positions of a 151,936-token vocabulary are 297 MiB.
constexpr int64_t kEvaluationLogitChunk = 512;

class MetricEvaluation {
 public:
  // The metrics named (from the registry, with their origin); an unknown name fails at once.
  MetricEvaluation(const Arguments& arguments, const std::vector<std::string>& names);

  bool any_generation() const;   // some metric compares generated responses
  bool any_token_metric() const; // some metric reads next-token predictions

  // One batch: hidden states [batch, seq, hidden] of `model` and labels [batch, seq] (-100 where
  // no loss is taken). Token metrics keep their preprocess_logits of the logits (float32). `when`
  // completes error messages (for example "at step 40").
  void add_batch(CausalLMImpl& model, const torch::Tensor& hidden, const torch::Tensor& labels,
                 const std::string& when = "");
  // The generated responses and their references, for the generation metrics.
  void set_generated(std::vector<std::string> generated, std::vector<std::string> references);

  // Each metric's name and results, in the order the metrics were named; what was gathered is
  // then cleared for the next evaluation.
  std::vector<std::pair<std::string, std::map<std::string, double>>> compute(const std::string& when = "");

 private:
  struct Entry;
  std::vector<std::shared_ptr<Entry>> entries_;
};

}  // namespace lathe

LATHE_API_END
