// Packing benchmark: the time pack_into_bins takes to lay out `--rows` examples of 32..2,047
// tokens (a fixed pseudo-random mix) into bins of --max_length tokens, and how full the bins are.
//
//   build/bench/packing_bench [--rows 200000] [--max_length 8192]
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lathe/train/batch.h"

int main(int argc, char** argv) {
  int64_t rows = 200'000, max_length = 8192;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rows") == 0) rows = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--max_length") == 0) max_length = std::stoll(argv[i + 1]);
  }
  std::vector<lathe::Example> examples(static_cast<std::size_t>(rows));
  uint64_t state = 1;
  int64_t tokens = 0;
  for (auto& example : examples) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto length = static_cast<std::size_t>(32 + (state >> 33) % 2016);
    example.input_ids.assign(length, 1);
    example.labels.assign(length, 1);
    tokens += static_cast<int64_t>(length);
  }
  const auto start = std::chrono::steady_clock::now();
  const auto bins = lathe::pack_into_bins(examples, max_length);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("{{\"rows\": {}, \"max_length\": {}, \"bins\": {}, \"fill\": {:.4f}, \"seconds\": {:.4f}}}\n", rows,
             max_length, bins.size(), static_cast<double>(tokens) / static_cast<double>(bins.size() * max_length),
             seconds);
  return 0;
}
