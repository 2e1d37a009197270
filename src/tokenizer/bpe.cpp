#include "tokenizer/bpe.h"

#include <algorithm>
#include <mutex>
#include <queue>

#include "tokenizer/config.h"
#include "lathe/tokenizer/text.h"

namespace lathe::tokenizer {

// Words repeat a lot in text ("the", " of", "\n"), so their ids are remembered. The cache is split
// into shards, each with its own lock, so that encode_batch's threads rarely wait for each other.
struct BpeModel::Cache {
  static constexpr std::size_t kShards = 64;
  static constexpr std::size_t kWordsPerShard = 2048;
  static constexpr std::size_t kMaxWordBytes = 256;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
  };
  std::array<Shard, kShards> shards;

  Shard& shard_for(std::string_view word) { return shards[StringHash{}(word) % kShards]; }

  bool lookup(std::string_view word, std::vector<int32_t>& out) {
    Shard& shard = shard_for(word);
    std::lock_guard lock(shard.mutex);
    const auto it = shard.words.find(word);
    if (it == shard.words.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void store(std::string_view word, const int32_t* ids, std::size_t count) {
    Shard& shard = shard_for(word);
    std::lock_guard lock(shard.mutex);
    if (shard.words.size() >= kWordsPerShard) return;  // full: keep what is there, like Hugging Face
    shard.words.emplace(std::string(word), std::vector<int32_t>(ids, ids + count));
  }
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

// Reads the "a b" or ["a", "b"] merge at `index`.
static std::pair<std::string, std::string> read_merge(const Section& merges, std::size_t index) {
  const nlohmann::json& merge = merges.json()[index];
  if (merge.is_string()) {
    const auto& text = merge.get_ref<const std::string&>();
    const std::size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
      merges.at(index).fail_here(fmt::format("expected two tokens separated by one space, got \"{}\"", text));
    }
    return {text.substr(0, space), text.substr(space + 1)};
  }
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    return {merge[0].get<std::string>(), merge[1].get<std::string>()};
  }
  merges.at(index).fail_here("expected \"a b\" or [\"a\", \"b\"]");
}

BpeModel BpeModel::from_json(const Section& model) {
  BpeModel bpe;
  const Section vocab = model.at("vocab");
  if (!vocab.json().is_object()) vocab.fail_here("expected an object mapping tokens to ids");
  bpe.vocab_.reserve(vocab.json().size());
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab.json().items()) {
    if (!id.is_number_integer() || id.get<long long>() < 0 || id.get<long long>() > INT32_MAX) {
      vocab.fail_here(fmt::format("token \"{}\": expected a non-negative integer id", token));
    }
    bpe.vocab_.emplace(token, id.get<int32_t>());
    max_id = std::max(max_id, id.get<int32_t>());
  }
  bpe.id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  for (const auto& [token, id] : bpe.vocab_) bpe.id_to_token_[static_cast<std::size_t>(id)] = token;

  bpe.continuing_subword_prefix_ = model.string_or("continuing_subword_prefix", "");
  bpe.end_of_word_suffix_ = model.string_or("end_of_word_suffix", "");
  bpe.fuse_unk_ = model.boolean_or("fuse_unk", false);
  bpe.byte_fallback_ = model.boolean_or("byte_fallback", false);
  bpe.ignore_merges_ = model.boolean_or("ignore_merges", false);
  if (!model.at("dropout").is_null() && model.at("dropout").json() != 0.0) {
    model.at("dropout").fail_here("BPE dropout is not supported (expected null)");
  }
  const std::string unk = model.string_or("unk_token", "");
  if (!unk.empty()) {
    const auto id = bpe.token_to_id(unk);
    if (!id) model.at("unk_token").fail_here(fmt::format("\"{}\" is not in the vocabulary", unk));
    bpe.unk_id_ = *id;
  }
  for (int byte = 0; byte < 256; ++byte) {
    bpe.byte_token_ids_[byte] = bpe.token_to_id(fmt::format("<0x{:02X}>", byte)).value_or(-1);
  }

  const Section merges = model.at("merges");
  const std::size_t count = merges.is_null() ? 0 : merges.size();
  bpe.merges_.reserve(count);
  const std::size_t prefix_length = bpe.continuing_subword_prefix_.size();
  for (std::size_t rank = 0; rank < count; ++rank) {
    const auto [left, right] = read_merge(merges, rank);
    const auto left_id = bpe.token_to_id(left), right_id = bpe.token_to_id(right);
    const std::string merged = left + right.substr(std::min(prefix_length, right.size()));
    const auto merged_id = bpe.token_to_id(merged);
    if (!left_id || !right_id || !merged_id) {
      merges.at(rank).fail_here(fmt::format("merge \"{} {}\" uses a token missing from the vocabulary", left, right));
    }
    bpe.merges_.emplace(pair_key(*left_id, *right_id), Merge{static_cast<int32_t>(rank), *merged_id});
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id > max_id() || id_to_token_[static_cast<std::size_t>(id)].empty()) return nullptr;
  return &id_to_token_[static_cast<std::size_t>(id)];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() < Cache::kMaxWordBytes;
  if (cacheable && cache_->lookup(word, out)) return;
  const std::size_t first = out.size();
  merge_word(word, out);
  if (cacheable) cache_->store(word, out.data() + first, out.size() - first);
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
};

struct Candidate {
  int32_t rank;
  int32_t position;
  int32_t merged_id;
  // std::priority_queue keeps the largest on top: lowest rank first, then leftmost.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : position > other.position;
  }
};

// A priority queue whose storage survives between words, so merging allocates nothing.
struct CandidateQueue : std::priority_queue<Candidate> {
  void clear() { c.clear(); }
};

}  // namespace

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local CandidateQueue queue;
  thread_local std::string affixed;
  symbols.clear();
  queue.clear();

  const auto add = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[static_cast<std::size_t>(index - 1)].next = index;
  };
  std::optional<int32_t> pending_unknown;  // fused run of unknown characters not yet added
  for (std::size_t pos = 0; pos < word.size();) {
    const std::size_t length = std::min(utf8_length(static_cast<unsigned char>(word[pos])), word.size() - pos);
    std::string_view character = word.substr(pos, length);
    const bool is_last = pos + length == word.size();
    if ((!continuing_subword_prefix_.empty() && pos > 0) || (!end_of_word_suffix_.empty() && is_last)) {
      affixed.assign(pos > 0 ? continuing_subword_prefix_ : std::string());
      affixed.append(character);
      if (is_last) affixed.append(end_of_word_suffix_);
      character = affixed;
    }
    pos += length;
    if (const auto id = token_to_id(character)) {
      if (pending_unknown) add(*std::exchange(pending_unknown, std::nullopt));
      add(*id);
      continue;
    }
    if (byte_fallback_ && std::all_of(character.begin(), character.end(), [&](char byte) {
          return byte_token_ids_[static_cast<unsigned char>(byte)] >= 0;
        })) {
      for (const char byte : character) add(byte_token_ids_[static_cast<unsigned char>(byte)]);
      continue;
    }
    if (!unk_id_) continue;  // Hugging Face drops unknown characters when there is no unk_token
    if (pending_unknown && !fuse_unk_) add(*pending_unknown);
    pending_unknown = *unk_id_;
  }
  if (pending_unknown) add(*pending_unknown);

  const auto find_merge = [&](int32_t left, int32_t right) -> const Merge* {
    const auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  const auto propose = [&](int32_t position) {
    const Symbol& symbol = symbols[static_cast<std::size_t>(position)];
    if (symbol.next < 0) return;
    if (const Merge* merge = find_merge(symbol.id, symbols[static_cast<std::size_t>(symbol.next)].id)) {
      queue.push({merge->rank, position, merge->merged_id});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) propose(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<std::size_t>(top.position)];
    if (left.id < 0 || left.next < 0) continue;  // merged away, or nothing to its right any more
    Symbol& right = symbols[static_cast<std::size_t>(left.next)];
    const Merge* still = find_merge(left.id, right.id);
    if (still == nullptr || still->merged_id != top.merged_id) continue;  // the pair has changed
    left.id = top.merged_id;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = top.position;
    if (left.prev >= 0) propose(left.prev);
    propose(top.position);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next) {
    out.push_back(symbols[static_cast<std::size_t>(i)].id);
  }
}

}  // namespace lathe::tokenizer
