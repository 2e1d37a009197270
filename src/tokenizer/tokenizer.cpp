// The pipeline: added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor, and back
// through the decoders. Each stage lives in its own file; this one loads and connects them.
#include "lathe/tokenizer/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/config.h"
#include "tokenizer/decoders.h"
#include "tokenizer/normalizers.h"
#include "tokenizer/pre_tokenizers.h"
#include "lathe/tokenizer/text.h"

namespace lathe {
namespace fs = std::filesystem;
using namespace tokenizer;

namespace {

// What the post-processor adds around the encoded text when add_special_tokens is true.
struct PostProcessor {
  std::vector<int32_t> before, after;
};

int32_t special_token_id(const Section& section, std::string_view field) {
  const Section pair = section.at(field);  // ["<s>", 1]
  if (!pair.json().is_array() || pair.json().size() != 2 || !pair.json()[1].is_number_integer()) {
    pair.fail_here("expected [token, id]");
  }
  return pair.json()[1].get<int32_t>();
}

// TemplateProcessing's "single" template: special tokens around the one sequence "A".
void add_template(const Section& section, PostProcessor& processor) {
  const Section single = section.at("single");
  const Section special_tokens = section.at("special_tokens");
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const Section item = single.at(i);
    if (item.has("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!item.has("SpecialToken")) item.fail_here("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    const std::string name = item.at("SpecialToken").string("id");
    const Section ids = special_tokens.at(name).at("ids");
    auto& target = seen_sequence ? processor.after : processor.before;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      if (!ids.json()[k].is_number_integer()) ids.at(k).fail_here("expected an integer id");
      target.push_back(ids.json()[k].get<int32_t>());
    }
  }
}

void add_post_processor(const Section& section, PostProcessor& processor) {
  if (section.is_null()) return;
  const std::string type = section.type();
  if (type == "ByteLevel") return;  // it only adjusts offsets
  if (type == "TemplateProcessing") return add_template(section, processor);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    processor.before.push_back(special_token_id(section, "cls"));
    processor.after.push_back(special_token_id(section, "sep"));
    return;
  }
  if (type == "Sequence") {
    const Section items = section.at("processors");
    for (std::size_t i = 0; i < items.size(); ++i) add_post_processor(items.at(i), processor);
    return;
  }
  section.at("type").fail_here(fmt::format(
      "unsupported post_processor '{}' (supported: ByteLevel, TemplateProcessing, BertProcessing, "
      "RobertaProcessing, Sequence)", type));
}

std::vector<AddedToken> read_added_tokens(const Section& section) {
  std::vector<AddedToken> tokens;
  if (section.is_null()) return tokens;
  for (std::size_t i = 0; i < section.size(); ++i) {
    const Section entry = section.at(i);
    const long long id = entry.integer_or("id", -1);
    if (id < 0 || id > INT32_MAX) entry.at("id").fail_here("expected a non-negative integer id");
    AddedToken token{static_cast<int32_t>(id), entry.string("content")};
    token.single_word = entry.boolean_or("single_word", false);
    token.lstrip = entry.boolean_or("lstrip", false);
    token.rstrip = entry.boolean_or("rstrip", false);
    token.normalized = entry.boolean_or("normalized", true);
    token.special = entry.boolean_or("special", false);
    tokens.push_back(std::move(token));
  }
  return tokens;
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  std::optional<BpeModel> model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  PostProcessor post_processor;
  Decoder decoder;

  std::vector<AddedToken> added_tokens;
  std::unordered_map<int32_t, std::size_t> added_by_id;  // index into added_tokens
  StringMap added_by_content;                            // content -> id
  std::unordered_set<std::string> special_contents;
  AddedTokenMatcher raw_matcher;         // tokens with normalized: false, found in the input
  AddedTokenMatcher normalized_matcher;  // tokens with normalized: true, found after normalizing
  int64_t vocab_size = 0;

  void build_matchers() {
    std::vector<AddedToken> raw, normalized;
    std::vector<std::string> raw_patterns, normalized_patterns;
    for (const AddedToken& token : added_tokens) {
      if (token.normalized && normalizer) {
        std::string pattern = token.content;
        normalizer(pattern);
        normalized.push_back(token);
        normalized_patterns.push_back(std::move(pattern));
      } else {
        raw.push_back(token);
        raw_patterns.push_back(token.content);
      }
    }
    raw_matcher = AddedTokenMatcher(std::move(raw), raw_patterns);
    normalized_matcher = AddedTokenMatcher(std::move(normalized), normalized_patterns);
  }

  void encode_words(std::string_view text, bool at_origin, std::vector<int32_t>& ids) const {
    thread_local PreTokens tokens;
    tokens.text.assign(text);
    tokens.pieces.assign(1, Piece{0, static_cast<uint32_t>(text.size()), at_origin});
    if (pre_tokenizer) pre_tokenizer(tokens);
    const std::string_view words = tokens.text;
    for (const Piece& piece : tokens.pieces) model->encode_word(words.substr(piece.begin, piece.end - piece.begin), ids);
  }

  // Normalizes a piece of input between raw added tokens and encodes it.
  void encode_plain(std::string_view text, bool at_origin, std::vector<int32_t>& ids) const {
    std::string normalized(text);
    if (normalizer) normalizer(normalized);
    if (normalized_matcher.empty()) return encode_words(normalized, at_origin, ids);
    std::vector<TextSplit> splits;
    normalized_matcher.split(normalized, splits);
    for (const TextSplit& split : splits) {
      if (split.token_id >= 0) ids.push_back(split.token_id);
      else encode_words(std::string_view(normalized).substr(split.begin, split.end - split.begin),
                        at_origin && split.begin == 0, ids);
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const {
    std::string repaired;
    if (!is_valid_utf8(text)) {  // Hugging Face only ever sees valid strings
      repaired = utf8_lossy(text);
      text = repaired;
    }
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = post_processor.before;
    std::vector<TextSplit> splits;
    raw_matcher.split(text, splits);
    for (const TextSplit& split : splits) {
      if (split.token_id >= 0) ids.push_back(split.token_id);
      else encode_plain(text.substr(split.begin, split.end - split.begin), split.begin == 0, ids);
    }
    if (add_special_tokens) ids.insert(ids.end(), post_processor.after.begin(), post_processor.after.end());
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int32_t id : ids) {
      const std::string* token = nullptr;
      if (const auto added = added_by_id.find(id); added != added_by_id.end()) {
        token = &added_tokens[added->second].content;
      } else {
        token = model->id_to_token(id);
      }
      if (token == nullptr) continue;
      if (skip_special_tokens && special_contents.count(*token) != 0) continue;
      tokens.push_back(*token);
    }
    std::string text;
    if (decoder) {
      decoder(tokens);
      for (const std::string& token : tokens) text += token;
    } else {  // Hugging Face joins undecoded tokens with spaces
      for (std::size_t i = 0; i < tokens.size(); ++i) text += (i > 0 ? " " : "") + tokens[i];
    }
    return text;
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const fs::path& file_or_dir) {
  std::error_code ec;
  fs::path file = file_or_dir;
  if (fs::is_directory(file_or_dir, ec)) {
    file = file_or_dir / "tokenizer.json";
    if (!fs::exists(file, ec)) fail("{}: no tokenizer.json in this folder", file_or_dir.string());
  } else if (!fs::exists(file_or_dir, ec)) {
    fail("{}: no such file or folder (expected tokenizer.json or a model folder holding one)", file_or_dir.string());
  }
  return from_json(read_file(file), file.string());
}

Tokenizer Tokenizer::from_json(std::string_view json, std::string_view source_name) {
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error& error) {
    fail("{}: invalid JSON: {}", source_name, error.what());
  }
  const Section root(document, std::string(source_name), "");
  if (!document.is_object()) root.fail_here("expected a JSON object (a Hugging Face tokenizer.json)");

  auto impl = std::make_unique<Impl>();
  impl->source = source_name;
  const Section model = root.at("model");
  if (model.is_null()) root.fail_here("missing \"model\"");
  const std::string model_type = model.string_or("type", model.has("merges") ? "BPE" : "");
  if (model_type != "BPE") {
    model.at("type").fail_here(fmt::format("unsupported model type '{}' (supported: BPE)", model_type));
  }
  impl->model.emplace(BpeModel::from_json(model));
  impl->normalizer = make_normalizer(root.at("normalizer"));
  impl->pre_tokenizer = make_pre_tokenizer(root.at("pre_tokenizer"));
  add_post_processor(root.at("post_processor"), impl->post_processor);
  impl->decoder = make_decoder(root.at("decoder"));

  impl->added_tokens = read_added_tokens(root.at("added_tokens"));
  for (AddedToken& token : impl->added_tokens) {
    // Hugging Face gives an added token that is already in the vocabulary the vocabulary's id,
    // whatever id the file lists.
    if (const auto id = impl->model->token_to_id(token.content)) token.id = *id;
  }
  int64_t max_id = impl->model->max_id();
  for (std::size_t i = 0; i < impl->added_tokens.size(); ++i) {
    const AddedToken& token = impl->added_tokens[i];
    impl->added_by_id.emplace(token.id, i);
    impl->added_by_content.emplace(token.content, token.id);
    if (token.special) impl->special_contents.insert(token.content);
    max_id = std::max<int64_t>(max_id, token.id);
  }
  impl->vocab_size = max_id + 1;
  impl->build_matchers();
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(std::span<const std::string> texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> results(texts.size());
  const std::size_t workers =
      std::min<std::size_t>(std::max(1u, std::thread::hardware_concurrency()), texts.size());
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const auto work = [&] {
    try {
      for (std::size_t i = next++; i < texts.size(); i = next++) results[i] = encode(texts[i], add_special_tokens);
    } catch (...) {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < workers; ++i) threads.emplace_back(work);
  work();
  for (auto& thread : threads) thread.join();
  if (failure) std::rethrow_exception(failure);
  return results;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
    return impl_->added_tokens[it->second].content;
  }
  if (const std::string* token = impl_->model->id_to_token(id)) return *token;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  const auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added_tokens[it->second].special;
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

// Decodes only a window of recent ids: the ids since the last emitted text plus the ones just
// before them, whose decoding is the `prefix_` already returned. The context keeps decoders that
// look at neighbours (Metaspace's leading space, byte fallback runs) exact, and text ending in
// U+FFFD (an incomplete character so far) is held back until the next id completes it.
Tokenizer::StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string Tokenizer::StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tokenizer_->decode(ids_, skip_special_tokens_);
  const bool incomplete = text.size() >= kReplacementCharacter.size() && text.ends_with(kReplacementCharacter);
  if (text.size() <= prefix_.size() || incomplete || text.compare(0, prefix_.size(), prefix_) != 0) return "";
  std::string fresh = text.substr(prefix_.size());
  const std::size_t new_prefix_ids = ids_.size() - prefix_ids_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_ids_));
  prefix_ = tokenizer_->decode(ids_, skip_special_tokens_);
  prefix_ids_ = new_prefix_ids;
  emitted_bytes_ += fresh.size();
  return fresh;
}

std::string Tokenizer::StreamDecoder::finish() {
  const std::string text = tokenizer_->decode(ids_, skip_special_tokens_);
  std::string rest = text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0
                         ? text.substr(prefix_.size())
                         : std::string();
  ids_.clear();
  prefix_.clear();
  prefix_ids_ = 0;
  emitted_bytes_ += rest.size();
  return rest;
}

}  // namespace lathe
