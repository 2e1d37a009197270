#pragma once
// Agent templates (`--agent_template name`, alias `--tools_prompt`; docs/plugins.md): how a list of
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

#include "lathe/common/arguments.h"
#include "lathe/plugin/registry.h"
#include "lathe/template/agent_template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct TemplateSpec;  // lathe/template/template.h

using AgentTemplateFactory = std::function<std::shared_ptr<AgentTemplate>(const PluginContext& context)>;
Registry<AgentTemplateFactory>& agent_template_registry();

// `arguments.agent_template` when set, else the chat template's own (TemplateSpec::agent_template:
// hermes for Qwen2.5 / Qwen3, llama3, mistral, react_en for the others); built.
std::shared_ptr<AgentTemplate> make_agent_template(const Arguments& arguments, const TemplateSpec& chat_template);

}  // namespace lathe

LATHE_API_END
