// Outcome reward models (docs/plugins.md). The built-ins' exact rules:
//
// math        1.0 when the last \boxed{...} of the completion equals the reference's (its last
//             \boxed{...}, or the whole reference without one) under math_answers_equal; 0.0
//             otherwise, including a completion with no complete \boxed{...}.
// accuracy    1.0 when the final answers are equal under math_answers_equal. A text's final answer
//             is the content of its first <answer>...</answer> (as ms-swift's), else the whole text
//             (where ms-swift's math_verify extracts only LaTeX); inside it, the
//             last \boxed{...} when there is one.
// format      1.0 when the whole completion matches (?s)<think>.*?</think>\s*<answer>.*?</answer>
//             with nothing before or after (not even a newline).
// react_format  ms-swift's ReActFormat: 1.0 when (?sm)^<think>.*?</think>\s*Action:.*?Action Input:.*?$
//             matches from the start of the completion (what follows the matched line is free).
// toolbench   1.0 when the last Action of the completion names the reference's last Action and
//             their Action Inputs have key-value F1 = 1 (JSON objects; otherwise the trimmed texts
//             must be equal); 0.0 otherwise, including when either has no Action.
// cosine      Open-R1's cosine-scaled correctness: with t the length and L = --cosine_max_len (0:
//             --max_completion_length), reward = v_L + (v_0 - v_L) * (1 + cos(pi t / L)) / 2, where
//             v_0 / v_L are the min_len / max_len values for a correct (accuracy rule) or a wrong
//             answer. So short correct answers score highest (1.0) and short wrong ones lowest
//             (-0.5). As in ms-swift, t is not clamped: past L the cosine rises again.
// repetition  (1 - unique n-grams / n-grams) * --repetition_max_penalty over the words of
//             text.lower().split() as Python splits them (Unicode spaces and case; n =
//             --repetition_n_grams); SWIFT's sign convention: the penalty is given negative (default
//             -1.0) so the reward is <= 0; 0 when there are fewer than n words.
// soft_overlong  with L the length, M = --soft_max_length (0: --max_completion_length) and C =
//             --soft_cache_length (below M): 0 when L <= M - C, else (M - C - L) / C: -1 at M and
//             lower beyond, as ms-swift (DAPO's paper stops at -1).
//
// Lengths are RewardInput::completion_tokens when the caller knows them, else the number of
// whitespace-separated words.
#include "lathe/plugin/orm.h"

#include <utf8proc.h>
#include "lathe/plugin/answer_checking.h"

#include <cmath>
#include <cstdlib>
#include <numbers>
#include <set>
#include <sstream>
#include <string_view>

#include "lathe/common/format.h"
#include "lathe/tokenizer/pattern.h"
#include "lathe/tokenizer/text.h"

namespace lathe {

namespace {

using nlohmann::json;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string trim(std::string_view text) {
  std::size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  return std::string(text.substr(begin, end - begin));
}

// The index just past the '}' closing the '{' at `open`, or npos when it is never closed.
std::size_t skip_group(std::string_view text, std::size_t open) {
  int depth = 0;
  for (std::size_t i = open; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      ++i;  // \{ and \} are literal braces
    } else if (text[i] == '{') {
      ++depth;
    } else if (text[i] == '}' && --depth == 0) {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Removes every `command` (e.g. "\left") that is not the start of a longer command ("\leftarrow").
std::string remove_command(std::string text, std::string_view command) {
  std::string result;
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, command.size(), command) == 0 &&
        (i + command.size() >= text.size() || !is_letter(text[i + command.size()]) || !is_letter(command.back()))) {
      i += command.size();
    } else {
      result += text[i++];
    }
  }
  return result;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// One argument of a LaTeX command at `pos`: a {group}, a \command or a single character.
// Returns its text without braces and moves `pos` past it; nullopt when there is none.
std::optional<std::string> read_argument(std::string_view text, std::size_t& pos) {
  if (pos >= text.size()) return std::nullopt;
  if (text[pos] == '{') {
    std::size_t end = skip_group(text, pos);
    if (end == std::string_view::npos) return std::nullopt;
    std::string argument(text.substr(pos + 1, end - pos - 2));
    pos = end;
    return argument;
  }
  std::size_t end = pos + 1;
  if (text[pos] == '\\') {
    while (end < text.size() && is_letter(text[end])) ++end;
  }
  std::string argument(text.substr(pos, end - pos));
  pos = end;
  return argument;
}

// \frac12, \frac1{2}, \frac{1}2 -> \frac{1}{2}, inside nested arguments too.
std::string brace_fractions(std::string_view text) {
  static constexpr std::string_view frac = "\\frac";
  std::string result;
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, frac.size(), frac) == 0 &&
        (i + frac.size() >= text.size() || !is_letter(text[i + frac.size()]))) {
      std::size_t pos = i + frac.size();
      auto numerator = read_argument(text, pos);
      auto denominator = numerator ? read_argument(text, pos) : std::nullopt;
      if (numerator && denominator) {
        result += "\\frac{" + brace_fractions(*numerator) + "}{" + brace_fractions(*denominator) + "}";
        i = pos;
        continue;
      }
    }
    result += text[i++];
  }
  return result;
}

// Removes a trailing \text{...}: a unit after a value ("5\text{cm}" -> "5"), or the wrapper around
// a whole textual answer ("\text{Evelyn}" -> "Evelyn"). Returns false when there is none.
bool strip_trailing_text(std::string& text) {
  static constexpr std::string_view command = "\\text{";
  for (std::size_t at = text.rfind(command); at != std::string::npos;
       at = at == 0 ? std::string::npos : text.rfind(command, at - 1)) {
    std::size_t open = at + command.size() - 1;
    if (skip_group(text, open) != text.size()) continue;
    text = at == 0 ? text.substr(open + 1, text.size() - open - 2) : text.substr(0, at);
    return true;
  }
  return false;
}

std::optional<double> parse_plain_number(std::string text) {
  // Thousands separators: 1,234,567.5
  if (text.find(',') != std::string::npos) {
    std::size_t digits_since_comma = 0;
    bool first_group = true, grouped = true;
    std::size_t start = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
    std::size_t end = text.find('.') == std::string::npos ? text.size() : text.find('.');
    for (std::size_t i = start; i < end && grouped; ++i) {
      if (text[i] == ',') {
        grouped = first_group ? digits_since_comma >= 1 && digits_since_comma <= 3 : digits_since_comma == 3;
        first_group = false;
        digits_since_comma = 0;
      } else {
        ++digits_since_comma;
      }
    }
    if (!grouped || digits_since_comma != 3) return std::nullopt;
    text = replace_all(text, ",", "");
  }
  if (text.empty() || text.find_first_not_of("0123456789.+-eE") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

// A normalised answer as a number: 12, -0.5, 1,000, 3/4, \frac{3}{4}, -\frac{3}{4}.
std::optional<double> parse_number(std::string text) {
  double sign = 1.0;
  if (text.rfind("-\\frac{", 0) == 0) {
    sign = -1.0;
    text.erase(0, 1);
  }
  if (text.rfind("\\frac{", 0) == 0) {
    std::size_t pos = 5;
    auto numerator = read_argument(text, pos);
    auto denominator = numerator ? read_argument(text, pos) : std::nullopt;
    if (!denominator || pos != text.size()) return std::nullopt;
    text = *numerator + "/" + *denominator;
  }
  if (std::size_t slash = text.find('/'); slash != std::string::npos) {
    auto numerator = parse_plain_number(text.substr(0, slash));
    auto denominator = parse_plain_number(text.substr(slash + 1));
    if (!numerator || !denominator || *denominator == 0.0) return std::nullopt;
    return sign * *numerator / *denominator;
  }
  auto value = parse_plain_number(text);
  if (!value) return std::nullopt;
  return sign * *value;
}

// The content of the first <answer>...</answer> (ms-swift's re.search), or nullopt.
std::optional<std::string> answer_tag(const std::string& text) {
  std::size_t open = text.find("<answer>");
  if (open == std::string::npos) return std::nullopt;
  std::size_t begin = open + 8;
  std::size_t close = text.find("</answer>", begin);
  if (close == std::string::npos) return std::nullopt;
  return text.substr(begin, close - begin);
}

// accuracy's final answer of a text (see the top of this file).
std::string final_answer(const std::string& text) {
  std::string answer = answer_tag(text).value_or(text);
  return last_boxed(answer).value_or(answer);
}

bool answers_correct(const RewardInput& input) {
  return math_answers_equal(final_answer(input.completion), final_answer(reference_answer(input.row)));
}

int64_t completion_length(const RewardInput& input) {
  if (input.completion_tokens) return *input.completion_tokens;
  std::istringstream words(input.completion);
  int64_t count = 0;
  for (std::string word; words >> word;) ++count;
  return count;
}

// Python's re.match: a match that begins at the start of the text.
bool matches_at_start(const tokenizer::Pattern& pattern, const std::string& text) {
  const std::string valid = tokenizer::is_valid_utf8(text) ? text : tokenizer::utf8_lossy(text);
  bool found = false;
  pattern.for_each_match(valid, [&](std::size_t begin, std::size_t) { found = found || begin == 0; });
  return found;
}

bool whole_match(const tokenizer::Pattern& pattern, const std::string& text) {
  const std::string valid = tokenizer::is_valid_utf8(text) ? text : tokenizer::utf8_lossy(text);
  bool whole = false;
  pattern.for_each_match(valid, [&](std::size_t begin, std::size_t end) {
    whole = whole || (begin == 0 && end == valid.size());
  });
  return whole;
}

// ---- ReAct ----

enum class ReactKeyword { Thought, Action, ActionInput, Observation, FinalAnswer };

struct ReactSection {
  ReactKeyword keyword;
  std::string content;  // trimmed
};

struct ReactText {
  std::string preamble;  // text before the first keyword, trimmed
  std::vector<ReactSection> sections;
};

// Splits a text at the lines that start (after indentation) with a ReAct keyword; a section's
// content is the rest of its line plus the following lines up to the next keyword line.
ReactText split_react(const std::string& text) {
  static const std::pair<std::string_view, ReactKeyword> keywords[] = {
      {"Thought:", ReactKeyword::Thought},         {"Action Input:", ReactKeyword::ActionInput},
      {"Action:", ReactKeyword::Action},           {"Observation:", ReactKeyword::Observation},
      {"Final Answer:", ReactKeyword::FinalAnswer}};
  ReactText result;
  std::string* current = &result.preamble;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::string_view rest(line);
    rest.remove_prefix(std::min(rest.size(), rest.find_first_not_of(" \t")));
    bool keyword_line = false;
    for (const auto& [word, keyword] : keywords) {
      if (rest.rfind(word, 0) == 0) {
        result.sections.push_back({keyword, std::string(rest.substr(word.size()))});
        current = &result.sections.back().content;
        keyword_line = true;
        break;
      }
    }
    if (!keyword_line) *current += "\n" + line;
  }
  result.preamble = trim(result.preamble);
  for (auto& section : result.sections) section.content = trim(section.content);
  return result;
}

struct ToolCall {
  std::string name;
  std::string arguments;
};

// The last Action and the Action Input after it.
std::optional<ToolCall> last_tool_call(const std::string& text) {
  const auto sections = split_react(text).sections;
  for (std::size_t i = sections.size(); i-- > 0;) {
    if (sections[i].keyword != ReactKeyword::Action) continue;
    ToolCall call{sections[i].content, ""};
    if (i + 1 < sections.size() && sections[i + 1].keyword == ReactKeyword::ActionInput) {
      call.arguments = sections[i + 1].content;
    }
    return call;
  }
  return std::nullopt;
}

// Key-value F1 of two JSON objects: a key matches when both have it with equal values.
double key_value_f1(const json& predicted, const json& reference) {
  if (predicted.empty() && reference.empty()) return 1.0;
  double matched = 0;
  for (const auto& [key, value] : predicted.items()) {
    if (reference.contains(key) && reference[key] == value) ++matched;
  }
  if (matched == 0) return 0.0;
  double precision = matched / predicted.size(), recall = matched / reference.size();
  return 2 * precision * recall / (precision + recall);
}

double tool_call_reward(const RewardInput& input) {
  auto predicted = last_tool_call(input.completion);
  auto reference = last_tool_call(reference_answer(input.row));
  if (!predicted || !reference || predicted->name != reference->name) return 0.0;
  json predicted_arguments = json::parse(predicted->arguments, nullptr, false);
  json reference_arguments = json::parse(reference->arguments, nullptr, false);
  double f1 = predicted_arguments.is_object() && reference_arguments.is_object()
                  ? key_value_f1(predicted_arguments, reference_arguments)
                  : (predicted->arguments == reference->arguments ? 1.0 : 0.0);
  return f1 == 1.0 ? 1.0 : 0.0;
}

// ---- length-shaped rewards ----

double cosine_reward(const RewardInput& input, const Arguments& a) {
  const int64_t max_len = a.cosine_max_len > 0 ? a.cosine_max_len : a.max_completion_length;
  const bool correct = answers_correct(input);
  const double at_zero = correct ? a.cosine_min_len_value_correct : a.cosine_min_len_value_wrong;
  const double at_max = correct ? a.cosine_max_len_value_correct : a.cosine_max_len_value_wrong;
  const double progress = static_cast<double>(completion_length(input)) / static_cast<double>(max_len);
  return at_max + (at_zero - at_max) * (1 + std::cos(progress * std::numbers::pi)) / 2;
}

// Python's str.isspace: the Unicode space separators and the control characters it counts.
bool is_unicode_space(utf8proc_int32_t c) {
  if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0x2028 || c == 0x2029) return true;
  return utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

// ms-swift's words: text.lower().split(), so Unicode case and spaces (utf8proc's simple
// lower-casing, which Python's differs from only for a few letters such as U+0130).
std::vector<std::string> lowercase_words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  for (utf8proc_ssize_t at = 0, size = static_cast<utf8proc_ssize_t>(text.size()); at < size;) {
    utf8proc_int32_t c = 0;
    const auto used = utf8proc_iterate(bytes + at, size - at, &c);
    if (used <= 0) {  // invalid UTF-8: one byte as it is
      word += text[static_cast<std::size_t>(at++)];
      continue;
    }
    at += used;
    if (is_unicode_space(c)) {
      if (!word.empty()) words.push_back(std::move(word)), word.clear();
      continue;
    }
    utf8proc_uint8_t encoded[4];
    const auto length = utf8proc_encode_char(utf8proc_tolower(c), encoded);
    word.append(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(length));
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

double repetition_reward(const std::string& completion, int64_t n, double max_penalty) {
  const auto words = lowercase_words(completion);
  if (static_cast<int64_t>(words.size()) < n) return 0.0;
  std::set<std::vector<std::string>> unique;
  const std::size_t total = words.size() - n + 1;
  for (std::size_t i = 0; i < total; ++i) unique.emplace(words.begin() + i, words.begin() + i + n);
  return (1.0 - static_cast<double>(unique.size()) / total) * max_penalty;
}

double soft_overlong_reward(int64_t length, int64_t max_len, int64_t cache) {
  const int64_t expected = max_len - cache;
  if (length <= expected) return 0.0;
  return static_cast<double>(expected - length) / static_cast<double>(cache);
}

// An ORM that scores each input on its own.
class PerCompletion : public OutcomeRewardModel {
 public:
  explicit PerCompletion(std::function<double(const RewardInput&)> reward) : reward_(std::move(reward)) {}
  std::vector<double> score(const std::vector<RewardInput>& inputs) override {
    std::vector<double> rewards;
    rewards.reserve(inputs.size());
    for (const auto& input : inputs) rewards.push_back(reward_(input));
    return rewards;
  }

 private:
  std::function<double(const RewardInput&)> reward_;
};

std::shared_ptr<OutcomeRewardModel> per_completion(std::function<double(const RewardInput&)> reward) {
  return std::make_shared<PerCompletion>(std::move(reward));
}

}  // namespace

std::string reference_answer(const json& row) {
  for (const char* column : {"solution", "answer", "response"}) {
    if (row.contains(column) && row[column].is_string()) return row[column].get<std::string>();
  }
  fail("reward: the row has no reference answer (a string column \"solution\", \"answer\" or \"response\"); "
       "its columns: {}", row.is_object() ? row.dump().substr(0, 200) : std::string("(not an object)"));
}

std::optional<std::string> last_boxed(const std::string& text) {
  static constexpr std::string_view command = "\\boxed{";
  std::size_t at = text.rfind(command);
  if (at == std::string::npos) return std::nullopt;
  std::size_t open = at + command.size() - 1;
  std::size_t end = skip_group(text, open);
  if (end == std::string_view::npos) return std::nullopt;
  return text.substr(open + 1, end - open - 2);
}

std::string normalize_math_answer(const std::string& answer) {
  std::string text = trim(answer);
  while (text.size() >= 2 && text.front() == '$' && text.back() == '$') text = trim(text.substr(1, text.size() - 2));
  for (std::string_view spacing : {"\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ "}) {
    text = remove_command(text, spacing);
  }
  text = replace_all(replace_all(text, "\\dfrac", "\\frac"), "\\tfrac", "\\frac");
  std::erase_if(text, is_space);
  text = brace_fractions(text);
  for (bool changed = true; changed;) {
    changed = false;
    while (!text.empty() && text.back() == '.') {
      text.pop_back();
      changed = true;
    }
    changed = strip_trailing_text(text) || changed;
  }
  return text;
}

bool math_answers_equal(const std::string& a, const std::string& b) {
  const std::string left = normalize_math_answer(a), right = normalize_math_answer(b);
  if (left == right) return !left.empty();
  auto x = parse_number(left), y = parse_number(right);
  return x && y && std::abs(*x - *y) <= 1e-6 * std::max(std::abs(*x), std::abs(*y));
}

Registry<OrmFactory>& orm_registry() {
  static Registry<OrmFactory> registry = [] {
    Registry<OrmFactory> built_ins("orm");
    built_ins.add("math", "1 when the last \\boxed{} equals the reference's (normalised LaTeX, numeric equality)",
                  [](const PluginContext&) {
                    return per_completion([](const RewardInput& input) {
                      auto predicted = last_boxed(input.completion);
                      if (!predicted) return 0.0;
                      const std::string reference = reference_answer(input.row);
                      return math_answers_equal(*predicted, last_boxed(reference).value_or(reference)) ? 1.0 : 0.0;
                    });
                  });
    built_ins.add("accuracy", "1 when the <answer>...</answer> (or whole text) equals the reference's",
                  [](const PluginContext&) {
                    return per_completion([](const RewardInput& input) { return answers_correct(input) ? 1.0 : 0.0; });
                  });
    built_ins.add("format", "1 when the completion is <think>...</think> <answer>...</answer>", [](const PluginContext&) {
      auto pattern = std::make_shared<tokenizer::Pattern>(tokenizer::Pattern::regex(
          "(?s)\\A<think>.*?</think>\\s*<answer>.*?</answer>\\z", "orm format"));
      return per_completion([pattern](const RewardInput& input) { return whole_match(*pattern, input.completion) ? 1.0 : 0.0; });
    });
    built_ins.add("react_format", "1 when the completion is <think>...</think> then Action: ... Action Input: ...",
                  [](const PluginContext&) {
                    auto pattern = std::make_shared<tokenizer::Pattern>(tokenizer::Pattern::regex(
                        "(?sm)\\A<think>.*?</think>\\s*Action:.*?Action Input:.*?$", "orm react_format"));
                    return per_completion([pattern](const RewardInput& input) {
                      return matches_at_start(*pattern, input.completion) ? 1.0 : 0.0;
                    });
                  });
    built_ins.add("toolbench", "1 when the last Action and its Action Input (JSON key-value F1 = 1) match the reference's",
                  [](const PluginContext&) { return per_completion(tool_call_reward); });
    built_ins.add("cosine", "accuracy shaped by length: short correct answers highest, short wrong ones lowest",
                  [](const PluginContext& context) {
                    if (context.arguments.cosine_max_len <= 0 && context.arguments.max_completion_length <= 0) {
                      fail("orm cosine: --cosine_max_len or --max_completion_length must be positive");
                    }
                    return per_completion([arguments = context.arguments](const RewardInput& input) { return cosine_reward(input, arguments); });
                  });
    built_ins.add("repetition", "-(1 - unique n-grams / n-grams) of the words, times the penalty",
                  [](const PluginContext& context) {
                    const int64_t n = context.arguments.repetition_n_grams;
                    const double penalty = context.arguments.repetition_max_penalty;
                    if (n < 1) fail("orm repetition: --repetition_n_grams must be at least 1, got {}", n);
                    if (penalty > 0) {
                      fail("orm repetition: --repetition_max_penalty must not be positive (SWIFT's convention: "
                           "the reward is scaling * penalty), got {}", penalty);
                    }
                    return per_completion([n, penalty](const RewardInput& input) {
                      return repetition_reward(input.completion, n, penalty);
                    });
                  });
    built_ins.add("soft_overlong", "0 up to max - cache, then falling linearly: -1 at --soft_max_length, lower beyond",
                  [](const PluginContext& context) {
                    const int64_t max_len =
                        context.arguments.soft_max_length > 0 ? context.arguments.soft_max_length : context.arguments.max_completion_length;
                    const int64_t cache = context.arguments.soft_cache_length;
                    if (cache <= 0 || cache >= max_len) {
                      fail("orm soft_overlong: --soft_cache_length must be in (0, {}) (below the soft max length), got {}",
                           max_len, cache);
                    }
                    return per_completion([max_len, cache](const RewardInput& input) {
                      return soft_overlong_reward(completion_length(input), max_len, cache);
                    });
                  });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
