// Agent templates (docs/plugins.md): the tools layouts of ReAct, Qwen-Agent, Hermes (Qwen2.5/Qwen3),
// GLM-4, ToolBench, Llama 3.1 and Mistral, and parsers that read tool calls back from responses.
#include "lathe/plugin/agent_template.h"

#include <functional>
#include <optional>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "lathe/common/format.h"
#include "lathe/template/template.h"
#include "lathe/plugin/tool_json.h"

namespace lathe {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

template <class Json>
void dump_python_style(const Json& value, int indent, int level, std::string& out) {
  auto newline = [&](int depth) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent * depth), ' ');
  };
  const char* separator = indent >= 0 ? "," : ", ";
  if (value.is_object() && !value.empty()) {
    out += '{';
    bool first = true;
    for (auto item = value.begin(); item != value.end(); ++item) {
      if (!first) out += separator;
      first = false;
      newline(level + 1);
      out += Json(item.key()).dump(-1, ' ', false, Json::error_handler_t::replace) + ": ";
      dump_python_style(item.value(), indent, level + 1, out);
    }
    newline(level);
    out += '}';
  } else if (value.is_array() && !value.empty()) {
    out += '[';
    bool first = true;
    for (const auto& element : value) {
      if (!first) out += separator;
      first = false;
      newline(level + 1);
      dump_python_style(element, indent, level + 1, out);
    }
    newline(level);
    out += ']';
  } else {
    out += value.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
}

template <class Json>
std::string dumps(const Json& value, int indent = -1) {
  std::string out;
  dump_python_style(value, indent, 0, out);
  return out;
}

std::string trim(std::string_view text) {
  const auto* spaces = " \t\r\n";
  const auto begin = text.find_first_not_of(spaces);
  if (begin == std::string_view::npos) return "";
  return std::string(text.substr(begin, text.find_last_not_of(spaces) - begin + 1));
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? std::string(separator) : "") + parts[i];
  return out;
}

// --- tools ---------------------------------------------------------------------------------

json tool_list(const json& tools) {
  if (tools.is_string()) return tool_list(json::parse(tools.get<std::string>()));
  if (tools.is_null()) return json::array();
  if (tools.is_object()) return json::array({tools});
  if (!tools.is_array()) fail("tools: expected a JSON list of function specs, got {}", tools.dump());
  return tools;
}

std::string tool_name(const json& tool) {
  const auto& function = unwrap_tool(tool);
  for (const char* key : {"name", "name_for_model"}) {
    if (function.contains(key) && function[key].is_string()) return function[key].get<std::string>();
  }
  fail("tools: a function spec has no \"name\": {}", tool.dump());
}

// The function object with the keys in their published order (name, description, parameters),
// since nlohmann::json keeps keys sorted.
ordered_json ordered_function(const json& tool) {
  const auto& function = unwrap_tool(tool);
  ordered_json ordered;
  for (const char* key : {"name", "description", "parameters"}) {
    if (function.contains(key)) ordered[key] = function[key];
  }
  for (const auto& [key, value] : function.items()) {
    if (!ordered.contains(key)) ordered[key] = value;
  }
  return ordered;
}

ordered_json wrapped_function(const json& tool) {
  return ordered_json{{"type", "function"}, {"function", ordered_function(tool)}};
}

std::vector<std::string> tool_names(const json& tools) {
  std::vector<std::string> names;
  for (const auto& tool : tools) names.push_back(tool_name(tool));
  return names;
}

// --- calls ---------------------------------------------------------------------------------

// Arguments given as JSON text are taken as the JSON they hold.
json argument_value(const json& arguments) {
  if (!arguments.is_string()) return arguments;
  auto parsed = json::parse(arguments.get<std::string>(), nullptr, false);
  return parsed.is_discarded() ? arguments : parsed;
}

std::string arguments_text(const json& arguments) {
  const auto value = argument_value(arguments);
  return value.is_string() ? value.get<std::string>() : dumps(value);
}

std::string call_json(const ToolCall& call, const char* arguments_key) {
  return fmt::format("{{\"name\": {}, \"{}\": {}}}", dumps(json(call.name)), arguments_key,
                     dumps(argument_value(call.arguments)));
}

// The end (one past) of the JSON object or array starting at `start`, honouring strings; npos if
// it is not closed.
size_t balanced_json_end(std::string_view text, size_t start) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = start; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

// {"name": ..., "arguments" | "parameters": ...} as a call, if it is one.
std::optional<ToolCall> call_from_json(const json& object) {
  if (!object.is_object() || !object.contains("name") || !object["name"].is_string()) return std::nullopt;
  for (const char* key : {"arguments", "parameters"}) {
    if (object.contains(key)) return ToolCall{object["name"].get<std::string>(), argument_value(object[key])};
  }
  return std::nullopt;
}

// Every call object found in `text`, each a balanced JSON object or a list of them.
std::vector<ToolCall> calls_in_json_text(std::string_view text) {
  std::vector<ToolCall> calls;
  size_t position = text.find_first_of("{[");
  while (position != std::string_view::npos) {
    const size_t end = balanced_json_end(text, position);
    if (end == std::string_view::npos) break;
    auto parsed = json::parse(text.substr(position, end - position), nullptr, false);
    bool used = false;
    for (const auto& candidate : parsed.is_array() ? parsed : json::array({parsed})) {
      if (auto call = call_from_json(candidate)) {
        calls.push_back(std::move(*call));
        used = true;
      }
    }
    position = text.find_first_of("{[", used ? end : position + 1);
  }
  return calls;
}

// --- ReAct family: keyword lines (ReAct, Qwen-Agent, ToolBench) ------------------------------

struct ReactKeywords {
  std::string action, action_input, observation;
  std::vector<std::string> others;  // keywords that may end an argument text ("Thought:", ...)
};

const ReactKeywords react_keywords{"Action:", "Action Input:", "Observation:", {"Thought:", "Final Answer:"}};
const ReactKeywords qwen_keywords{"✿FUNCTION✿:", "✿ARGS✿:", "✿RESULT✿:", {"✿RETURN✿:"}};

using SystemLayout = std::function<std::string(const json& tools, const std::string& system)>;

class ReactFamilyTemplate : public AgentTemplate {
 public:
  ReactFamilyTemplate(ReactKeywords keywords, SystemLayout layout)
      : keywords_(std::move(keywords)), layout_(std::move(layout)) {}

  std::string format_system(const json& tools, const std::string& system) const override {
    return layout_(tool_list(tools), system);
  }

  std::string format_tool_calls(const std::vector<ToolCall>& calls) const override {
    std::string text;
    for (const auto& call : calls) {
      text += keywords_.action + " " + call.name + "\n" + keywords_.action_input + " " + arguments_text(call.arguments) + "\n";
    }
    return text + keywords_.observation;
  }

  // Continues right after the calls' closing observation keyword.
  std::string format_tool_responses(const std::vector<std::string>& results) const override {
    std::string text;
    for (size_t i = 0; i < results.size(); ++i) text += (i ? keywords_.observation : "") + " " + results[i] + "\n";
    return text;
  }

  std::vector<ToolCall> parse_tool_calls(const std::string& response) const override {
    std::vector<ToolCall> calls;
    const std::string_view text = response;
    size_t action = text.find(keywords_.action);
    while (action != std::string_view::npos) {
      const size_t name_start = action + keywords_.action.size();
      const size_t input = text.find(keywords_.action_input, name_start);
      if (input == std::string_view::npos) break;
      std::string name = trim(text.substr(name_start, input - name_start));
      const auto [arguments, end] = arguments_after(text, input + keywords_.action_input.size());
      calls.push_back({std::move(name), argument_value(json(arguments))});
      action = text.find(keywords_.action, end);
    }
    return calls;
  }

  std::vector<std::string> stop_words() const override { return {keywords_.observation}; }

 private:
  // The argument text and where it ends: a balanced JSON value when it is one, else up to the next keyword.
  std::pair<std::string, size_t> arguments_after(std::string_view text, size_t start) const {
    const size_t first = text.find_first_not_of(" \t", start);
    if (first != std::string_view::npos && (text[first] == '{' || text[first] == '[')) {
      const size_t end = balanced_json_end(text, first);
      if (end != std::string_view::npos &&
          !json::parse(text.substr(first, end - first), nullptr, false).is_discarded()) {
        return {std::string(text.substr(first, end - first)), end};
      }
    }
    size_t end = text.size();
    for (const auto* keyword : {&keywords_.action, &keywords_.observation}) end = std::min(end, text.find(*keyword, start));
    for (const auto& keyword : keywords_.others) end = std::min(end, text.find(keyword, start));
    return {trim(text.substr(start, end - start)), end};
  }

  ReactKeywords keywords_;
  SystemLayout layout_;
};

std::string with_system_first(const std::string& system, const std::string& body) {
  return system.empty() ? body : system + "\n\n" + body;
}

std::string tools_one_json_each(const json& tools) {
  std::vector<std::string> lines;
  for (const auto& tool : tools) lines.push_back(dumps(ordered_function(tool)));
  return join(lines, "\n\n");
}

std::string react_en_system(const json& tools, const std::string& system) {
  return with_system_first(system,
      "Answer the following questions as best you can. You have access to the following tools:\n\n" +
      tools_one_json_each(tools) +
      "\n\nUse the following format:\n\n"
      "Question: the input question you must answer\n"
      "Thought: you should always think about what to do\n"
      "Action: the action to take, should be one of [" + join(tool_names(tools), ",") + "]\n"
      "Action Input: the input to the action\n"
      "Observation: the result of the action\n"
      "... (this Thought/Action/Action Input/Observation can be repeated zero or more times)\n"
      "Thought: I now know the final answer\n"
      "Final Answer: the final answer to the original input question\n\n"
      "Begin!\n");
}

std::string react_zh_system(const json& tools, const std::string& system) {
  return with_system_first(system,
      "尽你所能回答下面的问题。你可以使用以下工具：\n\n" + tools_one_json_each(tools) +
      "\n\n请按照以下格式回答：\n\n"
      "Question: 需要你回答的问题\n"
      "Thought: 你每一步都应当思考接下来做什么\n"
      "Action: 要调用的工具，必须是[" + join(tool_names(tools), ",") + "]之一\n"
      "Action Input: 工具的输入\n"
      "Observation: 工具返回的结果\n"
      "……（Thought/Action/Action Input/Observation 可以重复零次或多次）\n"
      "Thought: 我现在知道最终答案了\n"
      "Final Answer: 对原问题的最终回答\n\n"
      "开始！\n");
}

// Qwen-Agent's layout: one "### name" section per tool, then the ✿ keyword instructions.
struct QwenWords {
  std::string tools_heading, have_tools, parameters, arguments_format, when_to_call, function, args, result, reply;
};

std::string qwen_system(const QwenWords& words, const json& tools, const std::string& system) {
  std::vector<std::string> sections;
  for (const auto& tool : tools) {
    const auto& function = unwrap_tool(tool);
    const std::string name = tool_name(tool);
    const std::string human = function.value("name_for_human", name);
    std::string description = function.value("description", function.value("description_for_model", ""));
    const json parameters = function.value("parameters", json::object());
    sections.push_back("### " + human + "\n\n" + name + ": " + description + " " + words.parameters +
                       dumps(parameters) + " " + words.arguments_format);
  }
  std::string text = system.empty() ? "" : system + "\n\n";
  return text + words.tools_heading + "\n\n" + words.have_tools + "\n\n" + join(sections, "\n\n") + "\n\n" +
         words.when_to_call + "\n\n✿FUNCTION✿: " + fmt::format(fmt::runtime(words.function), join(tool_names(tools), ",")) +
         "\n✿ARGS✿: " + words.args + "\n✿RESULT✿: " + words.result + "\n✿RETURN✿: " + words.reply;
}

const QwenWords qwen_en_words{
    "# Tools", "## You have access to the following tools:", "Parameters: ", "Format the arguments as a JSON object.",
    "## When you need to call a tool, please insert the following command in your reply, which can be called zero or "
    "multiple times according to your needs:",
    "The tool to use, should be one of [{}]", "The input of the tool", "Tool results",
    "Reply based on tool results. Images need to be rendered as ![](url)"};

const QwenWords qwen_zh_words{
    "# 工具", "## 你拥有如下工具：", "输入参数：", "此工具的输入应为JSON对象。",
    "## 你可以在回复中插入零次、一次或多次以下命令以调用工具：",
    "工具名称，必须是[{}]之一。", "工具输入", "工具结果", "根据工具结果进行回复，需将图片用![](url)渲染出来"};

std::string toolbench_system(const json& tools, const std::string& system) {
  ordered_json ordered = ordered_json::array();
  for (const auto& tool : tools) ordered.push_back(ordered_function(tool));
  return with_system_first(system,
      "You can use many tools(functions) to do the following task.\n"
      "First I will give you the task description, and your task start.\n"
      "At each step, you need to give your thought to analyze the status now and what to do next, with a function "
      "call to actually execute your step. Your output should follow this format:\n"
      "Thought:\nAction:\nAction Input:\n\n"
      "After the call, you will get the call result, and you are now in a new state.\n"
      "Then you will analyze your status now, then decide what to do next...\n"
      "After many (Thought-call) pairs, you finally perform the task, then you can give your final answer.\n"
      "Remember:\n"
      "1.the state change is irreversible, you can't go back to one of the former state, if you want to restart the "
      "task, say \"I give up and restart\".\n"
      "2.All the thought is short, at most in 5 sentence.\n"
      "3.You can do more then one try, so if your plan is to continuously try some conditions, you can do one of the "
      "conditions per try.\n"
      "Let's Begin!\n"
      "Task description: You should use functions to help handle the real time user queries. Remember:\n"
      "1.ALWAYS call \"Finish\" function at the end of the task. And the final answer should contain enough "
      "information to show to the user,If you can't handle the task, or you find that function calls always fail"
      "(the function is not valid now), use function Finish->give_up_and_restart.\n"
      "2.Do not use origin tool names, use only subfunctions' names.\n"
      "Specifically, you have access to the following APIs: " + dumps(ordered));
}

// --- JSON-call formats --------------------------------------------------------------------------

// Hermes, as Qwen2.5 and Qwen3 write it.
class HermesTemplate : public AgentTemplate {
 public:
  std::string format_system(const json& tools, const std::string& system) const override {
    std::string text = with_system_first(system,
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
    for (const auto& tool : tool_list(tools)) text += "\n" + dumps(wrapped_function(tool));
    return text + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                  "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                  "<args-json-object>}\n</tool_call>";
  }
  std::string format_tool_calls(const std::vector<ToolCall>& calls) const override {
    std::vector<std::string> parts;
    for (const auto& call : calls) parts.push_back("<tool_call>\n" + call_json(call, "arguments") + "\n</tool_call>");
    return join(parts, "\n");
  }
  std::string format_tool_responses(const std::vector<std::string>& results) const override {
    std::vector<std::string> parts;
    for (const auto& result : results) parts.push_back("<tool_response>\n" + result + "\n</tool_response>");
    return join(parts, "\n");
  }
  std::vector<ToolCall> parse_tool_calls(const std::string& response) const override {
    static const std::string open = "<tool_call>", close = "</tool_call>";
    std::vector<ToolCall> calls;
    for (size_t start = response.find(open); start != std::string::npos; start = response.find(open, start)) {
      start += open.size();
      const size_t end = response.find(close, start);
      auto found = calls_in_json_text(std::string_view(response).substr(start, end == std::string::npos ? end : end - start));
      calls.insert(calls.end(), found.begin(), found.end());
      if (end == std::string::npos) break;
    }
    return calls;
  }
  ToolResultPlacement result_placement() const override { return ToolResultPlacement::ToolTurn; }
};

// GLM-4: "# 可用工具" with a "## name" section per tool; a call is "name\n{arguments}".
class Glm4Template : public AgentTemplate {
 public:
  std::string format_system(const json& tools, const std::string& system) const override {
    std::string text = system.empty() ? default_system : system;
    text += "\n\n# 可用工具";
    for (const auto& tool : tool_list(tools)) {
      text += "\n\n## " + tool_name(tool) + "\n\n" + dumps(ordered_function(tool), 4) + "\n" + call_instruction;
    }
    return text;
  }
  std::string format_tool_calls(const std::vector<ToolCall>& calls) const override {
    std::vector<std::string> parts;
    for (const auto& call : calls) parts.push_back(call.name + "\n" + arguments_text(call.arguments));
    return join(parts, assistant) + observation;
  }
  std::string format_tool_responses(const std::vector<std::string>& results) const override {
    return "\n" + join(results, observation + "\n") + assistant + "\n";
  }
  std::vector<ToolCall> parse_tool_calls(const std::string& response) const override {
    std::vector<ToolCall> calls;
    size_t start = 0;
    while (start <= response.size()) {
      size_t end = response.find(assistant, start);
      if (end == std::string::npos) end = response.size();
      if (auto call = call_in_piece(std::string_view(response).substr(start, end - start))) calls.push_back(*call);
      start = end + assistant.size();
    }
    return calls;
  }
  std::vector<std::string> stop_words() const override { return {observation}; }

 private:
  static std::optional<ToolCall> call_in_piece(std::string_view piece) {
    if (const size_t tag = piece.find(observation); tag != std::string_view::npos) piece = piece.substr(0, tag);
    const size_t newline = piece.find('\n');
    if (newline == std::string_view::npos) return std::nullopt;
    const std::string name = trim(piece.substr(0, newline));
    const std::string arguments = trim(piece.substr(newline + 1));
    auto parsed = json::parse(arguments, nullptr, false);
    if (name.empty() || name.find(' ') != std::string::npos || !parsed.is_object()) return std::nullopt;
    return ToolCall{name, parsed};
  }

  inline static const std::string assistant = "<|assistant|>", observation = "<|observation|>";
  inline static const std::string default_system =
      "你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
      "你的任务是针对用户的问题和要求提供适当的答复和支持。";
  inline static const std::string call_instruction = "在调用上述函数时，请使用 Json 格式表示调用的参数。";
};

// Llama 3.1 with the tools in the system turn: {"name": ..., "parameters": ...} per call.
class Llama3Template : public AgentTemplate {
 public:
  std::string format_system(const json& tools, const std::string& system) const override {
    std::string text =
        "You have access to the following functions. To call a function, please respond with JSON for a function "
        "call.Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
        "value}.Do not use variables.\n\n";
    for (const auto& tool : tool_list(tools)) text += dumps(wrapped_function(tool), 4) + "\n\n";
    return text + system;
  }
  std::string format_tool_calls(const std::vector<ToolCall>& calls) const override {
    std::vector<std::string> parts;
    for (const auto& call : calls) parts.push_back(call_json(call, "parameters"));
    return join(parts, "\n");
  }
  std::string format_tool_responses(const std::vector<std::string>& results) const override { return join(results, "\n"); }
  std::vector<ToolCall> parse_tool_calls(const std::string& response) const override { return calls_in_json_text(response); }
  std::vector<std::string> stop_words() const override { return {"<|eom_id|>"}; }
  ToolResultPlacement result_placement() const override { return ToolResultPlacement::ToolTurn; }
};

// Mistral (v3 tokenizer): [AVAILABLE_TOOLS] / [TOOL_CALLS] / [TOOL_RESULTS].
class MistralTemplate : public AgentTemplate {
 public:
  std::string format_system(const json& tools, const std::string& system) const override {
    std::vector<std::string> specs;
    for (const auto& tool : tool_list(tools)) specs.push_back(dumps(wrapped_function(tool)));
    return "[AVAILABLE_TOOLS] [" + join(specs, ", ") + "][/AVAILABLE_TOOLS]" + system;
  }
  std::string format_tool_calls(const std::vector<ToolCall>& calls) const override {
    std::vector<std::string> parts;
    for (const auto& call : calls) parts.push_back(call_json(call, "arguments"));
    return calls_tag + " [" + join(parts, ", ") + "]";
  }
  std::string format_tool_responses(const std::vector<std::string>& results) const override {
    std::string text;
    for (const auto& result : results) text += "[TOOL_RESULTS] {\"content\": " + dumps(json(result)) + "}[/TOOL_RESULTS]";
    return text;
  }
  std::vector<ToolCall> parse_tool_calls(const std::string& response) const override {
    std::vector<ToolCall> calls;
    for (size_t start = response.find(calls_tag); start != std::string::npos; start = response.find(calls_tag, start)) {
      start += calls_tag.size();
      const size_t open = response.find_first_not_of(" \n", start);
      if (open == std::string::npos || (response[open] != '[' && response[open] != '{')) continue;
      const size_t end = balanced_json_end(response, open);
      if (end == std::string::npos) break;
      auto found = calls_in_json_text(std::string_view(response).substr(open, end - open));
      calls.insert(calls.end(), found.begin(), found.end());
      start = end;
    }
    return calls;
  }
  ToolResultPlacement result_placement() const override { return ToolResultPlacement::ToolTurn; }

 private:
  inline static const std::string calls_tag = "[TOOL_CALLS]";
};

}  // namespace

const json& unwrap_tool(const json& tool) {
  if (tool.is_object() && tool.contains("function") && tool["function"].is_object()) return tool["function"];
  if (!tool.is_object()) fail("tools: expected a function spec object, got {}", tool.dump());
  return tool;
}

std::string python_json_dumps(const json& value, int indent) { return dumps(value, indent); }

std::shared_ptr<AgentTemplate> make_agent_template(const Arguments& arguments, const TemplateSpec& chat_template) {
  const std::string& name = arguments.agent_template.empty() ? chat_template.agent_template : arguments.agent_template;
  return agent_template_registry().create(name, arguments);
}

Registry<AgentTemplateFactory>& agent_template_registry() {
  static Registry<AgentTemplateFactory> registry = [] {
    Registry<AgentTemplateFactory> built_ins("agent_template");
    auto react = [&](const std::string& name, const std::string& description, ReactKeywords keywords, SystemLayout layout) {
      built_ins.add(name, description, [keywords, layout](const PluginContext&) {
        return std::make_shared<ReactFamilyTemplate>(keywords, layout);
      });
    };
    auto qwen_layout = [](const QwenWords& words) {
      return [&words](const json& tools, const std::string& system) { return qwen_system(words, tools, system); };
    };
    react("react_en", "ReAct: Thought / Action / Action Input / Observation / Final Answer", react_keywords, react_en_system);
    react("react_zh", "ReAct with Chinese instructions", react_keywords, react_zh_system);
    react("qwen_en", "Qwen-Agent: ✿FUNCTION✿ / ✿ARGS✿ / ✿RESULT✿ / ✿RETURN✿", qwen_keywords, qwen_layout(qwen_en_words));
    react("qwen_zh", "Qwen-Agent with Chinese instructions", qwen_keywords, qwen_layout(qwen_zh_words));
    react("toolbench", "ToolBench's system prompt; calls as Action / Action Input", react_keywords, toolbench_system);
    auto simple = [&]<class T>(const std::string& name, const std::string& description, std::type_identity<T>) {
      built_ins.add(name, description, [](const PluginContext&) { return std::make_shared<T>(); });
    };
    simple("hermes", "<tools> in the system, <tool_call> JSON per call, <tool_response> (Qwen2.5, Qwen3)",
           std::type_identity<HermesTemplate>{});
    simple("glm4", "GLM-4: \"# 可用工具\" with a ## section per tool; calls as name + JSON arguments",
           std::type_identity<Glm4Template>{});
    simple("llama3", "Llama 3.1 JSON function calls: {\"name\": ..., \"parameters\": ...}", std::type_identity<Llama3Template>{});
    simple("mistral", "Mistral: [AVAILABLE_TOOLS] / [TOOL_CALLS] / [TOOL_RESULTS]", std::type_identity<MistralTemplate>{});
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
