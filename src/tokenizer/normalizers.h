#pragma once
// Normalizers rewrite the text of each piece between added tokens before it is pre-tokenized.
#include <functional>
#include <string>

namespace lathe::tokenizer {

class Section;

using Normalizer = std::function<void(std::string&)>;

// An empty function for a null normalizer.
Normalizer make_normalizer(const Section& section);

}  // namespace lathe::tokenizer
