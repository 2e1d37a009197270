#include "lathe/common/json_file.h"

#include "lathe/common/files.h"
#include "lathe/common/format.h"

namespace lathe {

nlohmann::json read_json_if_present(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return nullptr;
  try {
    return nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::exception& error) {
    fail("{}: invalid JSON ({})", file.string(), error.what());
  }
}

std::string text_field(const nlohmann::json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) return {};
  const nlohmann::json& value = object[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return {};
}

}  // namespace lathe
