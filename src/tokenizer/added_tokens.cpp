#include "tokenizer/added_tokens.h"

#include <utf8proc.h>

#include "lathe/tokenizer/text.h"

namespace lathe::tokenizer {

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns)
    : tokens_(std::move(tokens)) {
  nodes_.emplace_back();  // the root
  for (std::size_t index = 0; index < tokens_.size(); ++index) {
    const std::string& pattern = patterns[index];
    if (pattern.empty()) continue;
    int32_t node = 0;
    for (const char c : pattern) {
      const auto byte = static_cast<unsigned char>(c);
      int32_t child = -1;
      if (node == 0) {
        child = root_children_[byte];
      } else {
        for (const auto& [label, next] : nodes_[static_cast<std::size_t>(node)].children) {
          if (label == byte) child = next;
        }
      }
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        if (node == 0) root_children_[byte] = child;
        else nodes_[static_cast<std::size_t>(node)].children.emplace_back(byte, child);
      }
      node = child;
    }
    // Two tokens with the same text: the first one listed wins.
    if (nodes_[static_cast<std::size_t>(node)].token < 0) nodes_[static_cast<std::size_t>(node)].token = static_cast<int32_t>(index);
  }
}

std::pair<int32_t, std::size_t> AddedTokenMatcher::longest_match(std::string_view text, std::size_t pos) const {
  int32_t node = root_children_[static_cast<unsigned char>(text[pos])];
  std::pair<int32_t, std::size_t> best{-1, 0};
  for (std::size_t length = 1; node >= 0; ++length) {
    const Node& current = nodes_[static_cast<std::size_t>(node)];
    if (current.token >= 0) best = {current.token, length};
    if (pos + length >= text.size()) break;
    const auto byte = static_cast<unsigned char>(text[pos + length]);
    node = -1;
    for (const auto& [label, next] : current.children) {
      if (label == byte) node = next;
    }
  }
  return best;
}

namespace {

// Hugging Face tests single_word boundaries with Rust's Unicode \w: letters and other alphabetic
// characters, marks, decimal digits, connector punctuation and the zero-width (non-)joiners.
bool is_word_character(char32_t c) {
  if (c < 0x80) return c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
  if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9)) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

std::size_t previous_character(std::string_view text, std::size_t end) {
  std::size_t pos = end - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSplit>& out) const {
  out.clear();
  std::size_t emitted = 0;  // text before this is already in `out`
  for (std::size_t pos = 0; pos < text.size();) {
    if (root_children_[static_cast<unsigned char>(text[pos])] < 0) {
      ++pos;
      continue;
    }
    const auto [index, length] = longest_match(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[static_cast<std::size_t>(index)];
    std::size_t begin = pos, end = pos + length;
    pos = end;
    if (token.single_word) {
      const bool word_before = begin > 0 && is_word_character(decode_utf8(text, previous_character(text, begin)));
      const bool word_after = end < text.size() && is_word_character(decode_utf8(text, end));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      while (begin > emitted) {
        const std::size_t previous = previous_character(text, begin);
        if (!is_white_space(decode_utf8(text, previous))) break;
        begin = previous;
      }
    }
    if (token.rstrip) {
      while (end < text.size() && is_white_space(decode_utf8(text, end))) {
        end += utf8_length(static_cast<unsigned char>(text[end]));
      }
      pos = end;
    }
    if (begin > emitted) out.push_back({emitted, begin, -1});
    out.push_back({begin, end, token.id});
    emitted = end;
  }
  if (emitted < text.size()) out.push_back({emitted, text.size(), -1});
}

}  // namespace lathe::tokenizer
