#pragma once
// What Split, Replace and Metaspace search for: a literal string or a regular expression. Hugging
// Face compiles its regexes with Oniguruma; PCRE2 with UTF and Unicode properties (UCP) accepts the
// patterns real tokenizers use and matches them the same way.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe::tokenizer {

class Section;

class Pattern {
 public:
  static Pattern literal(std::string text);
  static Pattern regex(const std::string& expression, std::string_view where);
  // {"String": "..."} or {"Regex": "..."}, as tokenizer.json writes them.
  static Pattern from_json(const Section& section);

  Pattern(Pattern&&) noexcept;
  Pattern& operator=(Pattern&&) noexcept;
  ~Pattern();

  // Calls on_match(begin, end) for each non-overlapping, non-empty match, left to right.
  // `text` must be valid UTF-8.
  void for_each_match(std::string_view text,
                      const std::function<void(std::size_t, std::size_t)>& on_match) const;

 private:
  Pattern() = default;
  std::string literal_;
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace lathe::tokenizer

LATHE_API_END
