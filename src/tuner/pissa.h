#pragma once
// PiSSA (Meng et al. 2024) as PEFT does it, shared by initialisation and loading.
#include <string>

#include "lathe/tuner/lora.h"

namespace lathe::tuner {

// W = U S V^T; the adapter takes the top r singular triplets (sqrt(S) on each side, divided by the
// scaling so that scaling * B A equals them), keeps them as its initial_A / initial_B, and W keeps
// the residual, so the layer's output is unchanged. Deterministic in W alone (the residual does not
// depend on the signs an SVD picks), so loading a saved PiSSA adapter redoes it on the original W.
void initialise_pissa(LoraAdapter& adapter, LinearImpl& base, const std::string& path);

}  // namespace lathe::tuner
