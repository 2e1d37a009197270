#pragma once
// UTF-8 and byte-level helpers shared by the tokenizer stages.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe::tokenizer {

// Length of the UTF-8 sequence that starts with `lead` (1 for stray continuation bytes, so that
// loops over already-validated text always advance).
inline std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Unicode's White_Space property (Rust's char::is_whitespace).
inline bool is_white_space(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Decodes the code point at `text[pos]` of valid UTF-8.
char32_t decode_utf8(std::string_view text, std::size_t pos);
void append_utf8(std::string& out, char32_t code_point);

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes U+FFFD. Hugging Face
// decodes byte-level and byte-fallback tokens this way, so ours must replace exactly the same bytes.
std::string utf8_lossy(std::string_view bytes);
bool is_valid_utf8(std::string_view bytes);

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// GPT-2's byte-level alphabet: every byte is shown as a printable character so that BPE tokens
// are strings. byte_to_char[b] is that character in UTF-8 (1 or 2 bytes).
struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_char;
  // Maps a code point (< 324) back to its byte, or -1 for characters outside the alphabet.
  std::array<int16_t, 324> char_to_byte;
};
const ByteLevelAlphabet& byte_level_alphabet();

}  // namespace lathe::tokenizer

LATHE_API_END
