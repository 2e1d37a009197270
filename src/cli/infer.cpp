// `lathe infer`: an interactive chat on the terminal, or batch answers for a dataset.
#include <fmt/format.h>
#include <unistd.h>

#include <future>
#include <iostream>

#include "cli/arguments.h"
#include "common/format.h"
#include "lathe/data/dataset.h"
#include "lathe/infer/engine.h"
#include "lathe/common/files.h"
#include "lathe/infer/inference.h"

namespace lathe::cli {
namespace {

using nlohmann::json;

// The conversation to answer: the row without its final assistant message (kept as the label).
std::pair<Conversation, std::optional<std::string>> split_label(Conversation conversation) {
  std::optional<std::string> label;
  if (!conversation.messages.empty() && conversation.messages.back().role == "assistant") {
    label = conversation.messages.back().content;
    conversation.messages.pop_back();
  }
  return {std::move(conversation), std::move(label)};
}

json messages_json(const Conversation& conversation) {
  json messages = json::array();
  for (const auto& message : conversation.messages) messages.push_back({{"role", message.role}, {"content", message.content}});
  return messages;
}

json logprobs_json(const std::vector<TokenLogprob>& logprobs) {
  json entries = json::array();
  for (const auto& entry : logprobs) {
    json top = json::array();
    for (const auto& [token, logprob] : entry.top) top.push_back({{"id", token}, {"logprob", logprob}});
    entries.push_back({{"id", entry.token}, {"logprob", entry.logprob}, {"top_logprobs", top}});
  }
  return entries;
}

int run_batch(const Arguments& arguments, InferenceModel& loaded) {
  if (arguments.result_path.empty()) fail("--result_path is required with --val_dataset");
  struct Pending {
    Conversation conversation;
    std::optional<std::string> label;
  };
  std::vector<Pending> rows;
  for (const auto& file : arguments.val_dataset) {
    for_each_row(file, [&](const json& row, const RowLocation& where) {
      auto [conversation, label] = split_label(to_conversation(row, where));
      if (conversation.messages.empty() || conversation.messages.back().role != "user") {
        fail("{}: the row must end with a user message (or a user message and its answer)", where.describe());
      }
      rows.push_back({std::move(conversation), std::move(label)});
    });
  }
  const auto params = loaded.sampling(arguments);
  GenerationEngine engine(loaded.model, loaded.engine_options(arguments));
  std::vector<std::future<Generation>> pending;
  for (const auto& row : rows) pending.push_back(engine.submit(loaded.encode_prompt(row.conversation), params));
  std::string output;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto generation = pending[i].get();
    auto& ids = generation.ids;
    if (!ids.empty() && generation.finish_reason == "stop" && generation.stop_string.empty()) ids.pop_back();
    json result = {{"messages", messages_json(rows[i].conversation)},
                   {"response", generation.text},
                   {"response_ids", ids},
                   {"finish_reason", generation.finish_reason}};
    if (rows[i].label) result["labels"] = *rows[i].label;
    if (params.logprobs) result["logprobs"] = logprobs_json(generation.logprobs);
    // A response cut by max_new_tokens may end inside a UTF-8 character.
    output += result.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    const auto done = i + 1;
    if (done % static_cast<std::size_t>(engine.max_batch_size()) == 0 || done == rows.size()) {
      fmt::print(stderr, "lathe infer: {}/{} rows\n", done, rows.size());
    }
  }
  write_file_atomic(arguments.result_path, output);
  fmt::print(stderr, "lathe infer: results written to {}\n", arguments.result_path);
  return 0;
}

void print_chat_help() {
  fmt::print("Type a message and press Enter. Commands: 'clear' forgets the conversation, "
             "'exit' or 'quit' leaves.\n");
}

std::string answer(InferenceModel& loaded, GenerationEngine& engine, const Conversation& conversation,
                   const SamplingParams& params, bool stream) {
  Tokenizer::StreamDecoder decoder(loaded.tokenizer);
  const auto& stops = loaded.stop_token_ids;
  StreamCallback print_token;
  if (stream) {
    print_token = [&](const TokenLogprob& token) {
      if (std::find(stops.begin(), stops.end(), token.token) != stops.end()) return true;
      fmt::print("{}", decoder.push(token.token));
      std::fflush(stdout);
      return true;
    };
  }
  auto generation = engine.submit(loaded.encode_prompt(conversation), params, print_token).get();
  // Streamed text may run into a stop string; the conversation keeps the text cut before it.
  fmt::print("{}\n", stream ? decoder.finish() : generation.text);
  return generation.text;
}

int run_chat(const Arguments& arguments, InferenceModel& loaded) {
  const bool interactive = isatty(STDIN_FILENO);
  if (interactive) print_chat_help();
  const auto params = loaded.sampling(arguments);
  GenerationEngine engine(loaded.model, loaded.engine_options(arguments));
  Conversation conversation;
  std::string line;
  while (true) {
    if (interactive) {
      fmt::print("<<< ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "exit" || line == "quit") break;
    if (line == "clear") {
      conversation.messages.clear();
      fmt::print("(conversation cleared)\n");
      continue;
    }
    // raw writes the text as it is: an empty line asks for unconditional sampling from the BOS.
    if (line.empty() && loaded.chat_template.spec().name != "raw") continue;
    conversation.messages.push_back({"user", line, {}, {}});
    if (interactive) fmt::print(">>> ");
    auto response = answer(loaded, engine, conversation, params, arguments.stream);
    conversation.messages.push_back({"assistant", std::move(response), {}, {}});
  }
  return 0;
}

}  // namespace

int run_infer(const Args& args) {
  CLI::App app("Chat with a model on the terminal, or answer every row of --val_dataset into "
               "--result_path (jsonl rows with response and response_ids).",
               "infer");
  Arguments arguments;
  add_options(app, arguments, {OptionGroup::Model, OptionGroup::Generation, OptionGroup::Data});
  if (int code = parse(app, args); code >= 0) return code;
  auto loaded = load_inference_model(arguments);
  return arguments.val_dataset.empty() ? run_chat(arguments, loaded) : run_batch(arguments, loaded);
}

}  // namespace lathe::cli
