// `lathe sample`: rejection sampling through the library's recipe (lathe/recipe/sample.h).
#include <fmt/format.h>

#include "cli/arguments.h"
#include "lathe/recipe/sample.h"

namespace lathe::cli {

int run_sample(const Args& args) {
  CLI::App app("Generate --num_return_sequences responses per --dataset query, score them with --orm_model and/or "
               "--prm_model, and write the best --n_best_to_keep (with rejected_response and id) as jsonl rows to "
               "--output_dir/sample.jsonl (sample_BEGIN_END.jsonl with --data_range). A rerun skips the queries "
               "already finished (listed in sample.jsonl.done beside it, also those that kept nothing).",
               "sample");
  Arguments arguments;
  arguments.output_dir = "sample_output";
  arguments.temperature = 1.0;  // N greedy samples would all be the same response
  add_options(app, arguments, {ArgumentGroup::Model, ArgumentGroup::Generation, ArgumentGroup::Data,
                               ArgumentGroup::Reward, ArgumentGroup::Sampling, ArgumentGroup::Output});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  const auto summary = run_rejection_sampling(arguments);
  fmt::print(stderr, "lathe sample: {} rows written to {} ({} queries done before were skipped)\n", summary.rows_written,
             summary.output.string(), summary.queries_skipped);
  return 0;
}

}  // namespace lathe::cli
