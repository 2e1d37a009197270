#include "template/template_test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace lathe::test {
namespace fs = std::filesystem;

std::string visible(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  return out;
}

std::string describe_difference(const std::string& expected, const std::string& actual) {
  std::size_t at = 0;
  while (at < expected.size() && at < actual.size() && expected[at] == actual[at]) ++at;
  std::size_t from = at > 40 ? at - 40 : 0;
  return fmt::format(
      "first difference at byte {}\n  expected: ...{}\n  actual:   ...{}\nwhole expected: {}\n"
      "whole actual:   {}",
      at, visible(expected.substr(from, 80)), visible(actual.substr(from, 80)), visible(expected),
      visible(actual));
}

static std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

static std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string run_node_oracle(const std::string& script, const std::vector<std::string>& args,
                            const std::string& input) {
  static std::atomic<int> calls{0};
  fs::path work = fs::temp_directory_path() /
                  fmt::format("lathe-template-oracle-{}-{}", ::getpid(), calls++);
  fs::create_directories(work);
  const fs::path in = work / "in.json", out = work / "out.json", err = work / "err.txt";
  std::ofstream(in, std::ios::binary) << input;
  std::string command = "node " + shell_quote(oracle_dir() + "/" + script);
  for (const auto& arg : args) command += " " + shell_quote(arg);
  command += " < " + shell_quote(in) + " > " + shell_quote(out) + " 2> " + shell_quote(err);
  int status = std::system(command.c_str());
  std::string output = slurp(out), errors = slurp(err);
  fs::remove_all(work);
  if (status != 0) {
    throw std::runtime_error(fmt::format(
        "the node oracle failed (exit status {}): {}\n{}\nIs node installed and "
        "tests/oracle/node_modules set up (scripts/setup.sh)?",
        WIFEXITED(status) ? WEXITSTATUS(status) : -1, command, errors));
  }
  return output;
}

std::vector<std::vector<int32_t>> hf_token_ids(const std::string& tokenizer_json,
                                               const std::vector<std::string>& texts,
                                               bool add_special_tokens) {
  static std::atomic<int> calls{0};
  fs::path work = fs::temp_directory_path() /
                  fmt::format("lathe-template-ids-{}-{}", ::getpid(), calls++);
  fs::create_directories(work);
  const fs::path corpus = work / "texts.jsonl", out = work / "ids.jsonl";
  {
    std::ofstream lines(corpus, std::ios::binary);
    for (const std::string& text : texts) lines << nlohmann::json(text).dump() << '\n';
  }
  run_node_oracle("tokenizer_oracle.js", {tokenizer_json, corpus.string(), out.string()}, "");
  std::istringstream rows(slurp(out));
  fs::remove_all(work);
  std::vector<std::vector<int32_t>> ids;
  for (std::string row; std::getline(rows, row);) {
    if (row.empty()) continue;
    ids.push_back(nlohmann::json::parse(row)
                      .at(add_special_tokens ? "with" : "without")
                      .get<std::vector<int32_t>>());
  }
  if (ids.size() != texts.size()) {
    throw std::runtime_error(fmt::format("tokenizer_oracle.js gave {} rows for {} texts",
                                         ids.size(), texts.size()));
  }
  return ids;
}

}  // namespace lathe::test
