#pragma once
// The rejection-sampling recipe behind `lathe sample`: --num_return_sequences responses per
// --dataset query (from this process's model on the generation engine, or from an
// OpenAI-compatible server with --sampler_engine client), scored by --orm_model and/or
// --prm_model; responses the outcome model judges good (score > 0) and whose min-max normalised
// process score is above --prm_threshold are ranked by prm + 10 * orm, and the best
// --n_best_to_keep are written as the dataset's own rows with the response replaced, an "id" and
// a worse "rejected_response". Without reward models every response is written.
//
// Output: --output_dir/sample.jsonl (sample_BEGIN_END.jsonl with --data_range), each query's rows
// flushed to disk at once, and sample.jsonl.done beside it with the id of every finished query. A
// rerun drops a cut last line and skips the queries already finished. Seeds are seed + query
// index * n + sample, so a resumed run draws what the first run would have.
#include <cstddef>
#include <filesystem>

#include "lathe/common/arguments.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct SampleSummary {
  std::filesystem::path output;    // the jsonl written to
  std::size_t rows_written = 0;    // in this run
  std::size_t queries_skipped = 0; // finished by an earlier run
};

// Throws lathe::Error naming the row, file or argument at fault.
SampleSummary run_rejection_sampling(const Arguments& arguments);

}  // namespace lathe

LATHE_API_END
