#pragma once
// From dataset rows to training examples: render with the template, weigh with the loss scale,
// tokenize each weighted piece, build labels (-100 where the weight is 0) and, only when some weight
// is neither 0 nor 1, a per-token weight vector (docs/plugins.md).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "lathe/data/dataset.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

inline constexpr int32_t kIgnoreIndex = -100;

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;      // kIgnoreIndex where untrained
  std::vector<float> loss_scale;    // empty when every weight is 0 or 1
  // --task_type embedding: the row's sequences (anchor, positive, negatives) end to end in
  // input_ids, their lengths, and one label per sequence after the anchor (the positive's label,
  // then 0 for each negative: embedding_losses.h's layouts). labels stays empty.
  std::vector<int64_t> segment_lengths;
  std::vector<float> embedding_labels;
  // lathe rlhf: a preference pair holds the chosen then the rejected sequence end to end in
  // input_ids and labels, with their lengths in segment_lengths; kto's rows say whether they are
  // desirable.
  std::optional<bool> desirable;
  double margin = 0;  // --rlhf_type rm: how far the chosen reward must exceed the rejected one
  // --rlhf_type grpo: input_ids is the prompt (ending with the generation prompt), and these the
  // prompt's conversation and its dataset row, whose columns (solution, ...) reward functions read.
  std::shared_ptr<const Conversation> prompt;
  std::shared_ptr<const nlohmann::json> row;
  int64_t size() const { return static_cast<int64_t>(input_ids.size()); }
};

struct EncodeOptions {
  int64_t max_length = 0;                      // 0: no limit
  std::string truncation_strategy = "delete";  // delete | left | right
  std::optional<std::string> system;
  bool pretraining = false;  // {"text": ...} rows: the raw text plus eos, every token trained
  bool embedding = false;    // --task_type embedding: rows are EmbeddingRow (dataset.h)
  bool preference = false;   // lathe rlhf: rows are PreferenceRow (dataset.h), a pair of sequences
  bool labelled = false;     // lathe rlhf --rlhf_type kto: rows are LabelledRow (dataset.h)
};

// Weighs rendered contexts: LossScalePipeline::apply, passed in so this library needs no plugins.
using ContextWeigher = std::function<std::vector<WeightedText>(const std::vector<Context>&, const Conversation&)>;

// Edits a row's conversation before it is encoded (self-cognition names).
using ConversationEdit = std::function<void(Conversation& conversation, const nlohmann::json& row)>;

class ExampleEncoder {
 public:
  ExampleEncoder(const Template& chat_template, const Tokenizer& tokenizer, ContextWeigher weigher,
                 EncodeOptions options);
  // nullopt when the example is longer than max_length and the strategy is `delete`.
  // `truncated` is set when it was cut.
  std::optional<Example> encode(const Conversation& conversation, bool* truncated = nullptr) const;
  // A dataset row: a conversation (edited by `prepare` when given), or with options.embedding an
  // EmbeddingRow whose sequences are each encoded as above; nullopt when one of them is deleted as
  // too long. Throws lathe::Error naming the row's location.
  std::optional<Example> encode_row(const nlohmann::json& row, const RowLocation& where,
                                    const ConversationEdit& prepare, bool* truncated = nullptr) const;

 private:
  std::optional<Example> encode_pair(const PreferenceRow& pair, const ConversationEdit& prepare,
                                     const nlohmann::json& row, bool* truncated) const;
  const Template* template_;
  const Tokenizer* tokenizer_;
  ContextWeigher weigher_;
  EncodeOptions options_;
  std::optional<int32_t> eos_id_;
};

struct DatasetStats {
  int64_t rows = 0;       // examples kept
  int64_t tokens = 0;     // tokens in kept examples
  int64_t trained_tokens = 0;
  int64_t truncated = 0;
  int64_t deleted = 0;    // over max_length with truncation_strategy delete
  int64_t bad_rows = 0;   // skipped with --strict false
  std::string summary() const;
};

// One --dataset entry: "path" or "path#N" (N rows sampled with the seed; repeated when N exceeds
// the rows in the file).
struct DatasetSpec {
  std::string path;
  std::optional<int64_t> sample;
  static DatasetSpec parse(const std::string& text);
};

// A dataset row and where it came from.
struct DatasetRow {
  nlohmann::json row;
  RowLocation where;
};
// The rows of the --dataset entries in order: each file whole, or for path#N N rows sampled with
// the seed (whole copies first, then a shuffled remainder, as SWIFT samples path#N).
std::vector<DatasetRow> read_dataset_rows(const std::vector<std::string>& specs, uint64_t seed);

// Reads, normalises and encodes every row of the given datasets on `threads` threads (0: all
// cores). Bad rows throw (naming file:line) unless strict is false, when they are counted.
// `prepare` (optional) edits each conversation before encoding (e.g. self-cognition names).
std::vector<Example> encode_datasets(const std::vector<std::string>& specs, const ExampleEncoder& encoder,
                                     bool strict, int64_t threads, uint64_t seed, DatasetStats& stats,
                                     const ConversationEdit& prepare = {});

// --streaming: rows read and encoded on a background thread while training runs, so a dataset
// larger than memory never has to fit in it. Examples pass through a seeded shuffle buffer; the
// files are read again from the start when they run out (the next epoch). The order is a pure
// function of the seed, so a resumed run skips the examples it already consumed and continues
// exactly.
class ExampleStream {
 public:
  ExampleStream(std::vector<std::string> specs, const ExampleEncoder& encoder, bool strict, ConversationEdit prepare,
                uint64_t seed, std::size_t shuffle_buffer = 1000);
  ~ExampleStream();
  ExampleStream(const ExampleStream&) = delete;
  ExampleStream& operator=(const ExampleStream&) = delete;
  // The next example; rethrows a row error (strict) from the reading thread.
  Example next();
  int64_t bad_rows() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// SWIFT's self-cognition rows: {{NAME}} and {{AUTHOR}} replaced by the Chinese or English name
// (model_name / model_author: Chinese first, then English) according to the row's "tag" (zh / en).
ConversationEdit self_cognition_edit(std::vector<std::string> model_name, std::vector<std::string> model_author);

}  // namespace lathe

LATHE_API_END
