#pragma once
// A Hugging Face tokenizer.json, written for this project: normalizers, pre-tokenizers, BPE
// (byte-level or SentencePiece-style with byte fallback), post-processors and decoders. It gives the
// same ids as Hugging Face's `tokenizers` for the files the project tests against.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class Tokenizer {
 public:
  // Loads tokenizer.json (a file, or a model folder holding one). Errors name the file and field.
  static Tokenizer from_file(const std::filesystem::path& file_or_dir);
  static Tokenizer from_json(std::string_view json, std::string_view source_name = "tokenizer.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special_tokens: apply the post-processor (e.g. Llama's <|begin_of_text|>).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Encodes on all cores; results are in input order.
  std::vector<std::vector<int32_t>> encode_batch(std::span<const std::string> texts,
                                                 bool add_special_tokens = true) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Vocabulary size including added tokens (the largest id + 1).
  int64_t vocab_size() const;

  // Streaming decode: feed ids one at a time, get back the text that is now complete. It never
  // returns part of a UTF-8 character; finish() flushes what is left.
  class StreamDecoder {
   public:
    explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
    std::string push(int32_t id);
    std::string finish();

   private:
    const Tokenizer* tokenizer_;
    bool skip_special_tokens_;
    std::vector<int32_t> ids_;       // a window of the most recent ids
    std::size_t prefix_ids_ = 0;     // how many of ids_ are context before the text not yet returned
    std::string prefix_;             // decode of ids_ when it was last cut: already returned
    std::size_t emitted_bytes_ = 0;  // bytes returned so far
  };

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lathe

LATHE_API_END
