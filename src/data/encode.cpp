#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "lathe/common/format.h"
#include "lathe/data/training_data.h"

namespace lathe {

std::string DatasetStats::summary() const {
  return fmt::format("{} rows, {} tokens ({} trained), {} truncated, {} deleted as too long, {} bad rows skipped",
                     rows, tokens, trained_tokens, truncated, deleted, bad_rows);
}

DatasetSpec DatasetSpec::parse(const std::string& text) {
  auto hash = text.rfind('#');
  if (hash == std::string::npos) return {text, std::nullopt};
  const std::string count = text.substr(hash + 1);
  if (count.empty() || count.find_first_not_of("0123456789") != std::string::npos || std::stoll(count) <= 0) {
    fail("--dataset '{}': the part after '#' must be a positive row count", text);
  }
  return {text.substr(0, hash), std::stoll(count)};
}

ExampleEncoder::ExampleEncoder(const Template& chat_template, const Tokenizer& tokenizer, ContextWeigher weigher,
                               EncodeOptions options)
    : template_(&chat_template), tokenizer_(&tokenizer), weigher_(std::move(weigher)), options_(std::move(options)) {
  for (const auto& word : chat_template.spec().stop_words) {
    if ((eos_id_ = tokenizer.token_to_id(word))) break;
  }
}

static bool is_text_row(const Conversation& conversation) {
  return conversation.messages.size() == 1 && conversation.messages[0].role == "assistant";
}

std::optional<Example> ExampleEncoder::encode(const Conversation& conversation, bool* truncated) const {
  Example example;
  bool fractional = false;
  std::vector<float> weights;
  auto append = [&](const std::vector<int32_t>& ids, double weight) {
    example.input_ids.insert(example.input_ids.end(), ids.begin(), ids.end());
    for (auto id : ids) example.labels.push_back(weight > 0 ? id : kIgnoreIndex);
    weights.insert(weights.end(), ids.size(), static_cast<float>(weight));
    fractional = fractional || (weight != 0.0 && weight != 1.0);
  };
  if (options_.pretraining && is_text_row(conversation)) {
    auto ids = tokenizer_->encode(conversation.messages[0].content, /*add_special_tokens=*/true);
    if (eos_id_) ids.push_back(*eos_id_);
    append(ids, 1.0);
  } else {
    const auto contexts = template_->render(conversation, /*add_generation_prompt=*/false, options_.system);
    // The first piece carries the post-processor's specials when the template asks (auto BOS).
    bool first = true;
    for (const auto& piece : weigher_(contexts, conversation)) {
      append(tokenizer_->encode(piece.text, first && template_->spec().add_special_tokens), piece.weight);
      first = false;
    }
  }
  if (fractional) example.loss_scale = std::move(weights);

  const auto limit = options_.max_length;
  if (limit > 0 && example.size() > limit) {
    if (options_.truncation_strategy == "delete") return std::nullopt;
    if (truncated) *truncated = true;
    auto cut = [&](auto& values) {
      if (values.empty()) return;
      if (options_.truncation_strategy == "left") {
        values.erase(values.begin(), values.end() - limit);
      } else {
        values.resize(static_cast<std::size_t>(limit));
      }
    };
    cut(example.input_ids);
    cut(example.labels);
    cut(example.loss_scale);
  }
  return example;
}

// lathe rlhf weighs tokens as a mask only (ms-swift): a token takes part or not, whatever its weight.
static void as_mask(Example& example) { example.loss_scale.clear(); }

std::optional<Example> ExampleEncoder::encode_pair(const PreferenceRow& pair, const ConversationEdit& prepare,
                                                   const nlohmann::json& row, bool* truncated) const {
  Example example;
  for (auto sequence : {pair.chosen, pair.rejected}) {
    if (prepare) prepare(sequence, row);
    auto encoded = encode(sequence, truncated);
    if (!encoded) return std::nullopt;
    example.input_ids.insert(example.input_ids.end(), encoded->input_ids.begin(), encoded->input_ids.end());
    example.labels.insert(example.labels.end(), encoded->labels.begin(), encoded->labels.end());
    example.segment_lengths.push_back(encoded->size());
  }
  example.margin = pair.margin;
  return example;
}

std::optional<Example> ExampleEncoder::encode_row(const nlohmann::json& row, const RowLocation& where,
                                                 const ConversationEdit& prepare, bool* truncated) const {
  if (options_.preference) return encode_pair(to_preference_row(row, where), prepare, row, truncated);
  if (options_.labelled) {
    auto labelled = to_labelled_row(row, where);
    if (prepare) prepare(labelled.conversation, row);
    auto example = encode(labelled.conversation, truncated);
    if (example) {
      as_mask(*example);
      example->desirable = labelled.desirable;
    }
    return example;
  }
  if (!options_.embedding) {
    auto conversation = to_conversation(row, where);
    if (prepare) prepare(conversation, row);
    return encode(conversation, truncated);
  }
  auto embedding_row = to_embedding_row(row, where);
  std::vector<Conversation*> sequences{&embedding_row.anchor, &embedding_row.positive};
  for (auto& negative : embedding_row.negatives) sequences.push_back(&negative);
  Example example;
  for (auto* sequence : sequences) {
    if (prepare) prepare(*sequence, row);
    auto encoded = encode(*sequence, truncated);
    if (!encoded) return std::nullopt;
    if (encoded->size() == 0) fail("{}: a sequence of this embedding row encodes to no tokens", where.describe());
    example.input_ids.insert(example.input_ids.end(), encoded->input_ids.begin(), encoded->input_ids.end());
    example.segment_lengths.push_back(encoded->size());
  }
  example.embedding_labels.push_back(static_cast<float>(embedding_row.label));
  example.embedding_labels.resize(sequences.size() - 1, 0.0f);
  return example;
}

namespace {

std::vector<DatasetRow> read_spec(const DatasetSpec& spec, std::mt19937_64& rng) {
  std::vector<DatasetRow> rows;
  for_each_row(spec.path, [&](const nlohmann::json& row, const RowLocation& where) { rows.push_back({row, where}); });
  if (!spec.sample || rows.empty()) return rows;
  // Whole copies first, then a shuffled remainder, as SWIFT samples path#N.
  std::vector<DatasetRow> sampled;
  const auto wanted = static_cast<std::size_t>(*spec.sample);
  while (sampled.size() + rows.size() <= wanted) sampled.insert(sampled.end(), rows.begin(), rows.end());
  std::vector<std::size_t> order(rows.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (std::size_t i = 0; sampled.size() < wanted; ++i) sampled.push_back(rows[order[i]]);
  return sampled;
}

}  // namespace

std::vector<DatasetRow> read_dataset_rows(const std::vector<std::string>& specs, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<DatasetRow> rows;
  for (const auto& text : specs) {
    auto more = read_spec(DatasetSpec::parse(text), rng);
    rows.insert(rows.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return rows;
}

std::vector<Example> encode_datasets(const std::vector<std::string>& specs, const ExampleEncoder& encoder,
                                     bool strict, int64_t threads, uint64_t seed, DatasetStats& stats,
                                     const ConversationEdit& prepare) {
  const auto rows = read_dataset_rows(specs, seed);
  std::vector<std::optional<Example>> encoded(rows.size());
  std::vector<char> truncated(rows.size(), 0), bad(rows.size(), 0);
  std::atomic<std::size_t> next{0};
  std::mutex error_mutex;
  std::optional<Error> first_error;
  std::exception_ptr unexpected;  // not the row's fault (out of memory, a bug): always fatal
  auto bad_row = [&](std::size_t i, Error error) {
    bad[i] = 1;
    if (!strict) return;
    std::lock_guard lock(error_mutex);
    if (!first_error) first_error = std::move(error);
    next = rows.size();
  };
  // Every exception stays on its worker: a row's own problem is a bad row named by its
  // location; anything else stops the pool and is rethrown by the caller.
  auto work = [&] {
    for (std::size_t i = next++; i < rows.size(); i = next++) {
      try {
        bool cut = false;
        encoded[i] = encoder.encode_row(rows[i].row, rows[i].where, prepare, &cut);
        truncated[i] = cut;
      } catch (const Error& error) {
        bad_row(i, error);
      } catch (const nlohmann::json::exception& error) {
        bad_row(i, Error(fmt::format("{}: {}", rows[i].where.describe(), error.what())));
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!unexpected) unexpected = std::current_exception();
        next = rows.size();
      }
    }
  };
  const auto count = threads > 0 ? threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < count; ++t) pool.emplace_back(work);
  work();
  for (auto& thread : pool) thread.join();
  if (unexpected) std::rethrow_exception(unexpected);
  if (first_error) throw *first_error;

  std::vector<Example> examples;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (bad[i]) {
      ++stats.bad_rows;
      continue;
    }
    if (!encoded[i]) {
      ++stats.deleted;
      continue;
    }
    stats.truncated += truncated[i];
    stats.tokens += encoded[i]->size();
    // Every token of an embedding row reaches the loss (through its sequence's pooled state).
    stats.trained_tokens += !encoded[i]->labels.empty()
                                ? std::count_if(encoded[i]->labels.begin(), encoded[i]->labels.end(),
                                                [](int32_t label) { return label != kIgnoreIndex; })
                                : encoded[i]->size();
    examples.push_back(std::move(*encoded[i]));
  }
  stats.rows = static_cast<int64_t>(examples.size());
  return examples;
}

ConversationEdit self_cognition_edit(std::vector<std::string> model_name, std::vector<std::string> model_author) {
  if (model_name.size() == 1) model_name.push_back(model_name[0]);
  if (model_author.size() == 1) model_author.push_back(model_author[0]);
  if (model_name.size() != 2 || model_author.size() != 2) {
    fail("--model_name and --model_author take one or two values (Chinese, then English)");
  }
  return [=](Conversation& conversation, const nlohmann::json& row) {
    const std::size_t language = row.value("tag", "en") == "zh" ? 0 : 1;
    auto replace_all = [](std::string& text, const std::string& from, const std::string& to) {
      for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
    };
    for (auto& message : conversation.messages) {
      replace_all(message.content, "{{NAME}}", model_name[language]);
      replace_all(message.content, "{{AUTHOR}}", model_author[language]);
    }
  };
}

}  // namespace lathe
