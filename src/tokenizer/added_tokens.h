#pragma once
// Added tokens (special or not) are found in the text before anything else runs, so that
// "<|im_start|>" is one id however the pre-tokenizer would cut it.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::tokenizer {

struct AddedToken {
  int32_t id;
  std::string content;
  bool single_word = false;  // only matches between non-word characters
  bool lstrip = false;       // also swallows the whitespace before it
  bool rstrip = false;       // also swallows the whitespace after it
  bool normalized = true;    // matched in normalized text rather than raw text
  bool special = false;
};

struct TextSplit {
  std::size_t begin, end;
  int32_t token_id;  // -1 for plain text between added tokens
};

// Finds added tokens leftmost-longest, like Hugging Face's Aho-Corasick matcher.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is what to search for `tokens[i]` (its content, normalized where it says so).
  AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns);

  bool empty() const { return tokens_.empty(); }
  // Cuts `text` into plain pieces and added tokens; the pieces cover the text, none is empty.
  void split(std::string_view text, std::vector<TextSplit>& out) const;

 private:
  // Longest token starting at `pos`: {token index, length}, or index -1.
  std::pair<int32_t, std::size_t> longest_match(std::string_view text, std::size_t pos) const;

  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;
  };
  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  std::vector<int32_t> root_children_ = std::vector<int32_t>(256, -1);
};

}  // namespace lathe::tokenizer
