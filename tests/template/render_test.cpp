// Rendering rules, checked against hand-written expected contexts (SWIFT's shape: prefix or
// system prefix once; per round the prompt, the response, then chat_sep or suffix).
#include <gtest/gtest.h>

#include "lathe/common/error.h"
#include "template/template_test_util.h"

namespace lathe::test {
namespace {

using T = ContextType;

struct Expected {
  std::string text;
  ContextType type;
  int round = -1;
};

void expect_contexts(const std::vector<Context>& actual, const std::vector<Expected>& expected) {
  ASSERT_EQ(actual.size(), expected.size()) << [&] {
    std::string listing;
    for (const Context& c : actual) listing += "[" + visible(c.text) + "] ";
    return listing;
  }();
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i].text, expected[i].text) << "context " << i;
    EXPECT_EQ(actual[i].type, expected[i].type) << "context " << i << ": " << actual[i].text;
    EXPECT_EQ(actual[i].round, expected[i].round) << "context " << i << ": " << actual[i].text;
  }
}

Conversation two_rounds(bool with_system) {
  std::vector<Message> messages;
  if (with_system) messages.push_back(msg("system", "Be brief."));
  for (auto m : {msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2"),
                 msg("assistant", "A2")}) {
    messages.push_back(m);
  }
  return chat(messages);
}

TEST(TemplateRender, ChatmlContextTypesPerRound) {
  expect_contexts(Template::builtin("chatml").render(two_rounds(true), false),
                  {{"<|im_start|>system\nBe brief.<|im_end|>\n", T::Other},
                   {"<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n", T::Other},
                   {"A1", T::Response, 0},
                   {"<|im_end|>\n", T::Suffix, 0},
                   {"<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n", T::Other},
                   {"A2", T::Response, 1},
                   {"<|im_end|>\n", T::Suffix, 1}});
}

TEST(TemplateRender, Llama3ContextTypesPerRound) {
  const std::string user = "<|start_header_id|>user<|end_header_id|>\n\n";
  const std::string assistant = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  expect_contexts(Template::builtin("llama3").render(two_rounds(false), false),
                  {{"<|begin_of_text|>", T::Other},
                   {user + "Q1" + assistant, T::Other},
                   {"A1", T::Response, 0},
                   {"<|eot_id|>", T::Suffix, 0},
                   {user + "Q2" + assistant, T::Other},
                   {"A2", T::Response, 1},
                   {"<|eot_id|>", T::Suffix, 1}});
}

TEST(TemplateRender, MistralFoldsTheSystemIntoTheFirstQuery) {
  const Template mistral = Template::builtin("mistral");
  EXPECT_EQ(mistral.render_text(two_rounds(true), false),
            "<s>[INST] Be brief.\n\nQ1 [/INST]A1</s>[INST] Q2 [/INST]A2</s>");
  EXPECT_EQ(mistral.render_text(two_rounds(false), false),
            "<s>[INST] Q1 [/INST]A1</s>[INST] Q2 [/INST]A2</s>");
  expect_contexts(mistral.render(chat({msg("user", "Q")}), true),
                  {{"<s>", T::Other}, {"[INST] Q [/INST]", T::Other}});
}

TEST(TemplateRender, GenerationPromptEndsWhereTheAnswerBegins) {
  Conversation conversation = chat({msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2")});
  expect_contexts(Template::builtin("qwen3").render(conversation, true),
                  {{"<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n", T::Other},
                   {"A1", T::Response, 0},
                   {"<|im_end|>\n", T::Suffix, 0},
                   {"<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n", T::Other}});
  // Non-thinking mode: the empty think block is part of the prompt, not of an answer.
  std::vector<Context> nothink = Template::builtin("qwen3_nothink").render(conversation, true);
  ASSERT_FALSE(nothink.empty());
  EXPECT_EQ(nothink.back().text, "<think>\n\n</think>\n\n");
  EXPECT_EQ(nothink.back().type, T::Other);
}

TEST(TemplateRender, Qwen3FinalAnswerCarriesItsThinkBlockAsResponse) {
  Conversation conversation =
      chat({msg("user", "Q1"), msg("assistant", "<think>\nr1\n</think>\n\nA1"), msg("user", "Q2"),
            msg("assistant", "A2")});
  std::vector<Context> contexts = Template::builtin("qwen3").render(conversation, false);
  ASSERT_EQ(contexts.size(), 6u);
  EXPECT_EQ(contexts[1].text, "A1");  // reasoning before the last query is dropped
  EXPECT_EQ(contexts[4].text, "<think>\n\n</think>\n\nA2");
  EXPECT_EQ(contexts[4].type, T::Response);
}

TEST(TemplateRender, Qwen3ToolCallsBelongToTheFinalAnswer) {
  Conversation conversation =
      chat({msg("user", "Weather?"), msg("assistant", "Checking."), msg("tool_call", "{}")});
  std::vector<Context> contexts = Template::builtin("qwen3").render(conversation, false);
  ASSERT_EQ(contexts.size(), 4u);
  EXPECT_EQ(contexts[1].text, "<think>\n\n</think>\n\nChecking.\n");
  EXPECT_EQ(contexts[2].text, "{}");
  EXPECT_EQ(contexts[2].type, T::Response);
}

TEST(TemplateRender, DefaultSystemAndItsOverrides) {
  const Template qwen = Template::builtin("qwen2_5");
  const std::string default_block =
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
      "assistant.<|im_end|>\n";
  const std::string prompt = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n";
  Conversation plain = chat({msg("user", "Q")});
  EXPECT_EQ(qwen.render_text(plain, true), default_block + prompt);
  EXPECT_EQ(qwen.render_text(plain, true, "Custom."),
            "<|im_start|>system\nCustom.<|im_end|>\n" + prompt);
  // An empty system means none.
  EXPECT_EQ(qwen.render_text(plain, true, ""), prompt);
  // A system message in the conversation wins over the argument.
  Conversation with_system = chat({msg("system", "Mine."), msg("user", "Q")});
  EXPECT_EQ(qwen.render_text(with_system, true, "Custom."),
            "<|im_start|>system\nMine.<|im_end|>\n" + prompt);
}

TEST(TemplateRender, RawAddsNothing) {
  const Template raw = Template::builtin("raw");
  std::vector<Context> contexts = raw.render(chat({msg("user", "The quick brown fox")}), true);
  expect_contexts(contexts, {{"The quick brown fox", T::Other}});
  expect_contexts(raw.render(chat({msg("user", "2+2="), msg("assistant", "4")}), false),
                  {{"2+2=", T::Other}, {"4", T::Response, 0}});
  EXPECT_TRUE(raw.spec().add_special_tokens);
}

TEST(TemplateRender, DefaultTemplateEndsAnswersWithTheEosToken) {
  TemplateSpec spec = Template::builtin("default").spec();
  spec.eos_token = "</s>";
  Conversation conversation = chat({msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2"),
                                    msg("assistant", "A2")});
  EXPECT_EQ(Template(spec).render_text(conversation, false),
            "You are a helpful assistant.\n\n### Human:\nQ1\n\n### Assistant:\nA1\n\n"
            "### Human:\nQ2\n\n### Assistant:\nA2</s>");
}

TEST(TemplateRender, ToolMessages) {
  Conversation conversation =
      chat({msg("user", "Weather in Paris?"), msg("assistant", "Let me check."),
            msg("tool_call", R"({"name": "weather", "arguments": {"city": "Paris"}})"),
            msg("tool_response", R"({"temperature": 21})"), msg("assistant", "It is 21 °C.")});
  const std::string user = "<|im_start|>user\n";
  const std::string turn = "<|im_end|>\n<|im_start|>assistant\n";
  expect_contexts(Template::builtin("qwen2_5").render(conversation, false, ""),
                  {{user + "Weather in Paris?" + turn, T::Other},
                   {"Let me check.\n", T::Response, 0},
                   {R"({"name": "weather", "arguments": {"city": "Paris"}})", T::Response, 0},
                   {"<|im_end|>\n", T::Suffix, 0},
                   {user + R"({"temperature": 21})" + turn, T::Other},
                   {"It is 21 °C.", T::Response, 1},
                   {"<|im_end|>\n", T::Suffix, 1}});
}

TEST(TemplateRender, ResponsesCarryTheirLossOverrides) {
  Conversation conversation = two_rounds(false);
  conversation.messages[1].loss = false;
  conversation.messages[3].loss_scale = 2.0;
  std::vector<Context> contexts = Template::builtin("chatml").render(conversation, false);
  ASSERT_EQ(contexts.size(), 6u);
  EXPECT_EQ(contexts[1].loss, std::optional<bool>(false));
  EXPECT_FALSE(contexts[1].loss_scale.has_value());
  EXPECT_FALSE(contexts[4].loss.has_value());
  EXPECT_EQ(contexts[4].loss_scale, std::optional<double>(2.0));
}

TEST(TemplateRender, PlaceholdersInMessagesStayText) {
  Conversation conversation = chat({msg("system", "{{QUERY}}"), msg("user", "{{SYSTEM}} {{EOS}}")});
  EXPECT_EQ(Template::builtin("mistral").render_text(conversation, true),
            "<s>[INST] {{QUERY}}\n\n{{SYSTEM}} {{EOS}} [/INST]");
}

TEST(TemplateRender, EveryBuiltinRendersAMultiTurnConversation) {
  for (const std::string& name : Template::builtin_names()) {
    const Template t = Template::builtin(name);
    std::vector<Context> contexts = t.render(two_rounds(true), false);
    std::string text = t.render_text(two_rounds(true), false);
    std::string joined;
    int responses = 0;
    for (const Context& c : contexts) {
      joined += c.text;
      EXPECT_FALSE(c.text.empty()) << name;
      if (c.type == T::Response) ++responses;
    }
    EXPECT_EQ(joined, text) << name;
    EXPECT_EQ(responses, 2) << name;
    for (const char* part : {"Be brief.", "Q1", "A1", "Q2", "A2"}) {
      EXPECT_NE(text.find(part), std::string::npos) << name << " lost '" << part << "'";
    }
  }
}

TEST(TemplateRender, MistakesAreReported) {
  const Template chatml = Template::builtin("chatml");
  auto expect_error = [&](const Conversation& conversation, bool generation_prompt,
                          const std::string& fragment) {
    try {
      chatml.render(conversation, generation_prompt);
      ADD_FAILURE() << "expected an error containing '" << fragment << "'";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    }
  };
  expect_error(chat({msg("user", "Q"), msg("assistant", "A")}), true, "must end with a user");
  expect_error(chat({msg("user", "Q"), msg("robot", "A")}), false, "message 1: unknown role 'robot'");
  expect_error(chat({msg("user", "Q"), msg("system", "S")}), false, "message 1: a system message");
  expect_error(chat({msg("assistant", "A")}), false, "message 0: an assistant message must follow");
  expect_error(chat({msg("user", "Q"), msg("user", "Q")}), false, "two user messages in a row");
  expect_error(chat({}), false, "no user message");

  try {
    Template::builtin("vicuna");
    ADD_FAILURE() << "unknown template accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("chatml, default, llama3"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace lathe::test
