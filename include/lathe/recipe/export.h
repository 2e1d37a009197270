#pragma once
// The recipe behind `lathe export`: a model folder (with --adapters merged into it by
// --merge_lora, or a checkpoint named by --adapters alone) written as a Hugging Face folder, or
// with --to_gguf as one GGUF file for llama.cpp and ollama.
#include <cstddef>
#include <filesystem>

#include "lathe/common/arguments.h"
#include "lathe/common/export.h"
#include "lathe/model/model.h"
#include "lathe/model/gguf.h"

LATHE_API_BEGIN

namespace lathe {

struct ExportSummary {
  std::filesystem::path output;  // the folder, or the .gguf file
  std::size_t merged_layers = 0;
};

// Throws lathe::Error naming the argument or file at fault; nothing is left at the output then.
ExportSummary run_export(const Arguments& arguments);

// The GGUF file for `model` (Llama, Mistral, Qwen2, Qwen3) with the tokenizer, special tokens and
// chat template of the Hugging Face folder `model_dir` (tokenizer.json, tokenizer_config.json):
// llama.cpp's names, Llama's q/k rows reordered for its rotation, norms and biases in float32 and
// the other weights in `type`. A model GGUF cannot describe (a rope scaling llama.cpp lacks, a
// tokenizer other than byte-level BPE) is an error before anything is written.
void write_gguf(CausalLM& model, const std::filesystem::path& model_dir, GgufType type,
                const std::filesystem::path& file);

}  // namespace lathe

LATHE_API_END
