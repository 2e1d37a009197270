#include "lathe/recipe/sample.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <set>

#include "lathe/common/format.h"
#include "lathe/data/dataset.h"
#include "lathe/data/training_data.h"
#include "lathe/infer/engine.h"
#include "lathe/common/files.h"
#include "lathe/infer/inference.h"
#include "lathe/plugin/orm.h"
#include "lathe/plugin/prm.h"
#include "lathe/plugin/chat_client.h"

namespace lathe {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct Query {
  json row;                    // as read from the dataset
  Conversation prompt;         // the row up to its last user message
  std::optional<std::string> answer;  // the row's final assistant message, if any
  std::string id;
};

struct Response {
  std::string text;
  std::optional<int64_t> tokens;
};

// 64-bit FNV-1a of the row's JSON text: stable across runs and builds, which resuming relies on.
std::string row_id(const json& row) {
  uint64_t hash = 14695981039346656037ULL;
  for (unsigned char c : row.dump()) hash = (hash ^ c) * 1099511628211ULL;
  return fmt::format("{:016x}", hash);
}

std::vector<Query> read_queries(const Arguments& arguments) {
  if (arguments.dataset.empty()) fail("--dataset is required (the queries to sample responses for)");
  int64_t begin = 0, end = std::numeric_limits<int64_t>::max();
  if (!arguments.data_range.empty()) {
    begin = arguments.data_range[0];
    end = arguments.data_range[1];
    if (begin < 0 || end < begin) fail("--data_range {} {}: expected 0 <= BEGIN <= END", begin, end);
  }
  std::vector<Query> queries;
  int64_t index = 0;
  for (const auto& [row, where] : read_dataset_rows(arguments.dataset, static_cast<uint64_t>(arguments.seed))) {
    const int64_t position = index++;
    if (position < begin || position >= end) continue;
    auto [prompt, answer] = to_prompt_row(row, where);
    queries.push_back({row, std::move(prompt), std::move(answer), row_id(row)});
  }
  return queries;
}

// Generates with this process's model on the generation engine (--max_batch_size sequences at a
// time). Seeds are seed + query_index * n + sample, so a resumed run draws what the first run would have.
class LocalSampler {
 public:
  explicit LocalSampler(const Arguments& arguments)
      : arguments_(arguments),
        loaded_(load_inference_model(arguments)),
        engine_(loaded_.model, loaded_.engine_options(arguments)) {}

  std::vector<Response> sample(const Query& query, std::size_t query_index, int64_t n) {
    const auto prompt = loaded_.encode_prompt(query.prompt);
    auto params = loaded_.sampling(arguments_);
    std::vector<GenerationRequest> requests;
    for (int64_t i = 0; i < n; ++i) {
      params.seed = static_cast<uint64_t>(arguments_.seed) + query_index * static_cast<uint64_t>(n) + i;
      requests.push_back({prompt, params});
    }
    std::vector<Response> responses;
    for (auto& future : engine_.submit_all(std::move(requests))) {
      const auto generation = future.get();
      responses.push_back({generation.text, static_cast<int64_t>(generation.ids.size())});
    }
    return responses;
  }

 private:
  const Arguments& arguments_;
  InferenceModel loaded_;
  GenerationEngine engine_;  // after loaded_: its decoder reads loaded_'s tokenizer
};

std::string client_base(const Arguments& arguments) {
  if (arguments.engine_kwargs_base_url.empty())
    fail("--sampler_engine client needs --engine_kwargs_base_url (e.g. http://127.0.0.1:8000/v1)");
  return arguments.engine_kwargs_base_url;
}

std::string client_api_key(const Arguments& arguments) {
  if (!arguments.engine_kwargs_api_key.empty()) return arguments.engine_kwargs_api_key;
  const char* from_environment = std::getenv("LATHE_API_KEY");
  return from_environment ? from_environment : "";
}

// Asks an OpenAI-compatible server (a running `lathe deploy`, vLLM, ...) for n chat completions,
// at most kChoicesPerRequest per request (OpenAI's own limit, which `lathe deploy` keeps too).
// Request r asks for the samples from i0 on with seed base + i0: a server that seeds choice j with
// seed + j (as `lathe deploy` does) then draws what one request for all n would have.
class ClientSampler {
 public:
  static constexpr int64_t kChoicesPerRequest = 64;

  explicit ClientSampler(const Arguments& arguments)
      : arguments_(arguments),
        client_(client_base(arguments), client_api_key(arguments), "sample client", "--engine_kwargs_base_url",
                /*read_timeout_seconds=*/3600) {}

  std::vector<Response> sample(const Query& query, std::size_t query_index, int64_t n) {
    std::vector<Response> responses;
    const int64_t first_seed = arguments_.seed + static_cast<int64_t>(query_index) * n;
    for (int64_t begin = 0; begin < n; begin += kChoicesPerRequest) {
      json body = {{"model", arguments_.engine_kwargs_model},
                   {"messages", to_messages_json(query.prompt)},
                   {"n", std::min(kChoicesPerRequest, n - begin)},
                   {"temperature", arguments_.temperature},
                   {"top_p", arguments_.top_p},
                   {"max_tokens", arguments_.max_new_tokens},
                   {"seed", first_seed + begin}};
      if (arguments_.top_k > 0) body["top_k"] = arguments_.top_k;
      for (auto& content : client_.complete(body)) responses.push_back({std::move(content), std::nullopt});
    }
    return responses;
  }

 private:
  const Arguments& arguments_;
  ChatCompletionsClient client_;
};

// The scores of one query's responses; empty vectors for a reward model that is not used.
struct Scores {
  std::vector<double> orm, prm;
};

class Scorer {
 public:
  explicit Scorer(const Arguments& arguments) {
    if (!arguments.orm_model.empty()) orm_ = orm_registry().create(arguments.orm_model, arguments);
    if (!arguments.prm_model.empty()) prm_ = prm_registry().create(arguments.prm_model, arguments);
  }
  bool active() const { return orm_ || prm_; }

  Scores score(const Query& query, const std::vector<Response>& responses) const {
    Scores scores;
    if (orm_) {
      // ORMs find the reference in the row's "solution" / "answer" / "response" column
      // (reference_answer in orm.h). A messages-format row keeps it as its final assistant
      // message instead, so that message is offered as "solution" when the row has none of them.
      json row = query.row;
      const bool has_reference = row.contains("solution") || row.contains("answer") || row.contains("response");
      if (!has_reference && query.answer) row["solution"] = *query.answer;
      std::vector<RewardInput> inputs;
      for (const auto& response : responses) inputs.push_back({response.text, row, response.tokens});
      scores.orm = orm_->score(inputs);
    }
    if (prm_) {
      std::vector<PrmInput> inputs;
      for (const auto& response : responses) {
        auto conversation = query.prompt;
        conversation.messages.push_back({"assistant", response.text, {}, {}});
        inputs.push_back({std::move(conversation), query.answer});
      }
      // A PRM gives one reward, or one per step; a response's score is the mean of its list.
      for (const auto& steps : prm_->score(inputs)) {
        scores.prm.push_back(steps.empty() ? 0.0 : std::accumulate(steps.begin(), steps.end(), 0.0) / steps.size());
      }
    }
    for (const auto* list : {&scores.orm, &scores.prm}) {
      if (!list->empty() && list->size() != responses.size()) {
        fail("--{}: {} scores for {} responses", list == &scores.orm ? "orm_model" : "prm_model", list->size(), responses.size());
      }
    }
    return scores;
  }

 private:
  std::shared_ptr<OutcomeRewardModel> orm_;
  std::shared_ptr<ProcessRewardModel> prm_;
};

// Min-max normalised to [0, 1]; when all are equal, none is worse than another: all 1.
std::vector<double> min_max_normalised(const std::vector<double>& values) {
  if (values.empty()) return values;
  const auto [low, high] = std::minmax_element(values.begin(), values.end());
  std::vector<double> normalised;
  for (double value : values) normalised.push_back(*high > *low ? (value - *low) / (*high - *low) : 1.0);
  return normalised;
}

// The original row with its answer replaced by `response`: the last assistant message of a
// "messages" row (appended when it has none), else the "response" column.
json with_response(const Query& query, const std::string& response) {
  json row = query.row;
  if (row.contains("messages") && row["messages"].is_array()) {
    auto& messages = row["messages"];
    if (!messages.empty() && messages.back().value("role", "") == "assistant") {
      messages.back()["content"] = response;
    } else {
      messages.push_back({{"role", "assistant"}, {"content", response}});
    }
  } else if (row.contains("conversations") && row["conversations"].is_array()) {
    // ShareGPT rows are read from "conversations" first, so the answer must be replaced there.
    auto& turns = row["conversations"];
    static const std::set<std::string> answer_roles{"gpt", "assistant", "bot", "model"};
    const bool ends_with_answer = !turns.empty() && answer_roles.count(turns.back().value("from", "")) > 0;
    if (ends_with_answer) {
      turns.back()["value"] = response;
    } else {
      turns.push_back({{"from", "gpt"}, {"value", response}});
    }
  } else {
    row["response"] = response;
  }
  row["id"] = query.id;
  return row;
}

// The rejected response for a row whose response is `chosen`: the lowest-scored response not
// written as a row, else (every response was written) the lowest-scored one whose text differs
// from `chosen`; none when all responses read the same (a pair of equal texts teaches nothing).
std::optional<std::string> worst_other(const std::vector<Response>& responses, const std::vector<double>& combined,
                                       const std::set<std::size_t>& written, const std::string& chosen) {
  std::optional<std::size_t> unwritten, different;
  for (std::size_t i = 0; i < responses.size(); ++i) {
    if (responses[i].text == chosen) continue;
    if (!written.count(i) && (!unwritten || combined[i] < combined[*unwritten])) unwritten = i;
    if (!different || combined[i] < combined[*different]) different = i;
  }
  const auto pick = unwritten ? unwritten : different;
  if (!pick) return std::nullopt;
  return responses[*pick].text;
}

// The rows to write for one query. With reward models: responses kept when the ORM judges them
// good (score > 0; ORMs such as math give 1 right / 0 wrong, so normalising them would keep a
// query where every answer is wrong) and their min-max normalised PRM score is above
// --prm_threshold; ranked by prm + 10 * orm; each row also carries a worse response as
// rejected_response (see worst_other). Without reward models every response is an SFT row.
std::vector<json> rows_for(const Query& query, const std::vector<Response>& responses, const Scores& scores,
                           const Arguments& arguments, bool scored) {
  std::vector<json> rows;
  if (!scored) {
    for (const auto& response : responses) rows.push_back(with_response(query, response.text));
    return rows;
  }
  const auto prm = min_max_normalised(scores.prm);
  std::vector<double> combined(responses.size(), 0.0);
  std::vector<std::size_t> kept;
  for (std::size_t i = 0; i < responses.size(); ++i) {
    const double orm = scores.orm.empty() ? 0.0 : scores.orm[i];
    combined[i] = (prm.empty() ? 0.0 : prm[i]) + 10.0 * orm;
    const bool orm_ok = scores.orm.empty() || orm > 0;
    const bool prm_ok = prm.empty() || prm[i] > arguments.prm_threshold;
    if (orm_ok && prm_ok) kept.push_back(i);
  }
  if (kept.empty()) return rows;
  std::stable_sort(kept.begin(), kept.end(), [&](std::size_t a, std::size_t b) { return combined[a] > combined[b]; });
  const auto keep = std::min<std::size_t>(kept.size(), static_cast<std::size_t>(std::max<int64_t>(0, arguments.n_best_to_keep)));
  const std::set<std::size_t> written(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(keep));
  for (std::size_t k = 0; k < keep; ++k) {
    const auto& chosen = responses[kept[k]].text;
    auto row = with_response(query, chosen);
    if (const auto rejected = worst_other(responses, combined, written, chosen)) row["rejected_response"] = *rejected;
    rows.push_back(std::move(row));
  }
  return rows;
}

// A file opened for appending whole records: each append is written and flushed to disk before
// it returns, so an interruption can only cut the last line.
class AppendFile {
 public:
  explicit AppendFile(fs::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("{}: cannot open for writing: {}", path_.string(), std::strerror(errno));
  }
  ~AppendFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  void append(const std::string& text) {
    for (std::size_t written = 0; written < text.size();) {
      const auto n = ::write(fd_, text.data() + written, text.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("{}: write failed: {}", path_.string(), std::strerror(errno));
      written += static_cast<std::size_t>(n);
    }
    if (::fsync(fd_) != 0) fail("{}: cannot flush to disk: {}", path_.string(), std::strerror(errno));
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

// Drops a last line that an interruption cut short (no newline yet); returns the whole lines.
std::vector<std::string> whole_lines(const fs::path& path) {
  if (!fs::exists(path)) return {};
  const auto text = read_file(path);
  const auto complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (complete < text.size()) {
    fmt::print(stderr, "lathe sample: {}: dropping {} bytes of an interrupted last write\n", path.string(),
               text.size() - complete);
    fs::resize_file(path, complete);
  }
  std::vector<std::string> lines;
  for (std::size_t start = 0; start < complete;) {
    const auto newline = text.find('\n', start);
    lines.push_back(text.substr(start, newline - start));
    start = newline + 1;
  }
  return lines;
}

// The output jsonl and, beside it, OUTPUT.done with the id of every finished query (also those
// that kept no response, which the rows alone cannot show). On opening, a cut last line is
// dropped from both, and the finished ids are collected so that those queries are skipped.
class OutputFile {
 public:
  explicit OutputFile(const fs::path& path) : path_(path), done_path_(path.string() + ".done") {
    fs::create_directories(path.parent_path());
    recover();
    rows_ = std::make_unique<AppendFile>(path_);
    finished_ = std::make_unique<AppendFile>(done_path_);
  }

  bool done(const std::string& id) const { return done_.count(id) > 0; }

  // One write call for all rows of a query, then its id in OUTPUT.done.
  void append(const std::string& id, const std::vector<json>& rows) {
    std::string text;
    // A response may end inside a multi-byte character (max_new_tokens cut it): such bytes are
    // written as U+FFFD rather than failing the run.
    for (const auto& row : rows) text += row.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    rows_->append(text);
    finished_->append(id + "\n");
    done_.insert(id);
  }

 private:
  void recover() {
    const auto lines = whole_lines(path_);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const auto row = json::parse(lines[i], nullptr, false);
      // Only an unfinished last line (no newline yet) can come from an interrupted write; a bad
      // whole line is damage this command did not cause, and the rows after it must not be lost.
      if (row.is_discarded()) fail("{}: line {}: not a JSON row; fix or remove it before resuming", path_.string(), i + 1);
      if (row.is_object() && row.contains("id") && row["id"].is_string()) done_.insert(row["id"].get<std::string>());
    }
    for (const auto& id : whole_lines(done_path_)) done_.insert(id);
  }

  fs::path path_, done_path_;
  std::unique_ptr<AppendFile> rows_, finished_;
  std::set<std::string> done_;
};

fs::path output_file(const Arguments& arguments) {
  const std::string name = arguments.data_range.empty()
                               ? "sample.jsonl"
                               : fmt::format("sample_{}_{}.jsonl", arguments.data_range[0], arguments.data_range[1]);
  return fs::path(arguments.output_dir) / name;
}

template <typename Sampler>
SampleSummary sample_all(const Arguments& arguments, const std::vector<Query>& queries, Sampler& sampler) {
  const Scorer scorer(arguments);
  SampleSummary summary{output_file(arguments)};
  OutputFile output(summary.output);
  for (std::size_t i = 0; i < queries.size(); ++i) {
    if (output.done(queries[i].id)) {
      ++summary.queries_skipped;
      continue;
    }
    const auto responses = sampler.sample(queries[i], i, arguments.num_return_sequences);
    const auto scores = scorer.score(queries[i], responses);
    const auto rows = rows_for(queries[i], responses, scores, arguments, scorer.active());
    output.append(queries[i].id, rows);
    summary.rows_written += rows.size();
    fmt::print(stderr, "lathe sample: query {}/{}: {} of {} responses kept\n", i + 1, queries.size(), rows.size(), responses.size());
  }
  return summary;
}

}  // namespace

SampleSummary run_rejection_sampling(const Arguments& arguments) {
  if (arguments.sampler_type != "sample") {
    fail("--sampler_type {}: Lathe samples with 'sample' (generate, score, keep the best); SWIFT's mcts and "
         "distill samplers are not built", arguments.sampler_type);
  }
  if (arguments.num_return_sequences < 1) fail("--num_return_sequences {}: expected at least 1", arguments.num_return_sequences);
  const auto queries = read_queries(arguments);
  if (arguments.sampler_engine == "client") {
    ClientSampler sampler(arguments);
    return sample_all(arguments, queries, sampler);
  }
  LocalSampler sampler(arguments);
  return sample_all(arguments, queries, sampler);
}

}  // namespace lathe
