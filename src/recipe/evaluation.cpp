#include "lathe/recipe/evaluation.h"

#include <torch/torch.h>

#include <future>

#include "lathe/common/format.h"
#include "lathe/data/dataset.h"
#include "lathe/infer/engine.h"
#include "lathe/evaluate/metric_evaluation.h"
#include "lathe/common/files.h"
#include "lathe/infer/inference.h"
#include "lathe/data/training_data.h"

namespace lathe {
namespace {

using nlohmann::json;

struct EvalRow {
  Conversation conversation;  // ends with the reference answer
  std::string reference;
};

std::vector<EvalRow> read_eval_rows(const Arguments& arguments) {
  if (arguments.val_dataset.empty()) fail("--val_dataset is required (rows with a query and its reference answer)");
  std::vector<EvalRow> rows;
  for (const auto& file : arguments.val_dataset) {
    for_each_row(file, [&](const json& row, const RowLocation& where) {
      auto conversation = to_conversation(row, where);
      const auto& messages = conversation.messages;
      if (messages.size() < 2 || messages.back().role != "assistant" || messages[messages.size() - 2].role != "user") {
        fail("{}: the row must end with a user message and its reference answer", where.describe());
      }
      auto reference = messages.back().content;
      rows.push_back({std::move(conversation), std::move(reference)});
    });
  }
  if (rows.empty()) fail("--val_dataset: no rows to evaluate");
  return rows;
}

EvalPrediction generated_responses(InferenceModel& loaded, const Arguments& arguments, const std::vector<EvalRow>& rows) {
  GenerationEngine engine(loaded.model, loaded.engine_options(arguments));
  const auto params = loaded.sampling(arguments);
  std::vector<GenerationRequest> requests;
  for (const auto& row : rows) {
    auto prompt = row.conversation;
    prompt.messages.pop_back();
    requests.push_back({loaded.encode_prompt(prompt), params});
  }
  auto pending = engine.submit_all(std::move(requests));
  EvalPrediction prediction;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    prediction.generated.push_back(pending[i].get().text);
    prediction.references.push_back(rows[i].reference);
  }
  return prediction;
}

// The row's ids and labels: the answer tokens (and the template's suffix after them) are labelled,
// the rest is -100; cut at the model's context.
std::pair<torch::Tensor, torch::Tensor> encode_labelled(const InferenceModel& loaded, const EvalRow& row) {
  auto encoded = loaded.chat_template.encode(loaded.tokenizer, row.conversation, /*add_generation_prompt=*/false, loaded.system);
  const auto limit = loaded.model->config().max_position_embeddings;
  auto length = static_cast<int64_t>(encoded.input_ids.size());
  if (limit > 0) length = std::min(length, limit);
  std::vector<int64_t> ids, labels;
  for (int64_t i = 0; i < length; ++i) {
    const auto type = encoded.types[static_cast<std::size_t>(i)];
    ids.push_back(encoded.input_ids[static_cast<std::size_t>(i)]);
    labels.push_back(type == ContextType::Other ? kIgnoreIndex : encoded.input_ids[static_cast<std::size_t>(i)]);
  }
  return {torch::tensor(ids, torch::kLong).view({1, length}), torch::tensor(labels, torch::kLong).view({1, length})};
}

// The token metrics' view of every row, one row at a time.
void add_token_predictions(InferenceModel& loaded, const std::vector<EvalRow>& rows, MetricEvaluation& metrics) {
  torch::NoGradGuard no_grad;
  auto& model = loaded.model;
  const auto device = model->parameters().front().device();
  for (const auto& row : rows) {
    auto [ids, labels] = encode_labelled(loaded, row);
    const auto length = ids.size(1);
    ForwardInputs inputs{ids.to(device), torch::arange(length, torch::kLong).view({1, length}).to(device), {}, nullptr};
    metrics.add_batch(*model, model->forward(inputs), labels);
  }
}

}  // namespace

EvaluationReport run_evaluation(const Arguments& arguments) {
  // Made before loading the model: an unknown metric name fails fast.
  MetricEvaluation metrics(arguments, arguments.metric.empty() ? std::vector<std::string>{"nlg"} : arguments.metric);
  const auto rows = read_eval_rows(arguments);
  auto loaded = load_inference_model(arguments);
  if (metrics.any_generation()) {
    auto generated = generated_responses(loaded, arguments, rows);
    metrics.set_generated(std::move(generated.generated), std::move(generated.references));
  }
  if (metrics.any_token_metric()) add_token_predictions(loaded, rows, metrics);

  json results = json::object();
  for (const auto& [name, values] : metrics.compute()) results[name] = values;
  json report = {{"model", arguments.model},
                 {"adapters", arguments.adapters},
                 {"val_dataset", arguments.val_dataset},
                 {"rows", rows.size()},
                 {"metrics", results}};
  if (metrics.any_generation()) {
    report["generation"] = {{"max_new_tokens", arguments.max_new_tokens},
                            {"temperature", arguments.temperature},
                            {"top_p", arguments.top_p},
                            {"top_k", arguments.top_k},
                            {"seed", arguments.seed}};
  }
  const std::filesystem::path path = arguments.result_path.empty()
                                         ? std::filesystem::path(arguments.output_dir) / "eval_report.json"
                                         : std::filesystem::path(arguments.result_path);
  write_file_atomic(path, report.dump(2) + "\n");
  return {std::move(report), path};
}

}  // namespace lathe
