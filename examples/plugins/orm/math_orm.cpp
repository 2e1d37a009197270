// An outcome reward plugin registered as "math_example": 1.0 when the last \boxed{...} of the
// completion equals the reference answer, else 0.0. Written only against the public headers, as a
// readable counterpart of the built-in `math` ORM (which knows more LaTeX).
//
//   lathe sample ... --external_plugins examples/plugins/orm/math_orm.cpp --orm_model math_example
//
// The reference is the row's "solution" (else "answer", else "response") column; when it holds a
// \boxed{...} too, only that part counts (MATH-style solutions are worked answers). Both sides are
// normalised: spaces, $...$, \left / \right, a trailing "." removed and \dfrac / \tfrac read as
// \frac; two numbers (integers, decimals, a/b) are equal within 1e-6 relative.
#include <lathe/plugin.h>
#include <lathe/plugin/orm.h>
#include <lathe/plugin/answer_checking.h>

#include <cmath>
#include <optional>
#include <string>

namespace {

// The content of the last \boxed{...}, with nested braces balanced; nullopt when there is none or
// it is never closed.
std::optional<std::string> last_boxed_answer(const std::string& text) {
  const std::string marker = "\\boxed{";
  const auto start = text.rfind(marker);
  if (start == std::string::npos) return std::nullopt;
  int depth = 1;
  for (std::size_t i = start + marker.size(); i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return text.substr(start + marker.size(), i - start - marker.size());
  }
  return std::nullopt;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
}

std::string normalize(std::string answer) {
  for (const char* noise : {"\\left", "\\right", "$", " ", "\t", "\n", "\\!", "\\,"}) replace_all(answer, noise, "");
  replace_all(answer, "\\dfrac", "\\frac");
  replace_all(answer, "\\tfrac", "\\frac");
  while (!answer.empty() && answer.back() == '.') answer.pop_back();
  return answer;
}

// A plain number, a/b or \frac{a}{b}; nullopt for anything else.
std::optional<double> as_number(const std::string& text) {
  auto parse = [](const std::string& part) -> std::optional<double> {
    if (part.empty()) return std::nullopt;
    std::size_t used = 0;
    try {
      const double value = std::stod(part, &used);
      return used == part.size() ? std::optional<double>(value) : std::nullopt;
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  std::string numerator, denominator;
  if (text.starts_with("\\frac{")) {
    const auto middle = text.find("}{");
    if (middle == std::string::npos || text.back() != '}') return std::nullopt;
    numerator = text.substr(6, middle - 6);
    denominator = text.substr(middle + 2, text.size() - middle - 3);
  } else if (const auto slash = text.find('/'); slash != std::string::npos) {
    numerator = text.substr(0, slash);
    denominator = text.substr(slash + 1);
  } else {
    return parse(text);
  }
  const auto top = parse(numerator), bottom = parse(denominator);
  if (!top || !bottom || *bottom == 0) return std::nullopt;
  return *top / *bottom;
}

bool same_answer(const std::string& given, const std::string& expected) {
  const auto a = normalize(given), b = normalize(expected);
  if (a == b) return true;
  const auto x = as_number(a), y = as_number(b);
  return x && y && std::abs(*x - *y) <= 1e-6 * std::max({1.0, std::abs(*x), std::abs(*y)});
}

class MathExampleOrm : public lathe::OutcomeRewardModel {
 public:
  std::vector<double> score(const std::vector<lathe::RewardInput>& inputs) override {
    std::vector<double> rewards;
    for (const auto& input : inputs) {
      const auto reference = lathe::reference_answer(input.row);
      const auto expected = last_boxed_answer(reference).value_or(reference);
      const auto given = last_boxed_answer(input.completion);
      rewards.push_back(given && same_answer(*given, expected) ? 1.0 : 0.0);
    }
    return rewards;
  }
};

}  // namespace

LATHE_PLUGIN() {
  lathe::orm_registry().add("math_example", "1 when the last \\boxed{} equals the reference answer, else 0 (example plugin)",
                            [](const lathe::PluginContext&) { return std::make_shared<MathExampleOrm>(); });
}
