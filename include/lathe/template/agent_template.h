#pragma once
// The interface of an agent template, the part of a chat template that presents tools: how a list
// of tools is shown in the system prompt, how an assistant writes tool calls, how tool results
// are written back, and how tool calls are parsed out of a response. The built-in formats and the
// registry that plugins add to are in lathe/plugin/agent_template.h.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct ToolCall {
  std::string name;
  nlohmann::json arguments;  // usually an object; a string is written verbatim (already JSON text)
};

// Where a format writes tool results relative to the assistant's turn.
enum class ToolResultPlacement {
  AssistantTurn,  // the results continue the assistant's text (ReAct: after "Observation:")
  ToolTurn,       // the results form their own turn, wrapped by the chat template's tool/user role
};

class AgentTemplate {
 public:
  virtual ~AgentTemplate() = default;
  // The system-prompt text presenting `tools` (a JSON array), given the user's system text (may be empty).
  virtual std::string format_system(const nlohmann::json& tools, const std::string& system) const = 0;
  // How an assistant's tool calls are written (what the model learns to produce).
  virtual std::string format_tool_calls(const std::vector<ToolCall>& calls) const = 0;
  // How tool results are written back (an OTHER context: no loss).
  virtual std::string format_tool_responses(const std::vector<std::string>& results) const = 0;
  // Tool calls found in a model response; empty when there are none.
  virtual std::vector<ToolCall> parse_tool_calls(const std::string& response) const = 0;
  // Stop words this format needs at inference (e.g. "Observation:" for ReAct); may be empty.
  virtual std::vector<std::string> stop_words() const { return {}; }
  virtual ToolResultPlacement result_placement() const { return ToolResultPlacement::AssistantTurn; }
};

}  // namespace lathe

LATHE_API_END
