#pragma once
// Decoders turn the token strings of a sequence of ids back into text. Like Hugging Face's, each
// one maps a list of strings to a list of strings, and the final list is concatenated.
#include <functional>
#include <string>
#include <vector>

namespace lathe::tokenizer {

class Section;

using Decoder = std::function<void(std::vector<std::string>&)>;

// An empty function for a null decoder.
Decoder make_decoder(const Section& section);

}  // namespace lathe::tokenizer
