#include "cli/arguments.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <set>

#include "common/format.h"
#include "lathe/files.h"

namespace lathe {

namespace cli {

void add_options(CLI::App& app, Arguments& a, std::initializer_list<OptionGroup> groups) {
  for (auto group : groups) {
    switch (group) {
      case OptionGroup::Model:
        app.add_option("--model", a.model, "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
        app.add_option("--adapters", a.adapters, "adapter folders to load (PEFT format)");
        app.add_option("--template", a.template_name, "chat template (default: chosen from the model folder)");
        app.add_option("--system", a.system, "system prompt, replacing the template's default");
        app.add_option("--torch_dtype", a.torch_dtype, "parameter dtype")
            ->check(CLI::IsMember({"float32", "bfloat16"}))->capture_default_str();
        app.add_option("--max_length", a.max_length, "maximum tokens per sequence (0: the model's limit)")->capture_default_str();
        break;
      case OptionGroup::Generation:
        app.add_option("--max_new_tokens", a.max_new_tokens, "tokens to generate at most")->capture_default_str();
        app.add_option("--temperature", a.temperature, "sampling temperature (0: greedy)")->capture_default_str();
        app.add_option("--top_k", a.top_k, "sample among the k likeliest tokens (0: off)")->capture_default_str();
        app.add_option("--top_p", a.top_p, "nucleus sampling mass (1: off)")->capture_default_str();
        app.add_option("--repetition_penalty", a.repetition_penalty, "penalty on repeated tokens (1: off)")->capture_default_str();
        app.add_option("--seed", a.seed, "random seed")->capture_default_str();
        app.add_option("--stream", a.stream, "stream tokens as they are generated")->capture_default_str();
        app.add_option("--max_batch_size", a.max_batch_size, "rows generated together in batch mode")->capture_default_str();
        break;
      case OptionGroup::Data:
        app.add_option("--dataset", a.dataset, "training datasets (.jsonl/.json/.csv; path#N samples N rows)");
        app.add_option("--val_dataset", a.val_dataset, "validation / inference datasets");
        app.add_option("--result_path", a.result_path, "where batch inference writes its jsonl results");
        break;
    }
  }
}

namespace {

// A config value as command-line words: lists give several words, scalars one.
std::vector<std::string> config_words(const YAML::Node& node) {
  std::vector<std::string> words;
  if (node.IsSequence()) {
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
    if (entry.second.IsMap()) fail("{}: '{}' must be a value or a list, not a mapping", path, key);
    words.push_back("--" + key);
    for (auto& word : config_words(entry.second)) words.push_back(std::move(word));
  }
  return words;
}

}  // namespace

int parse(CLI::App& app, const Args& args) {
  std::string config_path;
  app.add_option("--config", config_path, "YAML or JSON file of arguments (the command line wins)");
  std::set<std::string> given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) config_path = args[i + 1];
    if (args[i].rfind("--", 0) == 0) given.insert(args[i].substr(2, args[i].find('=') - 2));
  }
  std::vector<std::string> words;
  if (!config_path.empty()) words = config_arguments(config_path, given);
  words.insert(words.end(), args.begin(), args.end());
  std::reverse(words.begin(), words.end());  // CLI11 takes a reversed vector
  try {
    app.parse(words);
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return 0;
  } catch (const CLI::ParseError& error) {
    fmt::print(stderr, "lathe {}: error: {}\nRun 'lathe {} --help' for the arguments.\n", app.get_name(),
               error.what(), app.get_name());
    return 2;
  }
  return -1;
}

}  // namespace cli
}  // namespace lathe
