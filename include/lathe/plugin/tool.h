#pragma once
// Tools (`--tools name ...` in GRPO's tool_call scheduler, docs/plugins.md): a function the model
// may call by name during a multi-turn rollout; its text result becomes the tool's message.
//
// Built-ins: `calculator` ({"expression": "3 * (4 + 5)"}: + - * / and parentheses on decimal
// numbers, the value printed as %.15g), `json_lookup` ({"key": "..."}: the value under that key of
// the JSON object in the file that plugin_args {"json_lookup": {"file": PATH}} names).
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class Tool {
 public:
  virtual ~Tool() = default;
  // The result of a call with these arguments (usually a JSON object). A call the tool cannot
  // serve (a missing argument, a malformed expression) returns a message saying so, which the model
  // sees as the result; an exception stops the run.
  virtual std::string call(const nlohmann::json& arguments) = 0;
};

using ToolFactory = std::function<std::shared_ptr<Tool>(const PluginContext& context)>;
Registry<ToolFactory>& tool_registry();

}  // namespace lathe

LATHE_API_END
