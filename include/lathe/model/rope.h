#pragma once
// The rotary embedding's frequencies as the model computes them, for whoever must restate them in
// another form (the GGUF export writes Llama 3's scaling as per-frequency factors).
#include <torch/types.h>

#include <cstdint>

#include "lathe/common/export.h"
#include "lathe/model/model.h"

LATHE_API_BEGIN

namespace lathe {

// The head_dim / 2 inverse frequencies of `config`'s RoPE, float32, for a forward pass over
// positions below `seq_len` (dynamic and longrope depend on it; 0 for the trained context).
torch::Tensor inverse_frequencies(const ModelConfig& config, int64_t seq_len);

// The factor on cos and sin: YaRN's and LongRoPE's attention temperature (rope_scaling's
// attention_factor when given), 1 otherwise.
double rotary_attention_scale(const ModelConfig& config);

}  // namespace lathe

LATHE_API_END
