// `lathe tokenize`: encode lines of text to token ids, or decode ids back to text, with the
// tokenizer of a model folder (only its tokenizer.json is read).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <string>

#include "cli/commands.h"
#include "common/format.h"
#include "lathe/tokenizer.h"

namespace lathe::cli {
namespace {

constexpr const char* kDescription =
    "Encode: reads UTF-8 lines from standard input and prints, for each, one JSON array of token ids.\n"
    "Decode (--decode): reads one JSON array of ids per line and prints, for each, the text as one\n"
    "JSON string (so that newlines and other control characters in the text survive on one line).";

std::string decode_line(const Tokenizer& tokenizer, const std::string& line, std::size_t line_number,
                        bool skip_special_tokens) {
  const auto ids = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  std::vector<int32_t> tokens;
  const bool valid = ids.is_array() && std::all_of(ids.begin(), ids.end(), [](const auto& id) {
                       return id.is_number_integer() && id.template get<long long>() >= 0 &&
                              id.template get<long long>() <= INT32_MAX;
                     });
  if (!valid) fail("standard input, line {}: expected a JSON array of token ids, got: {}", line_number, line);
  for (const auto& id : ids) tokens.push_back(id.get<int32_t>());
  return nlohmann::json(tokenizer.decode(tokens, skip_special_tokens))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

int run_tokenize(const Args& args) {
  CLI::App app{kDescription, "lathe tokenize"};
  std::string model_dir;
  bool add_special_tokens = true;
  bool decode = false;
  bool skip_special_tokens = false;
  app.add_option("--model", model_dir, "model folder holding tokenizer.json (or the file itself)")->required();
  app.add_option("--add_special_tokens", add_special_tokens,
                 "add what the post-processor adds (e.g. Llama's <s>); encode only")
      ->default_str("true");
  app.add_flag("--decode", decode, "read JSON arrays of ids, print each decoded text as a JSON string");
  app.add_option("--skip_special_tokens", skip_special_tokens, "leave special tokens out of decoded text")
      ->default_str("false");
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }

  const Tokenizer tokenizer = Tokenizer::from_file(model_dir);
  std::ios::sync_with_stdio(false);
  std::string line, output;
  for (std::size_t line_number = 1; std::getline(std::cin, line); ++line_number) {
    if (decode) {
      output = decode_line(tokenizer, line, line_number, skip_special_tokens);
    } else {
      output = nlohmann::json(tokenizer.encode(line, add_special_tokens)).dump();
    }
    output += '\n';
    std::cout.write(output.data(), static_cast<std::streamsize>(output.size()));
  }
  std::cout.flush();
  return 0;
}

}  // namespace lathe::cli
