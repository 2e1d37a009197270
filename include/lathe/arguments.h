#pragma once
// One Arguments type for every command, with SWIFT's names and defaults. Parsed from the command
// line and from --config files (YAML or JSON, same keys; the command line wins). Plugins read it;
// their own settings travel in plugin_args.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lathe {

struct Arguments {
  // Model
  std::string model;                  // Hugging Face model folder
  std::vector<std::string> adapters;  // adapter folders (PEFT format)
  std::string template_name;          // --template; empty: chosen from the model folder
  std::optional<std::string> system;  // overrides the template's default system
  std::string torch_dtype = "float32";  // float32 | bfloat16
  int64_t max_length = 0;             // 0: the model's max_position_embeddings

  // Generation
  int64_t max_new_tokens = 512;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  int64_t seed = 42;
  bool stream = true;
  int64_t max_batch_size = 8;

  // Data
  std::vector<std::string> dataset;
  std::vector<std::string> val_dataset;
  std::string result_path;

  nlohmann::json plugin_args = nlohmann::json::object();

  nlohmann::json to_json() const;
};

}  // namespace lathe
