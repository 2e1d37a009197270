#pragma once
// Batch inference, `lathe infer --val_dataset`: every row of --val_dataset answered on the
// generation engine (--max_batch_size sequences at a time) and written to --result_path as jsonl
// rows {"messages", "response", "response_ids", "finish_reason", "labels"?, "logprobs"?}, whole or
// not at all. A row's final assistant message, when it has one, is its label, not part of the
// prompt.
#include <cstddef>

#include "lathe/common/arguments.h"
#include "lathe/infer/inference.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The number of rows answered. Throws lathe::Error naming the row or argument at fault.
std::size_t run_batch_inference(const Arguments& arguments, InferenceModel& loaded);

}  // namespace lathe

LATHE_API_END
