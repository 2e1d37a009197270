// Tools (tool.h). The registry and its built-ins are at the bottom.
#include "lathe/plugin/tool.h"

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <optional>

#include "lathe/common/files.h"
#include "lathe/common/format.h"

namespace lathe {
namespace {

using nlohmann::json;

// An arithmetic expression (+ - * /, unary minus, parentheses, decimal numbers) by recursive
// descent. Written here because a calculator tool must not run code, and no library at hand
// evaluates plain arithmetic without a scripting language.
class Arithmetic {
 public:
  explicit Arithmetic(std::string text) : text_(std::move(text)) {}

  std::optional<double> value() {
    const auto result = sum();
    skip_spaces();
    if (!result || at_ != text_.size()) return std::nullopt;
    return result;
  }

 private:
  void skip_spaces() {
    while (at_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[at_]))) ++at_;
  }
  bool take(char c) {
    skip_spaces();
    if (at_ < text_.size() && text_[at_] == c) return ++at_, true;
    return false;
  }
  std::optional<double> sum() {
    auto left = product();
    while (left) {
      if (take('+')) left = combine(left, product(), [](double a, double b) { return a + b; });
      else if (take('-')) left = combine(left, product(), [](double a, double b) { return a - b; });
      else break;
    }
    return left;
  }
  std::optional<double> product() {
    auto left = factor();
    while (left) {
      if (take('*')) left = combine(left, factor(), [](double a, double b) { return a * b; });
      else if (take('/')) left = combine(left, factor(), [](double a, double b) { return a / b; });
      else break;
    }
    return left;
  }
  std::optional<double> factor() {
    if (take('-')) {
      const auto inner = factor();
      return inner ? std::optional(-*inner) : std::nullopt;
    }
    if (take('(')) {
      const auto inner = sum();
      return inner && take(')') ? inner : std::nullopt;
    }
    skip_spaces();
    const auto start = at_;
    while (at_ < text_.size() && (std::isdigit(static_cast<unsigned char>(text_[at_])) || text_[at_] == '.')) ++at_;
    if (start == at_) return std::nullopt;
    try {
      std::size_t used = 0;
      const double number = std::stod(text_.substr(start, at_ - start), &used);
      return used == at_ - start ? std::optional(number) : std::nullopt;
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  template <class Op>
  static std::optional<double> combine(std::optional<double> a, std::optional<double> b, Op op) {
    return a && b ? std::optional(op(*a, *b)) : std::nullopt;
  }

  std::string text_;
  std::size_t at_ = 0;
};

std::string argument_text(const json& arguments, const char* key) {
  if (arguments.is_object() && arguments.contains(key) && arguments[key].is_string()) return arguments[key].get<std::string>();
  if (arguments.is_object() && arguments.contains(key)) return arguments[key].dump();
  return {};
}

class Calculator : public Tool {
 public:
  std::string call(const json& arguments) override {
    const auto expression = argument_text(arguments, "expression");
    if (expression.empty()) return "error: expected {\"expression\": \"...\"}";
    const auto value = Arithmetic(expression).value();
    if (!value || !std::isfinite(*value)) return fmt::format("error: cannot evaluate {:?}", expression);
    return fmt::format("{:.15g}", *value);
  }
};

class JsonLookup : public Tool {
 public:
  explicit JsonLookup(const PluginContext& context) {
    const auto file = context.setting<std::string>("file", "");
    if (file.empty()) fail("tool json_lookup: give its file with --plugin_args '{{\"json_lookup\": {{\"file\": PATH}}}}'");
    try {
      table_ = json::parse(read_file(file));
    } catch (const json::parse_error& error) {
      fail("tool json_lookup: {}: invalid JSON: {}", file, error.what());
    }
    if (!table_.is_object()) fail("tool json_lookup: {}: expected a JSON object of keys and values", file);
  }
  std::string call(const json& arguments) override {
    const auto key = argument_text(arguments, "key");
    const auto found = table_.find(key);
    if (found == table_.end()) return fmt::format("no entry for {:?}", key);
    return found->is_string() ? found->get<std::string>() : found->dump();
  }

 private:
  json table_;
};

}  // namespace

Registry<ToolFactory>& tool_registry() {
  static Registry<ToolFactory> registry = [] {
    Registry<ToolFactory> built_ins("tool");
    built_ins.add("calculator", "evaluates {\"expression\": ...}: + - * / and parentheses",
                  [](const PluginContext&) { return std::make_shared<Calculator>(); });
    built_ins.add("json_lookup", "the value of {\"key\": ...} in the JSON object of plugin_args' file",
                  [](const PluginContext& context) { return std::make_shared<JsonLookup>(context); });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
