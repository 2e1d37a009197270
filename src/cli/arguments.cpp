#include "cli/arguments.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <set>

#include "lathe/common/format.h"
#include "lathe/common/files.h"
#include "lathe/plugin.h"

namespace lathe {

namespace cli {

namespace {

// An option whose value is a JSON object (--plugin_args, --lr_scheduler_kwargs).
nlohmann::json json_object_option(const std::string& flag, const std::string& text) {
  auto value = nlohmann::json::parse(text, nullptr, false);
  if (!value.is_object()) throw CLI::ValidationError(flag, "expected a JSON object, got: " + text);
  return value;
}

std::string help_text(const ArgumentInfo& info) {
  std::string help(info.help);
  if (!info.rule.choices.empty()) help += fmt::format(" ({})", info.rule.choices);
  return help;
}

template <class T>
CLI::Option* add_bound_option(CLI::App& app, const std::string& names, const ArgumentInfo& info, T& field) {
  return app.add_option(names, field, help_text(info))->capture_default_str();
}
template <class T>
CLI::Option* add_bound_option(CLI::App& app, const std::string& names, const ArgumentInfo& info, std::optional<T>& field) {
  return app.add_option(names, field, help_text(info));
}
CLI::Option* add_bound_option(CLI::App& app, const std::string& names, const ArgumentInfo& info, nlohmann::json& field) {
  return app.add_option_function<std::string>(
      names, [&field, names](const std::string& text) { field = json_object_option(names, text); }, help_text(info));
}

// A group's options, as the argument table declares them (rules are checked after parsing, by
// Arguments::check, so the command line, --config and args.json refuse the same values).
void add_group(CLI::App& app, Arguments& arguments, ArgumentGroup group) {
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    if (info.group != group || !info.rule.command_line) return;
    auto names = fmt::format("--{}", info.key);
    if (!info.rule.alias.empty()) names += fmt::format(",--{}", info.rule.alias);
    auto* option = add_bound_option(app, names, info, arguments.*field);
    if (info.rule.count != 0) option->expected(static_cast<int>(info.rule.count));
    if (!info.rule.no_effect.empty()) option->group("ms-swift's arguments without an effect here");
  });
}

}  // namespace

void add_options(CLI::App& app, Arguments& arguments, std::initializer_list<ArgumentGroup> groups) {
  for (auto group : groups) add_group(app, arguments, group);
}

namespace {

// A YAML value as JSON: mappings and lists as they are, scalars as numbers, booleans or null where
// they read as such, else strings.
nlohmann::json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    auto object = nlohmann::json::object();
    for (const auto& entry : node) object[entry.first.as<std::string>()] = yaml_to_json(entry.second);
    return object;
  }
  if (node.IsSequence()) {
    auto array = nlohmann::json::array();
    for (const auto& item : node) array.push_back(yaml_to_json(item));
    return array;
  }
  if (node.IsNull() || !node.IsScalar()) return nullptr;
  const auto text = node.as<std::string>();
  if (node.Tag() != "!") {  // an unquoted scalar
    if (text == "true" || text == "false" || text == "null") return nlohmann::json::parse(text);
    const auto number = nlohmann::json::parse(text, nullptr, false);
    if (number.is_number()) return number;
  }
  return text;
}

// A config value as command-line words: lists give several words, scalars one, a mapping (the
// value of a JSON option such as plugin_args) its JSON text.
std::vector<std::string> config_words(const YAML::Node& node) {
  std::vector<std::string> words;
  if (node.IsMap()) {
    words.push_back(yaml_to_json(node).dump());
  } else if (node.IsSequence()) {
    for (const auto& item : node) words.push_back(item.as<std::string>());
  } else if (node.IsScalar()) {
    words.push_back(node.as<std::string>());
  }
  return words;
}

// Turns a --config file into "--key value..." words for the keys the command line leaves unset.
std::vector<std::string> config_arguments(const std::string& path, const std::set<std::string>& given) {
  YAML::Node root;
  try {
    root = YAML::Load(read_file(path));  // JSON is a subset of YAML
  } catch (const YAML::Exception& error) {
    fail("{}: invalid config file: {}", path, error.what());
  }
  if (!root.IsMap()) fail("{}: a config file must be a mapping of argument names to values", path);
  std::vector<std::string> words;
  for (const auto& entry : root) {
    const auto key = entry.first.as<std::string>();
    if (given.count(key)) continue;
    words.push_back("--" + key);
    for (auto& word : config_words(entry.second)) words.push_back(std::move(word));
  }
  return words;
}

// The argument keys given on the command line or in the --config file.
std::vector<std::string> keys_set(const CLI::App& app) {
  std::vector<std::string> keys;
  for_each_argument([&](const ArgumentInfo& info, auto) {
    const auto* option = app.get_option_no_throw("--" + std::string(info.key));
    if (option && option->count() > 0) keys.emplace_back(info.key);
  });
  return keys;
}

}  // namespace

int parse(CLI::App& app, Arguments& arguments, const Args& args) {
  std::string config_path;
  app.add_option("--config", config_path, "YAML or JSON file of arguments (the command line wins)");
  add_group(app, arguments, ArgumentGroup::Plugins);
  add_group(app, arguments, ArgumentGroup::Ignored);
  std::set<std::string> given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) config_path = args[i + 1];
    if (args[i].rfind("--", 0) == 0) given.insert(args[i].substr(2, args[i].find('=') - 2));
  }
  std::vector<std::string> words;
  if (!config_path.empty()) words = config_arguments(config_path, given);
  words.insert(words.end(), args.begin(), args.end());
  std::reverse(words.begin(), words.end());  // CLI11 takes a reversed vector
  auto refuse = [&](const char* message) {
    fmt::print(stderr, "lathe {}: error: {}\nRun 'lathe {} --help' for the arguments.\n", app.get_name(), message,
               app.get_name());
    return 2;
  };
  try {
    app.parse(words);
    arguments.check();
    arguments.load_checkpoint_arguments(keys_set(app));
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return 0;
  } catch (const CLI::ParseError& error) {
    return refuse(error.what());
  } catch (const Error& error) {
    return refuse(error.what());
  }
  for (const auto& notice : arguments.notices()) fmt::print(stderr, "lathe {}: {}\n", app.get_name(), notice);
  load_external_plugins(arguments.external_plugins);
  return -1;
}

}  // namespace cli
}  // namespace lathe
