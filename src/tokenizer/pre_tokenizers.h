#pragma once
// Pre-tokenizers cut normalized text into the pieces ("words") that BPE encodes one at a time, and
// may rewrite them (ByteLevel maps bytes to its alphabet, Metaspace turns spaces into ▁).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lathe::tokenizer {

class Section;

struct Piece {
  uint32_t begin, end;  // bytes of PreTokens::text
  // Whether the piece starts where the whole input starts (Metaspace's prepend_scheme "first").
  bool at_origin;
};

struct PreTokens {
  std::string text;
  std::vector<Piece> pieces;
};

using PreTokenizer = std::function<void(PreTokens&)>;

// An empty function for a null pre-tokenizer.
PreTokenizer make_pre_tokenizer(const Section& section);

}  // namespace lathe::tokenizer
