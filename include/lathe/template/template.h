#pragma once
// Chat templates in SWIFT's shape. A template renders a conversation as a list of contexts, text
// pieces tagged RESPONSE (assistant text), SUFFIX (the end-of-turn text after a response) or OTHER
// (prefix, system, prompts, separators, tool results); loss scales and labels are built from the
// tags (docs/plugins.md).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class Tokenizer;
class AgentTemplate;  // lathe/template/agent_template.h

enum class ContextType : uint8_t { Response, Suffix, Other };

struct Context {
  std::string text;
  ContextType type = ContextType::Other;
  int round = -1;  // index of the assistant round a Response/Suffix belongs to; -1 otherwise
  // A Response carries its message's per-message override (docs/plugins.md).
  std::optional<bool> loss;
  std::optional<double> loss_scale;
};

// A piece of rendered text with its training weight: what a loss-scale strategy makes of a context
// (0: not trained), and what the encoder turns into per-token labels and weights.
struct WeightedText {
  std::string text;
  ContextType type = ContextType::Other;
  double weight = 0.0;
};

struct Message {
  std::string role;     // system | user | assistant | tool_call | tool_response
  std::string content;
  std::optional<bool> loss;          // per-message override (docs/plugins.md)
  std::optional<double> loss_scale;  // per-message weight
};

struct Conversation {
  std::vector<Message> messages;
  nlohmann::json tools;  // OpenAI-style function specs, or null
};

// SWIFT's template meta. Placeholders: {{SYSTEM}}, {{QUERY}}, {{EOS}} (eos_token). Special tokens
// are written as text (e.g. "<|im_start|>"); the tokenizer matches them before pre-tokenization.
// The rules, and where they differ from the models' own Jinja templates: docs/templates.md.
struct TemplateSpec {
  std::string name;
  std::string prefix;                        // once, before everything (without a system message)
  std::string prompt;                        // each user turn, contains {{QUERY}}
  std::string chat_sep;                      // after an assistant response that is not the last
  std::string suffix;                        // after the last assistant response
  std::optional<std::string> system_prefix;  // prefix used when there is a system message
  // Templates without a system block (Mistral) fold the system into the first query with this
  // pattern ({{SYSTEM}} and {{QUERY}}); used only when system_prefix is absent.
  std::optional<std::string> system_in_query;
  std::optional<std::string> default_system;
  std::vector<std::string> stop_words;
  std::string agent_template = "react_en";
  // The turn tool results form when the agent template writes them as their own turn
  // (ToolResultPlacement::ToolTurn), with {{QUERY}}; the user prompt when absent.
  std::optional<std::string> tool_prompt;
  // SWIFT's response_prefix: written after the generation prompt (qwen3_nothink: an empty think
  // block, as Qwen3's template does for enable_thinking=false).
  std::string response_prefix;
  // Qwen3's reasoning rule: answers before the last user query lose their <think> block; answers
  // after it keep theirs in the form "<think>\n...\n</think>\n\n", and the final answer always
  // has one (empty when it has no reasoning).
  bool think_blocks = false;
  // The first context is tokenized with the tokenizer's post-processor (SWIFT's auto_add_bos:
  // templates whose prefix does not write the BOS itself, and raw).
  bool add_special_tokens = false;
  std::string eos_token;  // replaces {{EOS}}; Template::for_model reads it from the model folder
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
  // chatml, qwen2_5, qwen3, qwen3_nothink, llama3, mistral, default, raw. An unknown name is an
  // error listing these.
  static Template builtin(const std::string& name);
  static std::vector<std::string> builtin_names();
  // The template to use for a model folder: config.json's model_type, then tokenizer_config.json's
  // chat_template, decide; "default" when neither says (rule in docs/templates.md).
  static std::string name_for_model(const std::string& model_dir);
  // builtin(name, or name_for_model when empty) with the folder's eos token (tokenizer_config.json)
  // filled in and added to the stop words.
  static Template for_model(const std::string& model_dir, const std::string& name = "");

  const TemplateSpec& spec() const { return spec_; }

  // The agent template that presents Conversation::tools in the system text, writes tool_call
  // messages (RESPONSE) and tool_response messages (OTHER). Callers build it with
  // make_agent_template(arguments, spec().name) (lathe/plugin/agent_template.h). Without one,
  // tool messages render as plain text and a conversation with tools is an error.
  void set_agent_template(std::shared_ptr<const AgentTemplate> agent);
  const std::shared_ptr<const AgentTemplate>& agent_template() const { return agent_; }
  // The spec's stop words, then the agent template's (e.g. "Observation:").
  std::vector<std::string> stop_words() const;

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
  std::shared_ptr<const AgentTemplate> agent_;
};

}  // namespace lathe

LATHE_API_END
