#pragma once
// The benchmark model of issues 5 and 6: a randomly initialised Qwen2-style model with hidden 512,
// 8 layers, 8 heads, 2 KV heads, intermediate 1408 and Qwen's vocabulary of 151,936.
#include <fmt/format.h>

#include <exception>

#include "lathe/model/model.h"

inline lathe::ModelConfig benchmark_config() {
  lathe::ModelConfig config;
  config.model_type = "qwen2";
  config.vocab_size = 151936;
  config.hidden_size = 512;
  config.intermediate_size = 1408;
  config.num_hidden_layers = 8;
  config.num_attention_heads = 8;
  config.num_key_value_heads = 2;
  config.head_dim = 64;
  config.max_position_embeddings = 4096;
  config.attention_bias = true;
  config.tie_word_embeddings = true;
  return config;
}

// A benchmark's main: a bad flag or model folder is a message and exit status 1, not an abort.
inline int run_benchmark(const char* name, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    fmt::print(stderr, "{}: {}\n", name, error.what());
    return 1;
  }
}
