#pragma once
// Shared pieces of the tuner tests: a tiny model, a scratch folder per test, finite differences.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/scratch_dir.h"
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>

#include "lathe/common/error.h"
#include "lathe/model/model.h"
#include "lathe/tuner/lora.h"
#include "support/errors.h"
#include "support/tiny_config.h"

namespace lathe::testing {

namespace fs = std::filesystem;

// Two layers with every kind of projection; q/k/v biases so DoRA's bias handling is exercised.
inline ModelConfig tuner_test_config(bool tied = false) {
  return tiny_config({.vocab = 40, .hidden = 16, .intermediate = 24, .layers = 2, .heads = 4, .kv_heads = 2,
                      .head_dim = 4, .attention_bias = true, .tied = tied});
}

inline CausalLM tiny_model(torch::Dtype dtype = torch::kFloat32, uint64_t seed = 1, bool tied = false) {
  torch::manual_seed(seed);
  CausalLM model(tuner_test_config(tied), dtype);
  model->eval();
  return model;
}

inline torch::Tensor tiny_input() { return torch::tensor({{3, 7, 1, 22, 39, 5}, {8, 8, 0, 17, 2, 30}}, torch::kInt64); }

inline torch::Tensor logits_of(CausalLM& model, const torch::Tensor& input_ids = tiny_input()) {
  ForwardInputs inputs;
  inputs.input_ids = input_ids;
  return model->logits(model->forward(inputs));
}

// Gives every adapter non-trivial values (B starts at zero, which would hide most of the math).
inline void randomise_adapters(CausalLM& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& [name, parameter] : lora_parameters(model)) {
    if (name.ends_with("lora_magnitude_vector")) parameter.mul_(1.0 + 0.3 * torch::rand_like(parameter));
    else parameter.copy_(0.3 * torch::randn_like(parameter));
  }
}

// Central difference of f with respect to element `index` of `parameter` (changed in place).
inline double finite_difference(torch::Tensor parameter, int64_t index, double step, const std::function<double()>& f) {
  torch::NoGradGuard no_grad;
  auto flat = parameter.view({-1});
  const double original = flat[index].item<double>();
  flat[index].fill_(original + step);
  const double plus = f();
  flat[index].fill_(original - step);
  const double minus = f();
  flat[index].fill_(original);
  return (plus - minus) / (2 * step);
}


// Runs `action` and returns the lathe::Error message it throws (fails the test when it does not).

}  // namespace lathe::testing
