#include "lathe/common/arguments.h"

#include <functional>
#include <map>

#include "lathe/common/files.h"
#include "lathe/common/format.h"

namespace lathe {

namespace {

using nlohmann::json;

template <class T>
json to_json_value(const T& value) {
  return value;
}
template <class T>
json to_json_value(const std::optional<T>& value) {
  return value ? json(*value) : json(nullptr);
}

// What a JSON value must be to set a field of this type, and reading it when it is.
const char* expected_json(const std::string*) { return "a string"; }
const char* expected_json(const bool*) { return "true or false"; }
const char* expected_json(const int64_t*) { return "an integer"; }
const char* expected_json(const double*) { return "a number"; }
const char* expected_json(const std::vector<std::string>*) { return "a list of strings"; }
const char* expected_json(const std::vector<int64_t>*) { return "a list of integers"; }
const char* expected_json(const std::vector<double>*) { return "a list of numbers"; }
const char* expected_json(const json*) { return "a JSON object"; }
template <class T>
std::string expected_json(const std::optional<T>*) {
  return std::string(expected_json(static_cast<const T*>(nullptr))) + " or null";
}

template <class T>
bool read_if(const json& value, T& out, bool (json::*is_expected)() const noexcept) {
  if (!(value.*is_expected)()) return false;
  out = value.get<T>();
  return true;
}
bool read_json(const json& value, std::string& out) { return read_if(value, out, &json::is_string); }
bool read_json(const json& value, bool& out) { return read_if(value, out, &json::is_boolean); }
bool read_json(const json& value, int64_t& out) { return read_if(value, out, &json::is_number_integer); }
bool read_json(const json& value, double& out) { return read_if(value, out, &json::is_number); }
bool read_json(const json& value, json& out) { return read_if(value, out, &json::is_object); }
template <class T>
bool read_json(const json& value, std::vector<T>& out) {
  // A single value is a list of one, as ms-swift's config files write `loss_type: sigmoid`.
  if (!value.is_array()) {
    T item{};
    if (value.is_null() || !read_json(value, item)) return false;
    out = {std::move(item)};
    return true;
  }
  std::vector<T> items(value.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!read_json(value[i], items[i])) return false;
  }
  out = std::move(items);
  return true;
}
template <class T>
bool read_json(const json& value, std::optional<T>& out) {
  if (value.is_null()) {
    out.reset();
    return true;
  }
  T item{};
  if (!read_json(value, item)) return false;
  out = std::move(item);
  return true;
}

// The rule's complaint about a value, or nothing when the value keeps it.
std::optional<std::string> rule_violation(const ArgumentRule& rule, const std::string& value) {
  if (rule.choices.empty()) return std::nullopt;
  for (std::size_t begin = 0; begin <= rule.choices.size();) {
    const auto end = std::min(rule.choices.find('|', begin), rule.choices.size());
    if (rule.choices.substr(begin, end - begin) == value) return std::nullopt;
    begin = end + 1;
  }
  return fmt::format("expected one of {}, got '{}'", rule.choices, value);
}
std::optional<std::string> rule_violation(const ArgumentRule& rule, double value) {
  if (value >= rule.minimum && value <= rule.maximum) return std::nullopt;
  if (rule.maximum == HUGE_VAL) return fmt::format("expected at least {}, got {}", rule.minimum, value);
  if (rule.minimum == -HUGE_VAL) return fmt::format("expected at most {}, got {}", rule.maximum, value);
  return fmt::format("expected a value from {} to {}, got {}", rule.minimum, rule.maximum, value);
}
std::optional<std::string> rule_violation(const ArgumentRule& rule, int64_t value) {
  return rule_violation(rule, static_cast<double>(value));
}
std::optional<std::string> rule_violation(const ArgumentRule&, bool) { return std::nullopt; }
std::optional<std::string> rule_violation(const ArgumentRule& rule, const json& value) {
  if (!rule.settings_by_name) return std::nullopt;
  for (const auto& [name, settings] : value.items()) {
    if (!settings.is_object()) {
      return fmt::format("'{}' is not an object: each plugin's settings go under its name, e.g. "
                         "'{{\"custom_loss\": {{\"focal_gamma\": 2}}}}'",
                         name);
    }
  }
  return std::nullopt;
}
template <class T>
std::optional<std::string> rule_violation(const ArgumentRule& rule, const std::vector<T>& values) {
  if (rule.count != 0 && !values.empty() && values.size() != rule.count) {
    return fmt::format("expected {} values, got {}", rule.count, values.size());
  }
  return std::nullopt;
}
template <class T>
std::optional<std::string> rule_violation(const ArgumentRule& rule, const std::optional<T>& value) {
  return value ? rule_violation(rule, *value) : std::nullopt;
}

}  // namespace

json Arguments::to_json() const {
  auto object = json::object();
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    if (!info.rule.secret) object[std::string(info.key)] = to_json_value(this->*field);
  });
  object["learning_rate"] = effective_learning_rate();
  object["metric_for_best_model"] = best_model_metric();
  return object;
}

void Arguments::update_from_json(const json& values, const std::string& source) {
  if (!values.is_object()) fail("{}: expected a mapping of argument names to values", source);
  std::map<std::string, std::function<void(const json&)>, std::less<>> setters;
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    setters[std::string(info.key)] = [this, info, field, &source](const json& value) {
      auto& target = this->*field;
      auto read = target;
      if (!read_json(value, read)) {
        fail("{}: '{}' expects {}, got {}", source, info.key, expected_json(&target), value.dump());
      }
      if (auto violation = rule_violation(info.rule, read)) fail("{}: '{}': {}", source, info.key, *violation);
      target = std::move(read);
    };
    // A file may use the second name, as ms-swift 4 writes tuner_type in its args.json.
    if (!info.rule.alias.empty()) setters[std::string(info.rule.alias)] = setters[std::string(info.key)];
  });
  for (const auto& [key, value] : values.items()) {
    const auto setter = setters.find(key);
    if (setter == setters.end()) fail("{}: unknown argument '{}'", source, key);
    setter->second(value);
  }
}

std::vector<std::string> Arguments::notices() const {
  std::vector<std::string> lines;
  const Arguments defaults;
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    if (!info.rule.no_effect.empty() && !(this->*field == defaults.*field)) {
      lines.push_back(fmt::format("--{} has no effect here: {}", info.key, info.rule.no_effect));
    }
  });
  for (const auto& tracker : report_to) {
    if (tracker != "none" && tracker != "tensorboard" && tracker != "all") {
      lines.push_back(fmt::format("--report_to {} has no effect here: Lathe writes logging.jsonl, its plots and "
                                  "TensorBoard event files (--report_to tensorboard) only", tracker));
    }
  }
  return lines;
}

void Arguments::load_checkpoint_arguments(const std::vector<std::string>& given) {
  if (!load_args || adapters.empty()) return;
  const auto file = std::filesystem::path(adapters.back()) / "args.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) return;
  const auto saved = json::parse(read_file(file), nullptr, false);
  if (!saved.is_object()) fail("{}: not a JSON object of arguments", file.string());
  // What SWIFT's load_args and load_data_args carry over from a training run.
  static const std::vector<std::string> model_keys{"model",         "template",   "system",   "agent_template",
                                                   "torch_dtype",   "max_length", "task_type"};
  static const std::vector<std::string> data_keys{"dataset",         "val_dataset",      "split_dataset_ratio",
                                                  "truncation_strategy", "dataset_num_proc", "streaming",
                                                  "model_name",      "model_author"};
  auto loaded = json::object();
  auto take = [&](const std::vector<std::string>& keys) {
    for (const auto& key : keys) {
      const bool user_set = std::find(given.begin(), given.end(), key) != given.end();
      if (!user_set && saved.contains(key) && !saved[key].is_null()) loaded[key] = saved[key];
    }
  };
  take(model_keys);
  if (load_data_args) take(data_keys);
  update_from_json(loaded, file.string());
}

void Arguments::check() const {
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    if (auto violation = rule_violation(info.rule, this->*field)) fail("--{}: {}", info.key, *violation);
  });
}

}  // namespace lathe
