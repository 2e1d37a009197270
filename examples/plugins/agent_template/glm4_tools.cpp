// An agent template plugin registered as "glm4_example": GLM-4's tools layout with English
// headings. The system lists the tools under "# Available Tools", one "## name" section per tool
// with its JSON spec; the assistant calls a tool by writing its name on one line and the JSON
// arguments below; calls are separated by <|assistant|> and end with <|observation|>, after which
// the results continue the assistant's text.
//   lathe sft ... --external_plugins examples/plugins/agent_template/glm4_tools.cpp \
//                 --agent_template glm4_example
#include <lathe/plugin.h>
#include <lathe/plugin/agent_template.h>
#include <lathe/plugin/tool_json.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using nlohmann::json;

const std::string kNextCall = "<|assistant|>";
const std::string kObservation = "<|observation|>";

std::string trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  return std::string(text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1));
}

// "name\n{arguments}" (with an optional trailing <|observation|>) as a call, if it is one.
std::optional<lathe::ToolCall> call_in(std::string_view piece) {
  piece = piece.substr(0, piece.find(kObservation));
  const auto newline = piece.find('\n');
  if (newline == std::string_view::npos) return std::nullopt;
  const std::string name = trimmed(piece.substr(0, newline));
  auto arguments = json::parse(trimmed(piece.substr(newline + 1)), nullptr, /*allow_exceptions=*/false);
  if (name.empty() || name.find_first_of(" \t") != std::string::npos || !arguments.is_object()) return std::nullopt;
  return lathe::ToolCall{name, std::move(arguments)};
}

class Glm4ExampleTemplate : public lathe::AgentTemplate {
 public:
  std::string format_system(const json& tools, const std::string& system) const override {
    std::string text = system + "\n\n# Available Tools";
    for (const auto& tool : tools) {
      const json& function = lathe::unwrap_tool(tool);
      text += "\n\n## " + function.at("name").get<std::string>() + "\n\n" + lathe::python_json_dumps(function, 4) +
              "\nWrite the arguments of a call to the function above as a JSON object.";
    }
    return text;
  }

  std::string format_tool_calls(const std::vector<lathe::ToolCall>& calls) const override {
    std::string text;
    for (const auto& call : calls) {
      if (!text.empty()) text += kNextCall;
      // Arguments given as JSON text are written as they are.
      const std::string arguments =
          call.arguments.is_string() ? call.arguments.get<std::string>() : lathe::python_json_dumps(call.arguments);
      text += call.name + "\n" + arguments;
    }
    return text + kObservation;
  }

  std::string format_tool_responses(const std::vector<std::string>& results) const override {
    std::string text;
    for (const auto& result : results) text += "\n" + result;
    return text + kNextCall + "\n";
  }

  std::vector<lathe::ToolCall> parse_tool_calls(const std::string& response) const override {
    std::vector<lathe::ToolCall> calls;
    const std::string_view text = response;
    for (size_t start = 0; start <= text.size();) {
      const size_t end = std::min(text.find(kNextCall, start), text.size());
      if (auto call = call_in(text.substr(start, end - start))) calls.push_back(std::move(*call));
      start = end + kNextCall.size();
    }
    return calls;
  }

  std::vector<std::string> stop_words() const override { return {kObservation}; }
};

}  // namespace

LATHE_PLUGIN() {
  lathe::agent_template_registry().add(
      "glm4_example", "GLM-4 layout with English headings: \"# Available Tools\", calls as name + JSON arguments",
      [](const lathe::PluginContext&) { return std::make_shared<Glm4ExampleTemplate>(); });
}
