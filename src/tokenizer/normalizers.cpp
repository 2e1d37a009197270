#include "tokenizer/normalizers.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <vector>

#include "tokenizer/config.h"
#include "lathe/tokenizer/pattern.h"
#include "lathe/tokenizer/text.h"

namespace lathe::tokenizer {
namespace {

bool is_ascii(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

Normalizer unicode_form(int options) {
  return [options](std::string& text) {
    if (is_ascii(text)) return;  // every normal form leaves ASCII alone
    utf8proc_uint8_t* result = nullptr;
    const auto length = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                     static_cast<utf8proc_ssize_t>(text.size()), &result,
                                     static_cast<utf8proc_option_t>(UTF8PROC_STABLE | options));
    if (length < 0) return;  // input is validated UTF-8 before normalizing; keep it as it is
    text.assign(reinterpret_cast<char*>(result), static_cast<std::size_t>(length));
    std::free(result);
  };
}

// Rewrites each code point with `map`, which appends the replacement to `out`.
template <class Map>
void map_code_points(std::string& text, Map map) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t length = utf8_length(static_cast<unsigned char>(text[pos]));
    map(decode_utf8(text, pos), std::string_view(text).substr(pos, length), out);
    pos += length;
  }
  text = std::move(out);
}

void lowercase(std::string& text) {
  map_code_points(text, [](char32_t c, std::string_view original, std::string& out) {
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x130) {  // İ lowercases to two characters: i and a combining dot above
      out += "i\xCC\x87";
    } else {
      const auto lower = utf8proc_tolower(static_cast<utf8proc_int32_t>(c));
      if (lower == static_cast<utf8proc_int32_t>(c)) out.append(original);
      else append_utf8(out, static_cast<char32_t>(lower));
    }
  });
}

void strip_accents(std::string& text) {
  map_code_points(text, [](char32_t c, std::string_view original, std::string& out) {
    if (utf8proc_category(static_cast<utf8proc_int32_t>(c)) != UTF8PROC_CATEGORY_MN) out.append(original);
  });
}

Normalizer strip(bool left, bool right) {
  return [left, right](std::string& text) {
    std::size_t begin = 0, end = text.size();
    while (left && begin < end && is_white_space(decode_utf8(text, begin))) {
      begin += utf8_length(static_cast<unsigned char>(text[begin]));
    }
    while (right && end > begin) {
      std::size_t last = end - 1;
      while (last > begin && (static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
      if (!is_white_space(decode_utf8(text, last))) break;
      end = last;
    }
    text = text.substr(begin, end - begin);
  };
}

Normalizer replace(const Section& section) {
  auto pattern = std::make_shared<Pattern>(Pattern::from_json(section.at("pattern")));
  return [pattern, content = section.string("content")](std::string& text) {
    std::string out;
    std::size_t copied = 0;
    pattern->for_each_match(text, [&](std::size_t begin, std::size_t end) {
      out.append(text, copied, begin - copied);
      out += content;
      copied = end;
    });
    if (copied == 0 && out.empty()) return;
    out.append(text, copied);
    text = std::move(out);
  };
}

Normalizer sequence(const Section& section) {
  const Section items = section.at("normalizers");
  std::vector<Normalizer> steps;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (Normalizer step = make_normalizer(items.at(i))) steps.push_back(std::move(step));
  }
  return [steps = std::move(steps)](std::string& text) {
    for (const auto& step : steps) step(text);
  };
}

}  // namespace

Normalizer make_normalizer(const Section& section) {
  if (section.is_null()) return {};
  const std::string type = section.type();
  if (type == "NFC") return unicode_form(UTF8PROC_COMPOSE);
  if (type == "NFKC") return unicode_form(UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFD") return unicode_form(UTF8PROC_DECOMPOSE);
  if (type == "NFKD") return unicode_form(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Lowercase") return lowercase;
  if (type == "StripAccents") return strip_accents;
  if (type == "Strip") return strip(section.boolean_or("strip_left", true), section.boolean_or("strip_right", true));
  if (type == "Prepend") {
    return [prefix = section.string("prepend")](std::string& text) {
      if (!text.empty()) text.insert(0, prefix);
    };
  }
  if (type == "Replace") return replace(section);
  if (type == "Sequence") return sequence(section);
  section.at("type").fail_here(fmt::format(
      "unsupported normalizer '{}' (supported: NFC, NFKC, NFD, NFKD, Lowercase, StripAccents, Strip, "
      "Prepend, Replace, Sequence)", type));
}

}  // namespace lathe::tokenizer
