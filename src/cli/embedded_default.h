#pragma once
// The embedded default: Lathe's own small model (a Qwen2-architecture transformer with the real
// Qwen2.5/3 byte-level BPE tokenizer, randomly initialised from a fixed seed) and the shipped
// self-cognition dataset. `lathe sft` with no --model and no --dataset trains it.
#include <filesystem>

#include <CLI/CLI.hpp>

#include "lathe/common/arguments.h"
#include "lathe/recipe/training.h"

namespace lathe::cli {

// The model folder, built on first use (reproducibly: same seed, same bytes).
std::filesystem::path ensure_embedded_model();
// assets/self_cognition.jsonl
std::filesystem::path embedded_dataset();

// Points the arguments at the embedded model and dataset and fills in its training settings
// (it trains a randomly initialised model), for those options the user did not give.
void use_embedded_default(const CLI::App& app, Arguments& arguments);

// Prints the model's answers to "who are you?" and friends; `when` is "before" or "after".
void show_embedded_answers(const char* when, TrainingRun& run);

}  // namespace lathe::cli
