#include "lathe/tuner/targets.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <set>

#include "lathe/common/format.h"

namespace lathe::tuner {
namespace {

constexpr const char* kAllLinear = "all-linear";
// The heads all-linear leaves out, as PEFT does: the output head, and a classifier's score head
// (which trains whole, as a module to save).
bool is_head(const std::string& path) { return path == "lm_head" || path == "score"; }

std::string last_component(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// A regular expression that must match a whole string, as Python's re.fullmatch (PEFT's rule for a
// string target_modules).
class FullMatch {
 public:
  FullMatch(const std::string& expression, const std::string& source) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expression.data()), expression.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &error_code, &error_offset,
                          nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof message);
      fail("{}: invalid regular expression {:?} at offset {}: {}", source, expression, error_offset,
           reinterpret_cast<const char*>(message));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  FullMatch(const FullMatch&) = delete;
  FullMatch& operator=(const FullMatch&) = delete;
  ~FullMatch() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  bool matches(const std::string& text) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0, data_, nullptr) >= 0;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

bool wants_all_linear(const LoraConfig& config) {
  return std::find(config.target_modules.begin(), config.target_modules.end(), kAllLinear) !=
         config.target_modules.end();
}

std::string describe_request(const LoraConfig& config) {
  if (config.target_regex) return fmt::format("target regex {:?}", *config.target_regex);
  return fmt::format("target_modules [{}]", fmt::join(config.target_modules, ", "));
}

std::string describe_available(const std::vector<NamedLinear>& linears) {
  if (linears.empty()) return "the model has no Linear layers";
  std::vector<std::string> names;
  for (const auto& [path, linear] : linears) {
    auto name = last_component(path);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
  }
  return fmt::format("available Linear modules: {} (full paths look like {})", fmt::join(names, ", "),
                     linears.front().first);
}

}  // namespace

bool suffix_matches(const std::string& path, const std::string& name) {
  return path == name || (path.size() > name.size() && path.ends_with(name) && path[path.size() - name.size() - 1] == '.');
}

std::vector<NamedLinear> linear_modules(CausalLM& model) {
  std::vector<NamedLinear> linears;
  for (const auto& item : model->named_modules("", false))
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value())) linears.emplace_back(item.key(), linear);
  return linears;
}

std::vector<NamedLinear> select_targets(const std::vector<NamedLinear>& linears, const LoraConfig& config,
                                        const std::string& source) {
  std::vector<NamedLinear> selected;
  if (config.target_regex) {
    const FullMatch regex(*config.target_regex, source);
    for (const auto& item : linears)
      if (regex.matches(item.first)) selected.push_back(item);
  } else {
    const bool all_linear = wants_all_linear(config);
    for (const auto& item : linears) {
      const bool named = std::any_of(config.target_modules.begin(), config.target_modules.end(),
                                     [&](const std::string& name) { return suffix_matches(item.first, name); });
      if (named || (all_linear && !is_head(item.first))) selected.push_back(item);
    }
  }
  if (selected.empty())
    fail("{}: {} matched no Linear layer; {}", source, describe_request(config), describe_available(linears));
  return selected;
}

std::vector<std::string> recorded_target_names(const LoraConfig& config, const std::vector<std::string>& adapted) {
  std::set<std::string> names;
  const bool all_linear = wants_all_linear(config);
  for (const auto& path : adapted) {
    bool named = false;
    for (const auto& name : config.target_modules)
      if (name != kAllLinear && suffix_matches(path, name)) names.insert(name), named = true;
    if (!named && all_linear) names.insert(last_component(path));
  }
  return {names.begin(), names.end()};
}

}  // namespace lathe::tuner
