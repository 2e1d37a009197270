// The argument table: every argument, set to a value other than its default, comes back the same
// through the command line, a --config file (YAML and JSON) and args.json; bad values are refused
// the same way by all three, naming the argument.
#include <gtest/gtest.h>

#include "cli/arguments.h"
#include "cli/cli_util.h"
#include "lathe/common/error.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using cli::Args;
using nlohmann::json;

// Every argument's value as JSON: args.json's form, plus the secrets it leaves out (all strings).
json values_of(const Arguments& arguments) {
  auto values = arguments.to_json();
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    if constexpr (std::is_same_v<std::decay_t<decltype(arguments.*field)>, std::string>) {
      if (info.rule.secret) values[std::string(info.key)] = arguments.*field;
    }
  });
  return values;
}

// A value of each type unlike the default (and within the argument's rule).
void vary(const ArgumentInfo& info, std::string& value) {
  if (info.rule.choices.empty()) {
    value = std::string(info.key) + " value";
    return;
  }
  const std::string_view choices = info.rule.choices;
  const auto last = std::string(choices.substr(choices.rfind('|') + 1));
  value = value == last ? std::string(choices.substr(0, choices.find('|'))) : last;
}
void vary(const ArgumentInfo&, bool& value) { value = !value; }
void vary(const ArgumentInfo&, int64_t& value) { value += 3; }
void vary(const ArgumentInfo&, double& value) { value += 0.25; }
void vary(const ArgumentInfo& info, std::vector<std::string>& value) {
  value = {std::string(info.key) + "-a", std::string(info.key) + "-b"};
}
void vary(const ArgumentInfo&, std::vector<int64_t>& value) { value = {3, 7}; }
void vary(const ArgumentInfo&, std::vector<double>& value) { value = {0.5, 1.5}; }
void vary(const ArgumentInfo&, json& value) { value = {{"some_plugin", {{"level", 2}, {"name", "x y"}}}}; }
template <class T>
void vary(const ArgumentInfo& info, std::optional<T>& value) {
  T item{};
  vary(info, item);
  value = item;
}

// --external_plugins loads the files it names while parsing, so the round trips leave it empty;
// ExternalPluginsArriveFromBothSources shows both routes reach it.
bool round_trips_through_parsing(const ArgumentInfo& info) {
  return info.rule.command_line && info.key != "external_plugins";
}

Arguments varied_arguments() {
  Arguments arguments;
  for_each_argument([&](const ArgumentInfo& info, auto field) {
    if (round_trips_through_parsing(info)) vary(info, arguments.*field);
  });
  return arguments;
}

// The command-line words that give `arguments`.
Args command_line_of(const Arguments& arguments) {
  Args words;
  const auto values = values_of(arguments);
  for_each_argument([&](const ArgumentInfo& info, auto) {
    const auto& value = values.at(std::string(info.key));
    if (!round_trips_through_parsing(info) || value.is_null()) return;
    words.push_back("--" + std::string(info.key));
    const auto word = [](const json& item) { return item.is_string() ? item.get<std::string>() : item.dump(); };
    if (value.is_array()) {
      for (const auto& item : value) words.push_back(word(item));
    } else {
      words.push_back(word(value));
    }
  });
  return words;
}

// Parses `words` with every group's options, as a command would; the exit code is -1 when parsing
// went through.
std::pair<int, Arguments> parsed(const Args& words) {
  CLI::App app("all arguments", "test");
  Arguments arguments;
  using G = ArgumentGroup;
  cli::add_options(app, arguments,
                   {G::Model, G::Generation, G::Serving, G::Data, G::Dataset, G::Tuner, G::Schedule, G::Checkpoints,
                    G::Output, G::Evaluation, G::Reward, G::Sampling, G::Export, G::Alignment});
  const int code = cli::parse(app, arguments, words);
  return {code, arguments};
}

void expect_same_arguments(const Arguments& actual, const Arguments& expected, bool with_secrets) {
  const auto actual_values = with_secrets ? values_of(actual) : actual.to_json();
  const auto expected_values = with_secrets ? values_of(expected) : expected.to_json();
  for (const auto& [key, value] : expected_values.items()) EXPECT_EQ(actual_values.at(key), value) << "--" << key;
}

TEST(ArgumentTable, EveryVariedArgumentDiffersFromItsDefault) {
  const auto defaults = values_of(Arguments{}), varied = values_of(varied_arguments());
  int compared = 0;
  for_each_argument([&](const ArgumentInfo& info, auto) {
    if (!round_trips_through_parsing(info)) return;
    EXPECT_NE(varied.at(std::string(info.key)), defaults.at(std::string(info.key))) << info.key;
    ++compared;
  });
  EXPECT_GT(compared, 100);
  EXPECT_NO_THROW(varied_arguments().check());
}

TEST(ArgumentTable, CommandLineRoundTrip) {
  const auto expected = varied_arguments();
  const auto [code, actual] = parsed(command_line_of(expected));
  ASSERT_EQ(code, -1);
  expect_same_arguments(actual, expected, /*with_secrets=*/true);
}

// A config file in YAML (each value in flow style) and in JSON gives the same arguments as the
// command line.
TEST(ArgumentTable, ConfigFileRoundTrip) {
  TempDir dir("argument-config");
  const auto expected = varied_arguments();
  const auto all_values = values_of(expected);
  json values = json::object();
  std::string yaml;
  for_each_argument([&](const ArgumentInfo& info, auto) {
    const auto& value = all_values.at(std::string(info.key));
    if (!round_trips_through_parsing(info) || value.is_null()) return;
    values[std::string(info.key)] = value;
    yaml += std::string(info.key) + ": " + value.dump() + "\n";
  });
  write_file_atomic(dir / "config.yaml", yaml);
  write_file_atomic(dir / "config.json", values.dump(2));
  for (const char* name : {"config.yaml", "config.json"}) {
    const auto [code, actual] = parsed({"--config", (dir / name).string()});
    ASSERT_EQ(code, -1) << name;
    expect_same_arguments(actual, expected, /*with_secrets=*/true);
  }
}

TEST(ArgumentTable, ArgsJsonRoundTripWithoutSecrets) {
  auto expected = varied_arguments();
  expected.pretraining = true;
  const auto saved = expected.to_json();
  for (const char* secret : {"api_key", "prm_api_key", "engine_kwargs_api_key"}) {
    EXPECT_FALSE(saved.contains(secret)) << secret;
  }
  Arguments loaded;
  loaded.update_from_json(saved, "args.json");
  expect_same_arguments(loaded, expected, /*with_secrets=*/false);
  EXPECT_EQ(loaded.to_json(), saved);
}

TEST(ArgumentTable, ArgsJsonRecordsResolvedDefaults) {
  Arguments arguments;
  EXPECT_DOUBLE_EQ(arguments.to_json()["learning_rate"].get<double>(), 1e-4);
  EXPECT_EQ(arguments.to_json()["metric_for_best_model"], "loss");
  arguments.train_type = "full";
  arguments.predict_with_generate = true;
  EXPECT_DOUBLE_EQ(arguments.to_json()["learning_rate"].get<double>(), 1e-5);
  EXPECT_EQ(arguments.to_json()["metric_for_best_model"], "rouge-l");
  EXPECT_TRUE(arguments.best_metric_greater_is_better());
}

std::string json_error(const json& values) {
  try {
    Arguments arguments;
    arguments.update_from_json(values, "run/args.json");
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

// As ms-swift's config files write `loss_type: sigmoid` or `dataset: a.jsonl`: one value is a list of one.
TEST(ArgumentTable, ASingleValueIsAListOfOne) {
  Arguments arguments;
  arguments.update_from_json({{"dataset", "a.jsonl"}, {"loss_type", "ipo"}, {"loss_weights", 0.5}}, "config.yaml");
  EXPECT_EQ(arguments.dataset, std::vector<std::string>{"a.jsonl"});
  EXPECT_EQ(arguments.loss_type, std::vector<std::string>{"ipo"});
  EXPECT_EQ(arguments.loss_weights, std::vector<double>{0.5});
}

TEST(ArgumentTable, BadJsonValuesNameTheFileAndKey) {
  EXPECT_EQ(json_error({{"lora_rnak", 8}}), "run/args.json: unknown argument 'lora_rnak'");
  EXPECT_EQ(json_error({{"lora_rank", "eight"}}), "run/args.json: 'lora_rank' expects an integer, got \"eight\"");
  EXPECT_EQ(json_error({{"dataset", 5}}), "run/args.json: 'dataset' expects a list of strings, got 5");
  EXPECT_EQ(json_error({{"learning_rate", true}}), "run/args.json: 'learning_rate' expects a number or null, got true");
  EXPECT_EQ(json_error({{"torch_dtype", "float16"}}),
            "run/args.json: 'torch_dtype': expected one of float32|bfloat16, got 'float16'");
  EXPECT_EQ(json_error({{"split_dataset_ratio", 1.5}}),
            "run/args.json: 'split_dataset_ratio': expected a value from 0 to 1, got 1.5");
  EXPECT_EQ(json_error({{"data_range", {1, 2, 3}}}), "run/args.json: 'data_range': expected 2 values, got 3");
  EXPECT_NE(json_error({{"plugin_args", {{"focal_gamma", 2}}}}).find("'focal_gamma' is not an object"), std::string::npos);
  EXPECT_EQ(json_error(json::array()), "run/args.json: expected a mapping of argument names to values");
}

TEST(ArgumentTable, TheCommandLineAndConfigRefuseWhatJsonRefuses) {
  TempDir dir("argument-refusals");
  write_file_atomic(dir / "config.yaml", "torch_dtype: float16\n");
  EXPECT_EQ(parsed({"--torch_dtype", "float16"}).first, 2);
  EXPECT_EQ(parsed({"--config", (dir / "config.yaml").string()}).first, 2);
  EXPECT_EQ(parsed({"--split_dataset_ratio", "2"}).first, 2);
  EXPECT_EQ(parsed({"--lora_rank", "eight"}).first, 2);
  EXPECT_EQ(parsed({"--no_such_argument", "1"}).first, 2);
}

TEST(ArgumentTable, ExternalPluginsArriveFromBothSources) {
  TempDir dir("argument-plugins");
  const auto missing = (dir / "missing_plugin.so").string();
  write_file_atomic(dir / "config.yaml", "external_plugins: [" + json(missing).dump() + "]\n");
  for (const Args& words : {Args{"--external_plugins", missing}, Args{"--config", (dir / "config.yaml").string()}}) {
    try {
      parsed(words);
      ADD_FAILURE() << "the missing plugin was not looked for";
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()), "--external_plugins " + missing + ": file not found");
    }
  }
}

}  // namespace
}  // namespace lathe::testing
