#pragma once
// The tokenizer test corpus and Hugging Face's answers on it, produced by node scripts into the
// build folder and reused while they are newer than their inputs.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lathe::test {

struct ExpectedLine {
  std::vector<int32_t> with_special;     // encode(text, add_special_tokens=true)
  std::vector<int32_t> without_special;  // encode(text, add_special_tokens=false)
  std::string decoded;                   // decode(without_special, skip_special_tokens=false)
  std::string decoded_skip;              // decode(with_special, skip_special_tokens=true)
};

struct Reference {
  std::filesystem::path tokenizer_json;
  std::vector<std::string> texts;
  std::vector<ExpectedLine> expected;
};

// The corpus texts (scripts/make_tokenizer_corpus.js).
const std::vector<std::string>& corpus();

// name: qwen3, llama3, llama2 (Mistral's file), gpt2, or a variant from make_tokenizer_variants.js.
// Fails the calling test (and returns nullptr) when node or the npm oracles are missing.
const Reference* reference(const std::string& name);

// "..." with JSON escapes, for readable failure messages.
std::string quoted(const std::string& text);

}  // namespace lathe::test
