// Rendering a conversation as SWIFT does: the prefix (or system prefix) once, then per round the
// prompt with the query, the response (RESPONSE) and the end-of-turn text after it (SUFFIX:
// chat_sep between rounds, suffix after the last), so that the model learns to end its turns.
#include <algorithm>
#include <string_view>
#include <utility>

#include "lathe/common/format.h"
#include "lathe/template/agent_template.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe {
namespace {

bool is_query_role(std::string_view role) {
  // "tool" is the OpenAI name of SWIFT's tool_response.
  return role == "user" || role == "tool_response" || role == "tool";
}
bool is_response_role(std::string_view role) { return role == "assistant" || role == "tool_call"; }

// One round: a query (a user message, or tool results) and the answer to it, if any.
struct Round {
  std::vector<const Message*> query;
  std::vector<const Message*> response;
  bool query_from_user = false;  // not a tool result
};

struct Rounds {
  std::optional<std::string> system;  // from a leading system message
  std::vector<Round> rounds;
};

bool is_tool_result_text(std::string_view text) {
  // Qwen3's template also treats a user message wrapped in <tool_response> as a tool result.
  return text.starts_with("<tool_response>") && text.ends_with("</tool_response>");
}

Rounds split_rounds(const Conversation& conversation) {
  Rounds result;
  const auto& messages = conversation.messages;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const Message& message = messages[i];
    if (message.role == "system") {
      if (i != 0) fail("message {}: a system message must be the first message", i);
      result.system = message.content;
    } else if (is_query_role(message.role)) {
      bool from_user = message.role == "user" && !is_tool_result_text(message.content);
      bool continues_query = !result.rounds.empty() && result.rounds.back().response.empty();
      if (continues_query && (from_user || result.rounds.back().query_from_user)) {
        fail("message {}: two {} messages in a row without an assistant message between them", i,
             message.role);
      }
      if (!continues_query) result.rounds.emplace_back();
      result.rounds.back().query.push_back(&message);
      result.rounds.back().query_from_user = from_user;
    } else if (is_response_role(message.role)) {
      if (result.rounds.empty()) {
        fail("message {}: an {} message must follow a user message", i, message.role);
      }
      result.rounds.back().response.push_back(&message);
    } else {
      fail("message {}: unknown role '{}'; expected system, user, assistant, tool_call or "
           "tool_response",
           i, message.role);
    }
  }
  if (result.rounds.empty()) fail("the conversation has no user message");
  return result;
}

// Replaces {{NAME}} placeholders in one pass, so that text inserted for one placeholder (a user
// query that happens to contain "{{SYSTEM}}") is never read as another.
std::string fill(std::string_view pattern,
                 std::initializer_list<std::pair<std::string_view, std::string_view>> values) {
  std::string out;
  std::size_t pos = 0;
  while (pos < pattern.size()) {
    std::size_t open = pattern.find("{{", pos);
    if (open == std::string_view::npos) break;
    bool replaced = false;
    for (const auto& [name, value] : values) {
      if (pattern.substr(open).starts_with(name)) {
        out.append(pattern.substr(pos, open - pos)).append(value);
        pos = open + name.size();
        replaced = true;
        break;
      }
    }
    if (!replaced) {
      out.append(pattern.substr(pos, open + 2 - pos));
      pos = open + 2;
    }
  }
  out.append(pattern.substr(std::min(pos, pattern.size())));
  return out;
}

std::string_view trim_newlines_left(std::string_view text) {
  while (!text.empty() && text.front() == '\n') text.remove_prefix(1);
  return text;
}
std::string_view trim_newlines_right(std::string_view text) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  return text;
}

// An answer split at its think block, the way Qwen3's template reads it.
struct Thinking {
  std::string_view reasoning;  // empty when there is no block
  std::string_view answer;
};

Thinking split_thinking(std::string_view content) {
  std::size_t close_first = content.find("</think>");
  if (close_first == std::string_view::npos) return {{}, content};
  std::size_t close_last = content.rfind("</think>");
  std::string_view answer = trim_newlines_left(content.substr(close_last + 8));
  std::string_view before = trim_newlines_right(content.substr(0, close_first));
  std::size_t open = before.rfind("<think>");
  std::string_view reasoning = open == std::string_view::npos ? before : before.substr(open + 7);
  return {trim_newlines_right(trim_newlines_left(reasoning)), answer};
}

// Qwen3's rule (TemplateSpec::think_blocks). `after_last_query`: the answer comes after the last
// user query; `final`: it is the last message of the conversation.
std::string apply_think_blocks(std::string_view content, bool after_last_query, bool final) {
  Thinking parts = split_thinking(content);
  if (after_last_query && (final || !parts.reasoning.empty())) {
    return fmt::format("<think>\n{}\n</think>\n\n{}", parts.reasoning, parts.answer);
  }
  return std::string(parts.answer);
}

bool has_tools(const nlohmann::json& tools) {
  return !tools.is_null() && !(tools.is_structured() && tools.empty()) &&
         !(tools.is_string() && tools.get_ref<const std::string&>().empty());
}

// A tool_call message's content: {"name": ..., "arguments": ...} (arguments may be JSON text).
ToolCall parse_tool_call_message(const Message& message, std::size_t index) {
  auto content = nlohmann::json::parse(message.content, nullptr, false);
  if (content.is_discarded() || !content.is_object() || !content.contains("name") ||
      !content["name"].is_string()) {
    fail("message {}: a tool_call message must hold JSON {{\"name\": ..., \"arguments\": ...}}, "
         "got '{}'",
         index, message.content);
  }
  nlohmann::json arguments = content.contains("arguments") ? content["arguments"] : nlohmann::json::object();
  return ToolCall{content["name"].get<std::string>(), std::move(arguments)};
}

std::string join_contents(const std::vector<const Message*>& messages) {
  std::string text;
  for (const Message* message : messages) {
    if (!text.empty()) text += '\n';
    text += message->content;
  }
  return text;
}

class Renderer {
 public:
  Renderer(const TemplateSpec& spec, const AgentTemplate* agent) : spec_(spec), agent_(agent) {}

  std::vector<Context> run(const Conversation& conversation, bool add_generation_prompt,
                           const std::optional<std::string>& system_override) {
    first_message_ = conversation.messages.data();
    Rounds parsed = split_rounds(conversation);
    const std::vector<Round>& rounds = parsed.rounds;
    if (add_generation_prompt && !rounds.back().response.empty()) {
      fail("add_generation_prompt: the conversation must end with a user or tool message, not "
           "with an {} message",
           rounds.back().response.back()->role);
    }
    std::optional<std::string> system = parsed.system;
    if (!system) system = system_override ? system_override : spec_.default_system;
    if (has_tools(conversation.tools)) {
      if (!agent_) {
        fail("template '{}': the conversation has tools but no agent template was given to "
             "present them",
             spec_.name);
      }
      system = agent_->format_system(conversation.tools, system.value_or(""));
    }
    if (system && system->empty()) system.reset();  // an empty system means none

    bool system_in_query = false;
    if (!system) {
      add(fill_eos(spec_.prefix), ContextType::Other);
    } else if (spec_.system_prefix) {
      add(fill(*spec_.system_prefix, {{"{{SYSTEM}}", *system}, {"{{EOS}}", spec_.eos_token}}),
          ContextType::Other);
    } else if (spec_.system_in_query) {
      add(fill_eos(spec_.prefix), ContextType::Other);
      system_in_query = true;
    } else {
      fail("template '{}' has no place for a system message", spec_.name);
    }

    // Without any user query no answer counts as after it (Qwen3's template does the same).
    int last_user_round = static_cast<int>(rounds.size());
    for (int r = 0; r < static_cast<int>(rounds.size()); ++r) {
      if (rounds[r].query_from_user) last_user_round = r;
    }
    for (int r = 0; r < static_cast<int>(rounds.size()); ++r) {
      const Round& round = rounds[r];
      if (is_agent_tool_round(round)) {
        add_tool_results(round);
      } else {
        std::string query = join_contents(round.query);
        if (r == 0 && system_in_query) {
          query = fill(*spec_.system_in_query, {{"{{SYSTEM}}", *system}, {"{{QUERY}}", query}});
        }
        add(fill(spec_.prompt, {{"{{QUERY}}", query}, {"{{EOS}}", spec_.eos_token}}),
            ContextType::Other);
      }
      bool last = r + 1 == static_cast<int>(rounds.size());
      if (round.response.empty()) {
        if (last && add_generation_prompt) add(spec_.response_prefix, ContextType::Other);
        continue;
      }
      add_response(round, r, /*after_last_query=*/r >= last_user_round, last);
      // ReAct-style results continue the assistant's text: no end of turn before them.
      bool results_follow_in_turn = !last && is_agent_tool_round(rounds[r + 1]) &&
                                    agent_->result_placement() == ToolResultPlacement::AssistantTurn;
      if (!results_follow_in_turn) {
        add(fill_eos(last ? spec_.suffix : spec_.chat_sep), ContextType::Suffix, r);
      }
    }
    return std::move(contexts_);
  }

 private:
  void add(std::string text, ContextType type, int round = -1) {
    if (text.empty()) return;
    contexts_.push_back(Context{std::move(text), type, round, std::nullopt, std::nullopt});
  }

  std::string fill_eos(std::string_view pattern) const {
    return fill(pattern, {{"{{EOS}}", spec_.eos_token}});
  }

  std::size_t index_of(const Message& message) const {
    return static_cast<std::size_t>(&message - first_message_);
  }

  // Tool results are written by the agent template only when one is given; without one they
  // are plain queries.
  bool is_agent_tool_round(const Round& round) const {
    return agent_ && !round.query_from_user && round.query.front()->role != "user";
  }

  // Tool results never carry loss (OTHER): in the assistant's turn (ReAct), or as their own turn
  // through the tool prompt (the user prompt unless the template has one).
  void add_tool_results(const Round& round) {
    std::vector<std::string> results;
    for (const Message* message : round.query) results.push_back(message->content);
    std::string text = agent_->format_tool_responses(results);
    if (agent_->result_placement() == ToolResultPlacement::ToolTurn) {
      text = fill(spec_.tool_prompt.value_or(spec_.prompt),
                  {{"{{QUERY}}", text}, {"{{EOS}}", spec_.eos_token}});
    }
    add(std::move(text), ContextType::Other);
  }

  // The text of response message `i`; a run of tool_call messages is written at once by the agent
  // template (it carries the first call's loss override). Returns the index after the run.
  std::size_t response_text(const Round& round, std::size_t i, std::string& text) const {
    const Message& message = *round.response[i];
    if (message.role != "tool_call" || !agent_) {
      text = message.content;
      return i + 1;
    }
    std::vector<ToolCall> calls;
    std::size_t end = i;
    for (; end < round.response.size() && round.response[end]->role == "tool_call"; ++end) {
      calls.push_back(parse_tool_call_message(*round.response[end], index_of(*round.response[end])));
    }
    text = agent_->format_tool_calls(calls);
    return end;
  }

  // One RESPONSE context per message, so that each keeps its own loss override; the messages
  // of one answer (text, then tool calls) are joined by newlines.
  void add_response(const Round& round, int r, bool after_last_query, bool last_round) {
    for (std::size_t i = 0, next = 0; i < round.response.size(); i = next) {
      const Message& message = *round.response[i];
      std::string text;
      next = response_text(round, i, text);
      if (spec_.think_blocks && message.role == "assistant") {
        // Tool calls that follow belong to this answer (Qwen3 writes them inside the message).
        bool final = last_round && std::none_of(round.response.begin() + i + 1,
                                                round.response.end(), [](const Message* later) {
                                                  return later->role == "assistant";
                                                });
        text = apply_think_blocks(text, after_last_query, final);
      }
      if (next < round.response.size()) text += '\n';
      if (text.empty()) continue;
      contexts_.push_back(
          Context{std::move(text), ContextType::Response, r, message.loss, message.loss_scale});
    }
  }

  const TemplateSpec& spec_;
  const AgentTemplate* agent_;
  const Message* first_message_ = nullptr;
  std::vector<Context> contexts_;
};

}  // namespace

Template::Template(TemplateSpec spec) : spec_(std::move(spec)) {
  if (spec_.prompt.find("{{QUERY}}") == std::string::npos) {
    fail("template '{}': prompt '{}' has no {{{{QUERY}}}} placeholder", spec_.name, spec_.prompt);
  }
}

std::vector<Context> Template::render(const Conversation& conversation, bool add_generation_prompt,
                                      const std::optional<std::string>& system) const {
  return Renderer(spec_, agent_.get()).run(conversation, add_generation_prompt, system);
}

void Template::set_agent_template(std::shared_ptr<const AgentTemplate> agent) {
  agent_ = std::move(agent);
}

std::vector<std::string> Template::stop_words() const {
  std::vector<std::string> words = spec_.stop_words;
  if (agent_) {
    for (std::string& word : agent_->stop_words()) {
      if (std::find(words.begin(), words.end(), word) == words.end()) words.push_back(std::move(word));
    }
  }
  return words;
}

std::string Template::render_text(const Conversation& conversation, bool add_generation_prompt,
                                  const std::optional<std::string>& system) const {
  std::string text;
  for (const Context& context : render(conversation, add_generation_prompt, system)) {
    text += context.text;
  }
  return text;
}

Encoded Template::encode(const Tokenizer& tokenizer, const Conversation& conversation,
                         bool add_generation_prompt,
                         const std::optional<std::string>& system) const {
  Encoded encoded;
  encoded.contexts = render(conversation, add_generation_prompt, system);
  // Nothing to write (raw with an empty query) still gets what the post-processor adds, a BOS:
  // generating from it alone is unconditional sampling.
  if (encoded.contexts.empty() && spec_.add_special_tokens) encoded.contexts.push_back(Context{"", ContextType::Other, -1, {}, {}});
  for (std::size_t c = 0; c < encoded.contexts.size(); ++c) {
    const Context& context = encoded.contexts[c];
    // Only the first context gets what the post-processor adds (a BOS in front); contexts are
    // tokenized one by one, so no token spans two contexts.
    bool with_specials = spec_.add_special_tokens && c == 0;
    std::vector<int32_t> ids = tokenizer.encode(context.text, with_specials);
    encoded.input_ids.insert(encoded.input_ids.end(), ids.begin(), ids.end());
    encoded.types.insert(encoded.types.end(), ids.size(), context.type);
    encoded.context_of.insert(encoded.context_of.end(), ids.size(), static_cast<int32_t>(c));
  }
  return encoded;
}

}  // namespace lathe
