#pragma once
// A small model configuration for tests that build a model in memory; each test states only the
// sizes it cares about.
#include "lathe/model/model.h"

namespace lathe::testing {

struct TinyShape {
  int64_t vocab = 32, hidden = 16, intermediate = 32, layers = 1, heads = 2, kv_heads = 1, head_dim = 8;
  bool attention_bias = false;
  bool tied = false;  // tie_word_embeddings
};

inline ModelConfig tiny_config(const TinyShape& shape = {}) {
  ModelConfig config;
  config.model_type = "qwen2";
  config.vocab_size = shape.vocab;
  config.hidden_size = shape.hidden;
  config.intermediate_size = shape.intermediate;
  config.num_hidden_layers = shape.layers;
  config.num_attention_heads = shape.heads;
  config.num_key_value_heads = shape.kv_heads;
  config.head_dim = shape.head_dim;
  config.attention_bias = shape.attention_bias;
  config.tie_word_embeddings = shape.tied;
  return config;
}

}  // namespace lathe::testing
