// `lathe infer`: an interactive chat on the terminal, or batch answers for a dataset.
#include <fmt/format.h>
#include <unistd.h>

#include <iostream>

#include "cli/arguments.h"
#include "lathe/infer/engine.h"
#include "lathe/infer/inference.h"
#include "lathe/recipe/batch_inference.h"

namespace lathe::cli {
namespace {

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
  add_options(app, arguments, {ArgumentGroup::Model, ArgumentGroup::Generation, ArgumentGroup::Data, ArgumentGroup::Export});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  auto loaded = load_inference_model(arguments);
  if (arguments.val_dataset.empty()) return run_chat(arguments, loaded);
  const auto rows = run_batch_inference(arguments, loaded);
  fmt::print(stderr, "lathe infer: {} results written to {}\n", rows, arguments.result_path);
  return 0;
}

}  // namespace lathe::cli
