// A tool registered as "word_count": {"text": "..."} -> the number of whitespace-separated words.
// The built-in tool_call scheduler runs it when the policy calls it by name.
//
//   lathe rlhf --rlhf_type grpo ... --multi_turn_scheduler tool_call --agent_template hermes \
//       --external_plugins examples/plugins/tool/word_count.cpp
#include <lathe/plugin.h>
#include <lathe/plugin/tool.h>

#include <sstream>
#include <string>

namespace {

class WordCount : public lathe::Tool {
 public:
  std::string call(const nlohmann::json& arguments) override {
    if (!arguments.is_object() || !arguments.contains("text") || !arguments["text"].is_string())
      return "error: expected {\"text\": \"...\"}";
    std::istringstream words(arguments["text"].get<std::string>());
    int count = 0;
    for (std::string word; words >> word;) ++count;
    return std::to_string(count);
  }
};

}  // namespace

LATHE_PLUGIN() {
  lathe::tool_registry().add("word_count", "the number of words of {\"text\": ...} (example plugin)",
                             [](const lathe::PluginContext&) { return std::make_shared<WordCount>(); });
}
