#pragma once
// The embedded default: Lathe's own small model (a Qwen2-architecture transformer with the real
// Qwen2.5/3 byte-level BPE tokenizer, randomly initialised from a fixed seed) and the shipped
// self-cognition dataset. `lathe sft` with no --model and no --dataset trains it.
#include <filesystem>

namespace lathe::cli {

// The model folder, built on first use (reproducibly: same seed, same bytes).
std::filesystem::path ensure_embedded_model();
// assets/self_cognition.jsonl
std::filesystem::path embedded_dataset();

}  // namespace lathe::cli
