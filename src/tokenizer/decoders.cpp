#include "tokenizer/decoders.h"

#include <memory>
#include <optional>

#include "tokenizer/config.h"
#include "lathe/tokenizer/pattern.h"
#include "lathe/tokenizer/text.h"

namespace lathe::tokenizer {
namespace {

using Tokens = std::vector<std::string>;

// Byte-level tokens map back to bytes through the alphabet; a token holding any other character (an
// added token such as "<|im_start|>" written in plain text) is taken as its own UTF-8 bytes.
void byte_level(Tokens& tokens) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string bytes;
  for (const std::string& token : tokens) {
    const std::size_t start = bytes.size();
    bool in_alphabet = true;
    for (std::size_t pos = 0; pos < token.size() && in_alphabet;) {
      const char32_t c = decode_utf8(token, pos);
      pos += utf8_length(static_cast<unsigned char>(token[pos]));
      in_alphabet = c < alphabet.char_to_byte.size() && alphabet.char_to_byte[c] >= 0;
      if (in_alphabet) bytes += static_cast<char>(alphabet.char_to_byte[c]);
    }
    if (!in_alphabet) {
      bytes.resize(start);
      bytes += token;
    }
  }
  tokens.assign(1, utf8_lossy(bytes));
}

std::optional<unsigned char> byte_token_value(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token.back() != '>') return std::nullopt;
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int high = hex(token[3]), low = hex(token[4]);
  if (high < 0 || low < 0) return std::nullopt;
  return static_cast<unsigned char>(high * 16 + low);
}

// Runs of <0xNN> tokens become their UTF-8 text, or one U+FFFD per byte when that is invalid.
void byte_fallback(Tokens& tokens) {
  Tokens result;
  result.reserve(tokens.size());
  std::string run;
  const auto flush = [&] {
    if (run.empty()) return;
    if (is_valid_utf8(run)) result.push_back(run);
    else result.insert(result.end(), run.size(), std::string(kReplacementCharacter));
    run.clear();
  };
  for (std::string& token : tokens) {
    if (const auto byte = byte_token_value(token)) {
      run += static_cast<char>(*byte);
      continue;
    }
    flush();
    result.push_back(std::move(token));
  }
  flush();
  tokens = std::move(result);
}

void fuse(Tokens& tokens) {
  std::string joined;
  for (const std::string& token : tokens) joined += token;
  tokens.assign(1, std::move(joined));
}

// Removes up to `start` leading and `stop` trailing copies of the character `content` from each token.
Decoder strip(const Section& section) {
  const std::string content = section.string("content");
  const auto start = static_cast<std::size_t>(section.integer_or("start", 0));
  const auto stop = static_cast<std::size_t>(section.integer_or("stop", 0));
  return [=](Tokens& tokens) {
    if (content.empty()) return;
    for (std::string& token : tokens) {
      std::size_t begin = 0, end = token.size();
      for (std::size_t i = 0; i < start && token.compare(begin, content.size(), content) == 0; ++i) {
        begin += content.size();
      }
      for (std::size_t i = 0; i < stop && end >= begin + content.size() &&
                              token.compare(end - content.size(), content.size(), content) == 0;
           ++i) {
        end -= content.size();
      }
      token = token.substr(begin, end - begin);
    }
  };
}

Decoder replace(const Section& section) {
  auto pattern = std::make_shared<Pattern>(Pattern::from_json(section.at("pattern")));
  return [pattern, content = section.string("content")](Tokens& tokens) {
    for (std::string& token : tokens) {
      std::string out;
      std::size_t copied = 0;
      pattern->for_each_match(token, [&](std::size_t begin, std::size_t end) {
        out.append(token, copied, begin - copied);
        out += content;
        copied = end;
      });
      out.append(token, copied);
      token = std::move(out);
    }
  };
}

// The replacement character becomes a space, except in the first token when a space was prepended
// at encoding time.
Decoder metaspace(const Section& section) {
  const std::string replacement = section.string_or("replacement", "\xE2\x96\x81");
  std::string scheme = section.string_or("prepend_scheme", "");
  if (scheme.empty()) scheme = section.boolean_or("add_prefix_space", true) ? "always" : "never";
  const bool strip_first = scheme != "never";
  return [=](Tokens& tokens) {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& token = tokens[i];
      for (std::size_t pos = 0; pos < token.size();) {
        if (!replacement.empty() && token.compare(pos, replacement.size(), replacement) == 0) {
          if (!(i == 0 && strip_first)) out += ' ';
          pos += replacement.size();
        } else {
          out += token[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  };
}

Decoder sequence(const Section& section) {
  const Section items = section.at("decoders");
  std::vector<Decoder> steps;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (Decoder step = make_decoder(items.at(i))) steps.push_back(std::move(step));
  }
  return [steps = std::move(steps)](Tokens& tokens) {
    for (const auto& step : steps) step(tokens);
  };
}

}  // namespace

Decoder make_decoder(const Section& section) {
  if (section.is_null()) return {};
  const std::string type = section.type();
  if (type == "ByteLevel") return byte_level;
  if (type == "ByteFallback") return byte_fallback;
  if (type == "Fuse") return fuse;
  if (type == "Strip") return strip(section);
  if (type == "Replace") return replace(section);
  if (type == "Metaspace") return metaspace(section);
  if (type == "Sequence") return sequence(section);
  section.at("type").fail_here(fmt::format(
      "unsupported decoder '{}' (supported: ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, "
      "Sequence)", type));
}

}  // namespace lathe::tokenizer
