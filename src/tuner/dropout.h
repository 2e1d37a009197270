#pragma once
#include <torch/types.h>

namespace lathe {

// Inverted dropout as torch::dropout(x, p, /*train=*/true) computes it (each element kept with
// probability 1 - p and scaled by 1 / (1 - p), the rest zero), with the keep mask drawn in parallel
// from a counter-based hash seeded by one draw from torch's default generator: a run stays
// reproducible under torch::manual_seed (--seed). Not CPU tensors: torch::dropout.
torch::Tensor inverted_dropout(const torch::Tensor& x, double p);

// torch::linear(inverted_dropout(x, p), weight), the same values from the same draw, but what
// backward keeps is x itself (which the layer keeps alive anyway, and which the q, k and v
// adapters share) and the mask's seed: the mask and the dropped-out copy are made again in
// backward instead of being stored, per adapted projection, for every token. CPU tensors with
// 0 < p < 1; others take the plain composition.
torch::Tensor dropout_then_linear(const torch::Tensor& x, const torch::Tensor& weight, double p);

}  // namespace lathe
