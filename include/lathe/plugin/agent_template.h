#pragma once
// Agent templates (`--agent_template name`, alias `--tools_prompt`; plugins.md §6): how a list of
// tools is presented in the system prompt, how an assistant writes tool calls, how tool results are
// written back, and how tool calls are parsed out of a model's response (inference, deploy).
//
// Tools are OpenAI-style function specs: {"type": "function", "function": {"name", "description",
// "parameters"}} or the bare {"name", ...} object. JSON inside the layouts is written as Python's
// json.dumps writes it (", " and ": " separators, non-ASCII kept), which is what the published
// formats and the models' Jinja `tojson` produce.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/arguments.h"
#include "lathe/registry.h"

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

using AgentTemplateFactory = std::function<std::shared_ptr<AgentTemplate>(const Arguments& arguments)>;
Registry<AgentTemplateFactory>& agent_template_registry();

// The agent template a chat template uses by default: qwen2_5 / qwen3 -> hermes, llama3 -> llama3,
// mistral -> mistral, anything else -> react_en.
std::string default_agent_template_for(const std::string& chat_template_name);

// `arguments.agent_template` when set, else the default for `chat_template_name`; built.
std::shared_ptr<AgentTemplate> make_agent_template(const Arguments& arguments, const std::string& chat_template_name);

// The function object of a tool spec (unwraps {"type": "function", "function": {...}}).
const nlohmann::json& unwrap_tool(const nlohmann::json& tool);

// JSON text as Python's json.dumps(value, ensure_ascii=False[, indent=n]) writes it.
std::string python_json_dumps(const nlohmann::json& value, int indent = -1);

}  // namespace lathe
