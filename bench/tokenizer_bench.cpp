// Tokenizer encode throughput on the test corpus, one thread, in MB/s of UTF-8 input.
//   tokenizer_bench TOKENIZER_JSON_OR_DIR CORPUS.jsonl [REPEATS]
// The corpus comes from `node scripts/make_tokenizer_corpus.js corpus.jsonl`;
// bench/tokenizer_bench_hf.js measures Hugging Face's tokenizers on the same corpus.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "lathe/common/error.h"
#include "lathe/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: {} TOKENIZER_JSON_OR_DIR CORPUS.jsonl [REPEATS]\n", argv[0]);
    return 2;
  }
  try {
    const auto tokenizer = lathe::Tokenizer::from_file(argv[1]);
    std::vector<std::string> texts;
    std::ifstream in(argv[2]);
    if (!in) throw lathe::Error(fmt::format("{}: cannot open", argv[2]));
    std::size_t bytes = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      texts.push_back(nlohmann::json::parse(line).get<std::string>());
      bytes += texts.back().size();
    }
    const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
    std::size_t tokens = 0;
    for (const auto& text : texts) tokens += tokenizer.encode(text, false).size();  // warm-up: fills the word cache
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      for (const auto& text : texts) tokens += tokenizer.encode(text, false).size();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    fmt::print("lathe encode, 1 thread: {:.2f} MB/s ({} texts, {:.2f} MB, best of {} passes: {:.3f} s)\n",
               bytes / best / 1e6, texts.size(), bytes / 1e6, repeats, best);
  } catch (const lathe::Error& error) {
    fmt::print(stderr, "tokenizer_bench: {}\n", error.what());
    return 1;
  }
  return 0;
}
