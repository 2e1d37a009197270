#pragma once
#include <torch/types.h>

namespace lathe {

// Inverted dropout as torch::dropout(x, p, /*train=*/true) computes it (each element kept with
// probability 1 - p and scaled by 1 / (1 - p), the rest zero), with the keep mask drawn in parallel
// from a counter-based hash seeded by one draw from torch's default generator: a run stays
// reproducible under torch::manual_seed (--seed). Not CPU tensors: torch::dropout.
torch::Tensor inverted_dropout(const torch::Tensor& x, double p);

}  // namespace lathe
