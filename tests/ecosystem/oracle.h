#pragma once
// Hugging Face transformers and PEFT from PyPI as oracles: the venv that scripts/oracle_env.sh makes
// (the test command makes it first), driven through tests/ecosystem/hf_oracle.py.
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/model/model.h"

namespace lathe::testing {

// The oracle venv's python: $LATHE_ORACLE_PYTHON, else the repository's .cache/oracle-venv. Adds a
// test failure naming the command that makes it when it is missing.
std::string oracle_python();

// Runs hf_oracle.py's commands (each an argument list) in one Python process, because importing
// transformers costs about 10 seconds; `scratch` holds the job file. Adds a test failure with
// Python's output and returns false when it fails.
bool run_oracle(const std::vector<std::vector<std::string>>& jobs, const std::filesystem::path& scratch);

// What `hf_oracle.py logits` wrote: whole-sequence and KV-cached step logits, [seq, vocab] float32.
struct OracleLogits {
  torch::Tensor full, steps;
  nlohmann::json loading;  // missing_keys, unexpected_keys, mismatched_keys
};
OracleLogits read_oracle_logits(const std::filesystem::path& file);

// `hf_oracle.py logits` arguments for `model` (and an optional PEFT adapter) on `ids`, into `out`.
std::vector<std::string> logits_job(const std::filesystem::path& model, const std::vector<int32_t>& ids,
                                    const std::filesystem::path& out, const std::vector<std::string>& extra = {});

// Lathe's logits for `ids` in the same form: [seq, vocab] float32 from one forward pass, and from
// feeding the tokens one at a time through the KV cache.
struct LatheLogits {
  torch::Tensor full, steps;
};
LatheLogits lathe_logits(CausalLM& model, const std::vector<int32_t>& ids);

// Trains `base` for two steps on a small dataset (written into `dir` once) with `lathe sft` and the
// given tuner arguments; returns the checkpoint folder dir/<output>/checkpoint-2.
std::filesystem::path lathe_sft_checkpoint(const std::filesystem::path& dir, const std::filesystem::path& base,
                                           const std::string& output, const std::vector<std::string>& tuner_arguments);

// Runs GGUF file `gguf` in llama.cpp (tests/llama/llama_oracle.mjs on node-llama-cpp's prebuilt
// CPU build, which scripts/test.sh installs) with llama_oracle.mjs's `jobs`; returns its "results",
// one per job, or null after adding a test failure with node's output.
nlohmann::json run_llama_cpp(const std::filesystem::path& gguf, const nlohmann::json& jobs,
                             const std::filesystem::path& scratch);

// Largest absolute difference, as a double.
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace lathe::testing
