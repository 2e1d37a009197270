#pragma once
// Reading the optional JSON files of a model folder (tokenizer_config.json, generation_config.json).
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The parsed file, or null when the folder has none; invalid JSON is an error naming the file.
nlohmann::json read_json_if_present(const std::filesystem::path& file);

// object[key] when it is a string, or its "content" when it is an object (how tokenizer_config.json
// writes special tokens); empty when absent, null or of another type.
std::string text_field(const nlohmann::json& object, const char* key);

}  // namespace lathe

LATHE_API_END
