#pragma once
// How the recipes turn a causal LM's folder into the sequence classifier a reward model is.
#include <filesystem>

#include "lathe/model/model.h"

namespace lathe {

// A classifier of `labels` rows on the folder's model, with ms-swift's pad token: the tokenizer's
// (tokenizer_config.json's pad_token), else its eos token.
ClassifierConversion classifier_conversion(const std::filesystem::path& model_dir, int64_t labels);

}  // namespace lathe
