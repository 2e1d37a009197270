#include "lathe/tokenizer/pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/config.h"
#include "lathe/tokenizer/text.h"

namespace lathe::tokenizer {

struct Pattern::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

namespace {

// Match data and a JIT stack per thread: encode_batch matches the same patterns on every core, and
// allocating them per call would cost more than the matching. The default 32 KiB JIT stack is too
// small for lookaheads over long whitespace runs.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& match_scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

Pattern::Pattern(Pattern&&) noexcept = default;
Pattern& Pattern::operator=(Pattern&&) noexcept = default;
Pattern::~Pattern() = default;

Pattern Pattern::literal(std::string text) {
  Pattern pattern;
  pattern.literal_ = std::move(text);
  return pattern;
}

Pattern Pattern::regex(const std::string& expression, std::string_view where) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expression.data()), expression.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    fail("{}: invalid regex at offset {}: {}", where, error_offset, reinterpret_cast<char*>(message));
  }
  Pattern pattern;
  pattern.compiled_ = std::make_unique<Compiled>();
  pattern.compiled_->code = code;
  pattern.compiled_->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return pattern;
}

Pattern Pattern::from_json(const Section& section) {
  if (section.has("String")) return literal(section.string("String"));
  if (section.has("Regex")) {
    return regex(section.string("Regex"), section.at("Regex").where());
  }
  section.fail_here("expected {\"String\": ...} or {\"Regex\": ...}");
}

void Pattern::for_each_match(std::string_view text,
                             const std::function<void(std::size_t, std::size_t)>& on_match) const {
  if (!compiled_) {
    if (literal_.empty()) return;
    for (std::size_t pos = text.find(literal_); pos != std::string_view::npos;
         pos = text.find(literal_, pos + literal_.size())) {
      on_match(pos, pos + literal_.size());
    }
    return;
  }
  MatchScratch& scratch = match_scratch();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t start = 0;
  while (start <= text.size()) {
    const int result =
        compiled_->jit
            ? pcre2_jit_match(compiled_->code, subject, text.size(), start, 0, scratch.data, scratch.context)
            : pcre2_match(compiled_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, scratch.data,
                          scratch.context);
    if (result == PCRE2_ERROR_NOMATCH) return;
    if (result < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(result, message, sizeof message);
      fail("regex match failed: {}", reinterpret_cast<char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
    const std::size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      on_match(begin, end);
      start = end;
    } else {  // an empty match: step over one character
      if (begin >= text.size()) return;
      start = begin + utf8_length(static_cast<unsigned char>(text[begin]));
    }
  }
}

}  // namespace lathe::tokenizer
