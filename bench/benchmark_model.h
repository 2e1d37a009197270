#pragma once
// The benchmark model of issues 5 and 6: a randomly initialised Qwen2-style model with hidden 512,
// 8 layers, 8 heads, 2 KV heads, intermediate 1408 and Qwen's vocabulary of 151,936.
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
