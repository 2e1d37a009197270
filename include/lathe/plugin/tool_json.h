#pragma once
// Tool specs and JSON text as the built-in agent templates write them, public for agent-template
// plugins and for the server.
#include <string>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The function object of a tool spec (unwraps {"type": "function", "function": {...}}).
const nlohmann::json& unwrap_tool(const nlohmann::json& tool);

// JSON text as Python's json.dumps(value, ensure_ascii=False[, indent=n]) writes it.
std::string python_json_dumps(const nlohmann::json& value, int indent = -1);

}  // namespace lathe

LATHE_API_END
