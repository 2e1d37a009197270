#pragma once
// Chat templates in SWIFT's shape. A template renders a conversation as a list of contexts, text
// pieces tagged RESPONSE (assistant text), SUFFIX (the end-of-turn text after a response) or OTHER
// (prefix, system, prompts, separators, tool results); loss scales and labels are built from the
// tags (plugins.md §3).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lathe {

class Tokenizer;

enum class ContextType : uint8_t { Response, Suffix, Other };

struct Context {
  std::string text;
  ContextType type = ContextType::Other;
  int round = -1;  // index of the assistant round a Response/Suffix belongs to; -1 otherwise
};

struct Message {
  std::string role;     // system | user | assistant | tool_call | tool_response
  std::string content;
  std::optional<bool> loss;          // per-message override (plugins.md §3)
  std::optional<double> loss_scale;  // per-message weight
};

struct Conversation {
  std::vector<Message> messages;
  nlohmann::json tools;  // OpenAI-style function specs, or null
};

// SWIFT's template meta. Placeholders: {{SYSTEM}}, {{QUERY}}, {{RESPONSE}}. Special tokens are
// written as text (e.g. "<|im_start|>"); the tokenizer matches them before pre-tokenization.
struct TemplateSpec {
  std::string name;
  std::string prefix;                        // once, before everything (without a system message)
  std::string prompt;                        // each user turn, contains {{QUERY}}
  std::string chat_sep;                      // after an assistant response that is not the last
  std::string suffix;                        // after the last assistant response
  std::optional<std::string> system_prefix;  // prefix used when there is a system message
  std::optional<std::string> default_system;
  std::vector<std::string> stop_words;
  std::string agent_template = "react_en";
  bool thinking = false;                     // qwen3: thinking mode (no empty think block)
};

struct Encoded {
  std::vector<int32_t> input_ids;
  std::vector<ContextType> types;   // per token
  std::vector<int32_t> context_of;  // per token: index into the rendered contexts
  std::vector<Context> contexts;
};

class Template {
 public:
  explicit Template(TemplateSpec spec);
  // chatml, qwen2_5, qwen3, qwen3_nothink, llama3, mistral, default, raw.
  static Template builtin(const std::string& name);
  static std::vector<std::string> builtin_names();
  // The template to use for a model folder: its tokenizer_config.json / config.json decide.
  static std::string name_for_model(const std::string& model_dir);

  const TemplateSpec& spec() const { return spec_; }

  // add_generation_prompt: the conversation ends with a user turn and the rendering stops where
  // the assistant's answer would begin. `system` overrides the default system (not a message).
  std::vector<Context> render(const Conversation& conversation, bool add_generation_prompt,
                              const std::optional<std::string>& system = std::nullopt) const;
  std::string render_text(const Conversation& conversation, bool add_generation_prompt,
                          const std::optional<std::string>& system = std::nullopt) const;
  // Each context is tokenized on its own (without post-processor specials) and concatenated.
  Encoded encode(const Tokenizer& tokenizer, const Conversation& conversation,
                 bool add_generation_prompt,
                 const std::optional<std::string>& system = std::nullopt) const;

 private:
  TemplateSpec spec_;
};

}  // namespace lathe
