// `lathe eval`: the evaluation recipe (lathe/recipe/evaluation.h), its report printed as a table.
#include <fmt/format.h>

#include "cli/arguments.h"
#include "lathe/recipe/evaluation.h"

namespace lathe::cli {
namespace {

using nlohmann::json;

void print_table(const json& results) {
  std::size_t width = 6;
  for (const auto& [metric, values] : results.items()) {
    for (const auto& [key, value] : values.items()) width = std::max(width, metric.size() + 1 + key.size());
  }
  fmt::print("{:<{}}  {}\n", "metric", width, "value");
  for (const auto& [metric, values] : results.items()) {
    for (const auto& [key, value] : values.items()) {
      fmt::print("{:<{}}  {:.4f}\n", metric + "/" + key, width, value.get<double>());
    }
  }
}

}  // namespace

int run_eval(const Args& args) {
  CLI::App app("Evaluate a model on --val_dataset (rows ending with a reference answer) with --metric plugins; "
               "writes a JSON report to --result_path or <output_dir>/eval_report.json and prints a table. "
               "Default metric: nlg (generated responses scored with ROUGE/BLEU, as SWIFT's eval); acc "
               "scores next-token predictions on the reference answers instead.",
               "eval");
  Arguments arguments;
  add_options(app, arguments, {ArgumentGroup::Model, ArgumentGroup::Generation, ArgumentGroup::Data, ArgumentGroup::Evaluation,
                               ArgumentGroup::Output});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  const auto evaluation = run_evaluation(arguments);
  print_table(evaluation.report["metrics"]);
  fmt::print(stderr, "lathe eval: {} rows; report written to {}\n", evaluation.report["rows"].get<std::size_t>(),
             evaluation.path.string());
  return 0;
}

}  // namespace lathe::cli
