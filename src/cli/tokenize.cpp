// `lathe tokenize`: encode lines of text to token ids, or decode ids back to text, with the
// tokenizer of a model folder (only its tokenizer.json is read); or (--render) show the text a
// chat template and agent template make of dataset rows.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <optional>
#include <string>

#include "cli/arguments.h"
#include "lathe/common/format.h"
#include "lathe/data/dataset.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe::cli {
namespace {

constexpr const char* kDescription =
    "Encode: reads UTF-8 lines from standard input and prints, for each, one JSON array of token ids.\n"
    "Decode (--decode): reads one JSON array of ids per line and prints, for each, the text as one\n"
    "JSON string (so that newlines and other control characters in the text survive on one line).\n"
    "Render (--render): reads one dataset row (JSON) per line and prints, for each, the text the chat\n"
    "template (--template, --agent_template, --system) renders for it, as one JSON string.";

std::string json_string(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One dataset row as the training text (without a generation prompt).
std::string render_line(const Template& chat_template, const Arguments& arguments, const std::string& line,
                        std::size_t line_number) {
  const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!row.is_object()) fail("standard input, line {}: expected a JSON dataset row, got: {}", line_number, line);
  const auto conversation = to_conversation(row, RowLocation{"standard input", static_cast<int64_t>(line_number)});
  return json_string(chat_template.render_text(conversation, /*add_generation_prompt=*/false, arguments.system));
}

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
  return json_string(tokenizer.decode(tokens, skip_special_tokens));
}

}  // namespace

int run_tokenize(const Args& args) {
  CLI::App app{kDescription, "tokenize"};
  Arguments arguments;
  add_options(app, arguments, {ArgumentGroup::Model});
  bool add_special_tokens = true, decode = false, skip_special_tokens = false, render = false;
  app.add_option("--add_special_tokens", add_special_tokens,
                 "add what the post-processor adds (e.g. Llama's <s>); encode only")
      ->capture_default_str();
  app.add_flag("--decode", decode, "read JSON arrays of ids, print each decoded text as a JSON string");
  app.add_option("--skip_special_tokens", skip_special_tokens, "leave special tokens out of decoded text")
      ->capture_default_str();
  app.add_flag("--render", render, "read dataset rows, print each rendered by the chat template as a JSON string");
  if (int code = parse(app, arguments, args); code >= 0) return code;
  if (arguments.model.empty()) fail("--model is required (a model folder holding tokenizer.json, or the file itself)");
  const auto& model_dir = arguments.model;
  const Tokenizer tokenizer = Tokenizer::from_file(model_dir);
  std::optional<Template> chat_template;
  if (render) {
    chat_template = Template::for_model(model_dir, arguments.template_name);
    chat_template->set_agent_template(make_agent_template(arguments, chat_template->spec()));
  }
  std::ios::sync_with_stdio(false);
  std::string line, output;
  for (std::size_t line_number = 1; std::getline(std::cin, line); ++line_number) {
    if (render) {
      output = render_line(*chat_template, arguments, line, line_number);
    } else if (decode) {
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
