#pragma once
// Dataset rows in SWIFT's formats, normalised to a Conversation (plugins.md, architecture.md):
//   messages       {"messages": [{"role", "content"}...], "tools"?}
//   sharegpt       {"conversations": [{"from": "human"|"gpt"|"system"|..., "value"}...], "system"?}
//                  or {"conversation": [{"human", "assistant"}...], "system"?}
//   alpaca         {"instruction", "input"?, "output", "system"?}
//   query-response {"query", "response", "history"?: [[q, r]...], "system"?} and the usual
//                  column aliases (prompt/question -> query, answer/output/completion -> response)
//   text           {"text"}: pre-training rows, one assistant message
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/template.h"

namespace lathe {

// Where a row came from, for error messages ("data.jsonl:17").
struct RowLocation {
  std::string file;
  int64_t line = 0;
  std::string describe() const;
};

// Normalises one row; throws lathe::Error naming the location and the field.
Conversation to_conversation(const nlohmann::json& row, const RowLocation& where);

// Reads rows of a .jsonl, .json (array of objects) or .csv file, calling `visit` with each row and
// its location. Throws lathe::Error naming the file (and line) when it is unreadable or malformed.
void for_each_row(const std::filesystem::path& file,
                  const std::function<void(const nlohmann::json& row, const RowLocation& where)>& visit);

std::vector<nlohmann::json> read_rows(const std::filesystem::path& file);

}  // namespace lathe
