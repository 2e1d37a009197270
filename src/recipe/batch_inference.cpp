#include "lathe/recipe/batch_inference.h"

#include <fmt/format.h>

#include <future>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/data/dataset.h"
#include "lathe/infer/engine.h"

namespace lathe {
namespace {

using nlohmann::json;

json logprobs_json(const std::vector<TokenLogprob>& logprobs) {
  json entries = json::array();
  for (const auto& entry : logprobs) {
    json top = json::array();
    for (const auto& [token, logprob] : entry.top) top.push_back({{"id", token}, {"logprob", logprob}});
    entries.push_back({{"id", entry.token}, {"logprob", entry.logprob}, {"top_logprobs", top}});
  }
  return entries;
}

}  // namespace

std::size_t run_batch_inference(const Arguments& arguments, InferenceModel& loaded) {
  if (arguments.result_path.empty()) fail("--result_path is required with --val_dataset");
  struct Pending {
    Conversation conversation;
    std::optional<std::string> label;
  };
  std::vector<Pending> rows;
  for (const auto& file : arguments.val_dataset) {
    for_each_row(file, [&](const json& row, const RowLocation& where) {
      auto [prompt, answer] = to_prompt_row(row, where);
      rows.push_back({std::move(prompt), std::move(answer)});
    });
  }
  const auto params = loaded.sampling(arguments);
  GenerationEngine engine(loaded.model, loaded.engine_options(arguments));
  std::vector<GenerationRequest> requests;
  for (const auto& row : rows) requests.push_back({loaded.encode_prompt(row.conversation), params});
  auto pending = engine.submit_all(std::move(requests));
  std::string output;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto generation = pending[i].get();
    auto& ids = generation.ids;
    if (!ids.empty() && generation.finish_reason == "stop" && generation.stop_string.empty()) ids.pop_back();
    json result = {{"messages", to_messages_json(rows[i].conversation)},
                   {"response", generation.text},
                   {"response_ids", ids},
                   {"finish_reason", generation.finish_reason}};
    if (rows[i].label) result["labels"] = *rows[i].label;
    if (params.logprobs) result["logprobs"] = logprobs_json(generation.logprobs);
    // A response cut by max_new_tokens may end inside a UTF-8 character.
    output += result.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    const auto done = i + 1;
    if (done % static_cast<std::size_t>(engine.max_batch_size()) == 0 || done == rows.size()) {
      fmt::print(stderr, "lathe infer: {}/{} rows\n", done, rows.size());
    }
  }
  write_file_atomic(arguments.result_path, output);
  return rows.size();
}

}  // namespace lathe
