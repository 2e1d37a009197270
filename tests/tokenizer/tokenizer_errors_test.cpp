// Bad tokenizer files give one lathe::Error that names the file and what was wrong; and the small
// behaviours the corpus test does not pin down (vocabulary queries, invalid UTF-8 input).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lathe/common/error.h"
#include "lathe/tokenizer/tokenizer.h"
#include "tokenizer/reference.h"
#include "support/errors.h"

namespace lathe::test {
namespace {
using lathe::testing::error_of;
namespace fs = std::filesystem;


fs::path scratch_dir() {
  const fs::path dir = fs::path(LATHE_BINARY_DIR) / "tokenizer" / "errors";
  fs::create_directories(dir);
  return dir;
}

fs::path write(const std::string& name, const std::string& content) {
  const fs::path file = scratch_dir() / name;
  std::ofstream(file) << content;
  return file;
}

const std::string kTinyModel =
    R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

TEST(TokenizerErrors, MissingFolderOrFileIsNamed) {
  const fs::path missing = scratch_dir() / "no-such-model";
  EXPECT_NE(error_of([&] { Tokenizer::from_file(missing); }).find(missing.string()), std::string::npos);
  const fs::path empty = scratch_dir() / "empty-model";
  fs::create_directories(empty);
  const std::string message = error_of([&] { Tokenizer::from_file(empty); });
  EXPECT_NE(message.find(empty.string()), std::string::npos) << message;
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
}

TEST(TokenizerErrors, InvalidJsonNamesTheFile) {
  const fs::path file = write("broken.json", "{\"model\": {");
  const std::string message = error_of([&] { Tokenizer::from_file(file); });
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("invalid JSON"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnknownModelTypeNamesFileAndField) {
  const fs::path file = write("wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  const std::string message = error_of([&] { Tokenizer::from_file(file); });
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("model.type"), std::string::npos) << message;
  EXPECT_NE(message.find("WordPiece"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnsupportedComponentsAndBadFieldsNameTheirPath) {
  const auto message_for = [](const std::string& json) { return error_of([&] { Tokenizer::from_json(json, "t.json"); }); };
  EXPECT_NE(message_for("{" + kTinyModel + R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Nope"}]}})")
                .find("t.json: pre_tokenizer.pretokenizers[0].type: unsupported pre_tokenizer 'Nope'"),
            std::string::npos);
  EXPECT_NE(message_for("{" + kTinyModel + R"(, "normalizer": {"type": "Replace", "pattern": {"Regex": "("}, "content": ""}})")
                .find("t.json: normalizer.pattern.Regex: invalid regex"),
            std::string::npos);
  EXPECT_NE(message_for(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})").find("t.json: model.merges[0]"),
            std::string::npos);
  EXPECT_NE(message_for("[1, 2]").find("t.json"), std::string::npos);
  EXPECT_NE(message_for("{" + kTinyModel + R"(, "decoder": {"type": "WordPiece"}})").find("decoder.type"), std::string::npos);
}

TEST(Tokenizer, TinyModelMergesAndAnswersVocabularyQueries) {
  const Tokenizer tokenizer = Tokenizer::from_json(
      "{" + kTinyModel +
      R"(, "added_tokens": [{"id": 3, "content": "<eos>", "special": true, "normalized": false}]})");
  EXPECT_EQ(tokenizer.encode("abab<eos>a"), (std::vector<int32_t>{2, 2, 3, 0}));
  EXPECT_EQ(tokenizer.vocab_size(), 4);
  EXPECT_EQ(tokenizer.token_to_id("ab"), 2);
  EXPECT_EQ(tokenizer.token_to_id("<eos>"), 3);
  EXPECT_EQ(tokenizer.id_to_token(2), "ab");
  EXPECT_EQ(tokenizer.id_to_token(99), std::nullopt);
  EXPECT_TRUE(tokenizer.is_special(3));
  EXPECT_FALSE(tokenizer.is_special(2));
  // No decoder: Hugging Face joins the tokens with spaces.
  EXPECT_EQ(tokenizer.decode(std::vector<int32_t>{2, 0, 3}), "ab a <eos>");
  EXPECT_EQ(tokenizer.decode(std::vector<int32_t>{2, 0, 3}, true), "ab a");
}

TEST(Tokenizer, InvalidUtf8InputIsEncodedAsReplacementCharacters) {
  const Reference* qwen = reference("qwen3");
  ASSERT_NE(qwen, nullptr);
  const Tokenizer tokenizer = Tokenizer::from_file(qwen->tokenizer_json);
  EXPECT_EQ(tokenizer.encode("a\xff" "b\xc3"), tokenizer.encode("a\xEF\xBF\xBD" "b\xEF\xBF\xBD"));
  // Each robot emoji is several byte-level tokens: the stream holds back the partial character.
  Tokenizer::StreamDecoder stream(tokenizer);
  std::string streamed;
  for (const int32_t id : tokenizer.encode("\xF0\x9F\xA4\x96\xF0\x9F\xA4\x96")) streamed += stream.push(id);
  EXPECT_EQ(streamed + stream.finish(), "\xF0\x9F\xA4\x96\xF0\x9F\xA4\x96");
}

}  // namespace
}  // namespace lathe::test
