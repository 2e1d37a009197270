// A process reward plugin registered as "step_example": it splits the response into steps and
// checks the arithmetic of each, giving one reward per step.
//
//   lathe sample ... --external_plugins examples/plugins/prm/step_prm.cpp --prm_model step_example
//
// Steps: when the response has "Step N:" markers, each marker starts a step (text before the first
// marker is not a step); otherwise steps are the paragraphs between blank lines. A step scores 1.0
// when every equation "a op b = c" in it holds (op one of + - * x / ; numbers may be negative or
// decimal; equal within 1e-9 relative), and 0.0 when any fails. A step without an equation scores
// 1.0: it says nothing this checker can refute.
#include <lathe/plugin.h>
#include <lathe/plugin/prm.h>

#include <cmath>
#include <regex>
#include <string>
#include <vector>

namespace {

std::string trimmed(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

std::vector<std::string> split_steps(const std::string& response) {
  static const std::regex marker(R"(Step\s*\d+\s*:)", std::regex::icase);
  static const std::regex blank_line(R"(\n[ \t\r]*\n)");
  std::vector<std::size_t> starts;
  for (std::sregex_iterator it(response.begin(), response.end(), marker), end; it != end; ++it)
    starts.push_back(static_cast<std::size_t>(it->position()));
  std::vector<std::string> pieces;
  if (!starts.empty()) {
    starts.push_back(response.size());
    for (std::size_t i = 0; i + 1 < starts.size(); ++i) pieces.push_back(response.substr(starts[i], starts[i + 1] - starts[i]));
  } else {
    for (std::sregex_token_iterator it(response.begin(), response.end(), blank_line, -1), end; it != end; ++it)
      pieces.push_back(*it);
  }
  std::vector<std::string> steps;
  for (const auto& piece : pieces)
    if (auto step = trimmed(piece); !step.empty()) steps.push_back(std::move(step));
  return steps;
}

bool equation_holds(double a, char op, double b, double c) {
  double value = 0;
  switch (op) {
    case '+': value = a + b; break;
    case '-': value = a - b; break;
    case '*': case 'x': value = a * b; break;
    case '/': if (b == 0) return false; value = a / b; break;
    default: return false;
  }
  return std::abs(value - c) <= 1e-9 * std::max({1.0, std::abs(value), std::abs(c)});
}

double step_reward(const std::string& step) {
  static const std::regex equation(R"((-?\d+(?:\.\d+)?)\s*([-+*x/])\s*(-?\d+(?:\.\d+)?)\s*=\s*(-?\d+(?:\.\d+)?))");
  for (std::sregex_iterator it(step.begin(), step.end(), equation), end; it != end; ++it) {
    const auto& match = *it;
    if (!equation_holds(std::stod(match[1]), match.str(2)[0], std::stod(match[3]), std::stod(match[4]))) return 0.0;
  }
  return 1.0;
}

class StepExamplePrm : public lathe::ProcessRewardModel {
 public:
  std::vector<std::vector<double>> score(const std::vector<lathe::PrmInput>& inputs) override {
    std::vector<std::vector<double>> rewards;
    for (const auto& input : inputs) {
      const auto& messages = input.conversation.messages;
      const std::string response = messages.empty() ? "" : messages.back().content;
      std::vector<double> per_step;
      for (const auto& step : split_steps(response)) per_step.push_back(step_reward(step));
      rewards.push_back(std::move(per_step));
    }
    return rewards;
  }
};

}  // namespace

LATHE_PLUGIN() {
  lathe::prm_registry().add("step_example", "one reward per step: 1 when its \"a op b = c\" arithmetic holds, else 0 (example plugin)",
                            [](const lathe::PluginContext&) { return std::make_shared<StepExamplePrm>(); });
}
