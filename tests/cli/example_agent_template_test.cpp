// examples/plugins/agent_template/glm4_tools.cpp end to end: compiled on the fly, listed by
// `lathe plugins`, its layout shown by `lathe tokenize --render`, and an sft run on a tiny model
// with a tool-calling row trained through it.
#include <gtest/gtest.h>

#include "cli/cli_util.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kExample = fs::path(LATHE_SOURCE_DIR) / "examples/plugins/agent_template/glm4_tools.cpp";

std::vector<std::string> cache_env(const TempDir& dir) { return {"LATHE_PLUGIN_CACHE=" + (dir / "cache").string()}; }

// A user asks, the assistant calls a tool, the tool answers, the assistant replies.
json tool_row() {
  return json::parse(R"({"tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]})");
}

TEST(ExampleAgentTemplate, ListedRenderedAndTrained) {
  TempDir dir("example-agent-template");
  write_tiny_model(dir / "model");
  const auto env = cache_env(dir);

  auto listed = run_lathe({"plugins", "--external_plugins", kExample.string()}, "", env);
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("glm4_example"), std::string::npos) << listed.out;

  // The whole rendering, written out from the example's layout on the tiny model's chatml-style
  // (qwen) template; JSON as Python's json.dumps writes it (sorted keys: nlohmann's order).
  auto rendered = run_lathe({"tokenize", "--model", (dir / "model").string(), "--render", "--template", "chatml",
                             "--agent_template", "glm4_example", "--external_plugins", kExample.string()},
                            tool_row().dump() + "\n", env);
  ASSERT_EQ(rendered.exit_code, 0) << rendered.err;
  const std::string expected =
      "<|im_start|>system\nBe brief.\n\n# Available Tools\n\n## get_weather\n\n{\n    \"description\": \"Weather of a "
      "city\",\n    \"name\": \"get_weather\",\n    \"parameters\": {\n        \"properties\": {\n            "
      "\"city\": {\n                \"type\": \"string\"\n            }\n        },\n        \"type\": \"object\"\n"
      "    }\n}\nWrite the arguments of a call to the function above as a JSON object.<|im_end|>\n"
      "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
      "get_weather\n{\"city\": \"Paris\"}<|observation|>\nsunny<|assistant|>\nSunny.<|im_end|>\n";
  EXPECT_EQ(json::parse(rendered.out).get<std::string>(), expected) << rendered.out;

  // Without the plugin the name is unknown, and the error lists the registered ones.
  auto unknown = run_lathe({"tokenize", "--model", (dir / "model").string(), "--render", "--agent_template",
                            "glm4_example"}, tool_row().dump() + "\n", env);
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("glm4_example"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("hermes"), std::string::npos) << unknown.err;

  write_jsonl(dir / "train.jsonl", {tool_row(), tool_row()});
  auto trained = run_lathe({"sft", "--model", (dir / "model").string(), "--dataset", (dir / "train.jsonl").string(),
                            "--output_dir", (dir / "out").string(), "--max_steps", "1", "--train_type", "full",
                            "--per_device_train_batch_size", "2", "--external_plugins", kExample.string(),
                            "--agent_template", "glm4_example"},
                           "", env);
  EXPECT_EQ(trained.exit_code, 0) << trained.err;
  EXPECT_NE(trained.err.find("train dataset: 2 rows"), std::string::npos) << trained.err;
}

}  // namespace
}  // namespace lathe::testing
