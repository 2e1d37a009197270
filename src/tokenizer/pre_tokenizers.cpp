#include "tokenizer/pre_tokenizers.h"

#include <utf8proc.h>

#include <algorithm>
#include <memory>
#include <string_view>

#include "tokenizer/config.h"
#include "lathe/tokenizer/pattern.h"
#include "lathe/tokenizer/text.h"

namespace lathe::tokenizer {
namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const Section& section) {
  const std::string name = section.string("behavior");
  if (name == "Removed") return Behavior::Removed;
  if (name == "Isolated") return Behavior::Isolated;
  if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::MergedWithNext;
  if (name == "Contiguous") return Behavior::Contiguous;
  section.at("behavior").fail_here(fmt::format(
      "unknown behavior '{}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)",
      name));
}

struct Segment {
  uint32_t begin, end;
  bool is_match;
};

// Calls on_match(begin, end) for each delimiter found in a piece.
using MatchFinder = std::function<void(std::string_view, const std::function<void(std::size_t, std::size_t)>&)>;

// Cuts every piece into matches and the text between them, then groups them as `behavior` says
// (Hugging Face's NormalizedString::split). Empty pieces are dropped.
void split_pieces(PreTokens& tokens, const MatchFinder& find, Behavior behavior, bool invert) {
  thread_local std::vector<Segment> segments;
  thread_local std::vector<Segment> grouped;
  std::vector<Piece> result;
  result.reserve(tokens.pieces.size() * 2);
  const std::string_view text = tokens.text;
  for (const Piece& piece : tokens.pieces) {
    segments.clear();
    uint32_t previous = piece.begin;
    find(text.substr(piece.begin, piece.end - piece.begin), [&](std::size_t begin, std::size_t end) {
      const auto b = static_cast<uint32_t>(piece.begin + begin), e = static_cast<uint32_t>(piece.begin + end);
      if (previous != b) segments.push_back({previous, b, invert});
      segments.push_back({b, e, !invert});
      previous = e;
    });
    if (previous != piece.end) segments.push_back({previous, piece.end, invert});

    grouped.clear();
    bool previous_match = false;
    const auto extend_or_push = [&](const Segment& segment, bool extend) {
      if (extend && !grouped.empty()) {
        if (behavior == Behavior::MergedWithNext) grouped.back().begin = segment.begin;
        else grouped.back().end = segment.end;
      } else {
        grouped.push_back({segment.begin, segment.end, false});
      }
    };
    switch (behavior) {
      case Behavior::Removed:
        for (const Segment& segment : segments) if (!segment.is_match) grouped.push_back(segment);
        break;
      case Behavior::Isolated: grouped = segments; break;
      case Behavior::Contiguous:
        for (const Segment& segment : segments) {
          extend_or_push(segment, segment.is_match == previous_match);
          previous_match = segment.is_match;
        }
        break;
      case Behavior::MergedWithPrevious:
        for (const Segment& segment : segments) {
          extend_or_push(segment, segment.is_match && !previous_match);
          previous_match = segment.is_match;
        }
        break;
      case Behavior::MergedWithNext: {
        for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
          extend_or_push(*it, it->is_match && !previous_match);
          previous_match = it->is_match;
        }
        std::reverse(grouped.begin(), grouped.end());
        break;
      }
    }
    for (const Segment& segment : grouped) {
      if (segment.end > segment.begin) {
        result.push_back({segment.begin, segment.end, piece.at_origin && segment.begin == piece.begin});
      }
    }
  }
  tokens.pieces = std::move(result);
}

// Rebuilds the text with every piece rewritten by rewrite(piece_text, piece, out).
template <class Rewrite>
void rewrite_pieces(PreTokens& tokens, Rewrite rewrite) {
  std::string text;
  text.reserve(tokens.text.size() + tokens.text.size() / 2 + 8);
  for (Piece& piece : tokens.pieces) {
    const auto begin = static_cast<uint32_t>(text.size());
    rewrite(std::string_view(tokens.text).substr(piece.begin, piece.end - piece.begin), piece, text);
    piece.begin = begin;
    piece.end = static_cast<uint32_t>(text.size());
  }
  tokens.text = std::move(text);
}

MatchFinder find_pattern(std::shared_ptr<const Pattern> pattern) {
  return [pattern](std::string_view text, const std::function<void(std::size_t, std::size_t)>& on_match) {
    pattern->for_each_match(text, on_match);
  };
}

// Each character for which is_match(code point) holds is a match of its own.
template <class Predicate>
MatchFinder find_characters(Predicate is_match) {
  return [is_match](std::string_view text, const std::function<void(std::size_t, std::size_t)>& on_match) {
    for (std::size_t pos = 0; pos < text.size();) {
      const std::size_t length = utf8_length(static_cast<unsigned char>(text[pos]));
      if (is_match(decode_utf8(text, pos))) on_match(pos, pos + length);
      pos += length;
    }
  };
}

bool is_numeric(char32_t c) {
  if (c >= '0' && c <= '9') return true;
  if (c < 0x80) return false;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL || category == UTF8PROC_CATEGORY_NO;
}

// GPT-2's pre-tokenization regex, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

PreTokenizer byte_level(const Section& section) {
  const bool add_prefix_space = section.boolean_or("add_prefix_space", true);
  const bool use_regex = section.boolean_or("use_regex", true);
  static const auto gpt2 = std::make_shared<const Pattern>(Pattern::regex(kGpt2Pattern, "GPT-2 pattern"));
  const MatchFinder find = find_pattern(gpt2);
  return [=](PreTokens& tokens) {
    if (add_prefix_space) {
      rewrite_pieces(tokens, [](std::string_view piece, Piece&, std::string& out) {
        if (piece.empty() || piece.front() != ' ') out += ' ';
        out.append(piece);
      });
    }
    if (use_regex) split_pieces(tokens, find, Behavior::Isolated, false);
    const ByteLevelAlphabet& alphabet = byte_level_alphabet();
    rewrite_pieces(tokens, [&](std::string_view piece, Piece&, std::string& out) {
      for (const char byte : piece) out += alphabet.byte_to_char[static_cast<unsigned char>(byte)];
    });
  };
}

PreTokenizer metaspace(const Section& section) {
  const std::string replacement = section.string_or("replacement", "\xE2\x96\x81");
  std::string scheme = section.string_or("prepend_scheme", "");
  if (scheme.empty()) scheme = section.boolean_or("add_prefix_space", true) ? "always" : "never";
  if (scheme != "always" && scheme != "first" && scheme != "never") {
    section.at("prepend_scheme").fail_here("expected always, first or never");
  }
  const bool split = section.boolean_or("split", true);
  const auto separator = std::make_shared<const Pattern>(Pattern::literal(replacement));
  return [=, find = find_pattern(separator)](PreTokens& tokens) {
    rewrite_pieces(tokens, [&](std::string_view piece, const Piece& where, std::string& out) {
      const bool prepend = scheme == "always" || (scheme == "first" && where.at_origin);
      if (prepend && piece.substr(0, 1) != " " && piece.substr(0, replacement.size()) != replacement) {
        out += replacement;
      }
      for (const char c : piece) {
        if (c == ' ') out += replacement;
        else out += c;
      }
    });
    if (split) split_pieces(tokens, find, Behavior::MergedWithNext, false);
  };
}

PreTokenizer sequence(const Section& section) {
  const Section items = section.at("pretokenizers");
  std::vector<PreTokenizer> steps;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (PreTokenizer step = make_pre_tokenizer(items.at(i))) steps.push_back(std::move(step));
  }
  return [steps = std::move(steps)](PreTokens& tokens) {
    for (const auto& step : steps) step(tokens);
  };
}

PreTokenizer splitting(MatchFinder find, Behavior behavior, bool invert) {
  return [=, find = std::move(find)](PreTokens& tokens) { split_pieces(tokens, find, behavior, invert); };
}

}  // namespace

PreTokenizer make_pre_tokenizer(const Section& section) {
  if (section.is_null()) return {};
  const std::string type = section.type();
  if (type == "Sequence") return sequence(section);
  if (type == "ByteLevel") return byte_level(section);
  if (type == "Metaspace") return metaspace(section);
  if (type == "Split") {
    auto pattern = std::make_shared<const Pattern>(Pattern::from_json(section.at("pattern")));
    return splitting(find_pattern(pattern), parse_behavior(section), section.boolean_or("invert", false));
  }
  if (type == "Digits") {
    return splitting(find_characters(is_numeric),
                     section.boolean_or("individual_digits", false) ? Behavior::Isolated : Behavior::Contiguous,
                     false);
  }
  if (type == "WhitespaceSplit") return splitting(find_characters(is_white_space), Behavior::Removed, false);
  if (type == "Whitespace") {
    auto words = std::make_shared<const Pattern>(Pattern::regex(R"(\w+|[^\w\s]+)", "Whitespace pattern"));
    return splitting(find_pattern(words), Behavior::Removed, true);
  }
  section.at("type").fail_here(fmt::format(
      "unsupported pre_tokenizer '{}' (supported: Split, ByteLevel, Metaspace, Digits, Whitespace, "
      "WhitespaceSplit, Sequence)", type));
}

}  // namespace lathe::tokenizer
