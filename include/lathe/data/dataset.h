#pragma once
// Dataset rows in SWIFT's formats, normalised to a Conversation (docs/plugins.md, docs/architecture.md):
//   messages       {"messages": [{"role", "content"}...], "tools"?}
//   sharegpt       {"conversations": [{"from": "human"|"gpt"|"system"|..., "value"}...], "system"?}
//                  or {"conversation": [{"human", "assistant"}...], "system"?}
//   alpaca         {"instruction", "input"?, "output", "system"?}
//   query-response {"query", "response", "history"?: [[q, r]...], "system"?} and the usual
//                  column aliases (prompt/question -> query, answer/output/completion -> response)
//   text           {"text"}: pre-training rows, one assistant message
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/template/template.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Where a row came from, for error messages ("data.jsonl:17").
struct RowLocation {
  std::string file;
  int64_t line = 0;
  std::string describe() const;
};

// Normalises one row; throws lathe::Error naming the location and the field.
Conversation to_conversation(const nlohmann::json& row, const RowLocation& where);

// A row as a prompt to answer (inference, sampling): the conversation up to its last user
// message, and the row's final assistant message when it has one (its label or reference answer).
// Throws lathe::Error naming the location when the row does not end with a user message (or a
// user message and its answer).
struct PromptRow {
  Conversation prompt;
  std::optional<std::string> answer;
};
PromptRow to_prompt_row(const nlohmann::json& row, const RowLocation& where);

// A --task_type embedding row: the anchor, its positive, its negatives (each a conversation ending
// with an empty assistant message, whose last user message carries the text to embed) and the
// positive's label. SWIFT's two layouts:
//   {"messages": [..., user: anchor, assistant: positive], "rejected_response"?: [negative...] or one
//    string, "label"?: similarity}  (also query/response and the other conversation formats); the
//    positive and negatives replace the anchor's text in the same conversation (system, history);
//   {"messages": [... user: anchor], "positive_messages": [[messages]], "negative_messages"?:
//    [[messages]...], "label"?}: each list its own conversation.
// label is a number or a boolean, 1 when absent (infonce's positive). Throws lathe::Error naming
// the location and the field.
struct EmbeddingRow {
  Conversation anchor;
  Conversation positive;
  std::vector<Conversation> negatives;
  double label = 1.0;
};
EmbeddingRow to_embedding_row(const nlohmann::json& row, const RowLocation& where);

// A row of lathe rlhf's pairwise types (dpo, cpo, simpo, orpo), in ms-swift's layout: the
// conversation (any format above) ending with the chosen answer, and the rejected side as either
//   "rejected_response": a string, or a list of assistant / tool messages, that replaces everything
//                        after the last user message; or
//   "rejected_messages": a whole conversation of its own;
// a "margin" (ms-swift's reward-model column; rm itself is not built yet) must be a number.
// Throws lathe::Error naming the location and the field (a missing rejected side, a rejected
// answer equal to the chosen one, a user message among the rejected ones).
struct PreferenceRow {
  Conversation chosen;
  Conversation rejected;
  double margin = 0;
};
PreferenceRow to_preference_row(const nlohmann::json& row, const RowLocation& where);

// A kto row: a conversation ending with an answer, and "label", a JSON boolean (true: desirable).
struct LabelledRow {
  Conversation conversation;
  bool desirable = true;
};
LabelledRow to_labelled_row(const nlohmann::json& row, const RowLocation& where);

// The conversation as a "messages" list [{"role", "content"}], roles as Lathe names them.
nlohmann::json to_messages_json(const Conversation& conversation);

// One OpenAI tool call ({"function": {"name", "arguments"}} or {"name", "arguments"}) as a
// tool_call message holding {"name", "arguments"}; arguments given as JSON text are parsed when
// they are valid JSON. nullopt when the call is not an object with a string name, so that each
// caller reports the error in its own terms (a file:line, an HTTP 400).
std::optional<Message> tool_call_message(const nlohmann::json& call);

// Reads rows of a .jsonl, .json (array of objects) or .csv file, calling `visit` with each row and
// its location. Throws lathe::Error naming the file (and line) when it is unreadable or malformed.
void for_each_row(const std::filesystem::path& file,
                  const std::function<void(const nlohmann::json& row, const RowLocation& where)>& visit);

std::vector<nlohmann::json> read_rows(const std::filesystem::path& file);

}  // namespace lathe

LATHE_API_END
