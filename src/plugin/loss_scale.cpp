// Loss-scale strategies (docs/plugins.md). The registry and its built-ins are at the bottom.
#include "lathe/plugin/loss_scale.h"
#include "lathe/plugin/loss_scale_pipeline.h"

#include <algorithm>

#include "lathe/common/format.h"
#include "plugin/loss_scale_configs.h"
#include "lathe/tokenizer/pattern.h"

namespace lathe {
using nlohmann::json;

namespace {

// Keyword rules: each keyword gets one weight, the text after it (up to the next keyword) another.
// Regex rules: matches get the weight, the rest keeps 1.
struct KeywordRule {
  std::string keyword;
  double keyword_weight, text_weight;
};
struct RegexRule {
  tokenizer::Pattern pattern;
  double weight;
};

class ConfiguredLossScale : public LossScale {
 public:
  std::vector<KeywordRule> keywords;
  std::vector<RegexRule> regexes;
  std::vector<std::pair<std::string, double>> query_rules;  // agentflan: key in the query -> weight

  std::vector<WeightedText> split(const WeightedText& piece, const PieceInfo& info) const override {
    if (piece.type != ContextType::Response) return {{piece.text, piece.type, 1.0}};
    for (const auto& [key, weight] : query_rules) {
      if (info.query.find(key) != std::string::npos) return {{piece.text, piece.type, weight}};
    }
    auto parts = split_keywords(piece);
    std::vector<WeightedText> result;
    for (auto& part : parts) {
      for (auto& sub : split_regexes(part)) result.push_back(std::move(sub));
    }
    return result;
  }

 private:
  std::vector<WeightedText> split_keywords(const WeightedText& piece) const {
    if (keywords.empty()) return {{piece.text, piece.type, 1.0}};
    std::vector<WeightedText> parts;
    const std::string& text = piece.text;
    std::size_t position = 0;
    double pending_weight = 1.0;  // text before the first keyword keeps weight 1
    while (position < text.size()) {
      // The earliest keyword from here (longest on ties, so "Action Input:" beats "Action:").
      std::size_t best = std::string::npos;
      const KeywordRule* rule = nullptr;
      for (const auto& candidate : keywords) {
        auto found = text.find(candidate.keyword, position);
        if (found == std::string::npos) continue;
        if (found < best || (found == best && candidate.keyword.size() > rule->keyword.size())) {
          best = found;
          rule = &candidate;
        }
      }
      if (!rule) break;
      if (best > position) parts.push_back({text.substr(position, best - position), piece.type, pending_weight});
      parts.push_back({rule->keyword, piece.type, rule->keyword_weight});
      pending_weight = rule->text_weight;
      position = best + rule->keyword.size();
    }
    if (position < text.size()) parts.push_back({text.substr(position), piece.type, pending_weight});
    return parts;
  }

  std::vector<WeightedText> split_regexes(const WeightedText& piece) const {
    std::vector<WeightedText> parts{piece};
    for (const auto& rule : regexes) {
      std::vector<WeightedText> next;
      for (const auto& part : parts) {
        std::size_t position = 0;
        rule.pattern.for_each_match(part.text, [&](std::size_t begin, std::size_t end) {
          if (begin > position) next.push_back({part.text.substr(position, begin - position), part.type, part.weight});
          next.push_back({part.text.substr(begin, end - begin), part.type, part.weight * rule.weight});
          position = end;
        });
        if (position < part.text.size()) next.push_back({part.text.substr(position), part.type, part.weight});
      }
      parts = std::move(next);
    }
    return parts;
  }
};

double weight_at(const json& list, std::size_t index, const std::string& source, const std::string& key) {
  if (!list.is_array() || index >= list.size() || !list[index].is_number()) {
    fail("{}: '{}' must be [weight] or [keyword weight, text weight]", source, key);
  }
  return list[index].get<double>();
}

void add_rules(ConfiguredLossScale& scale, const json& rules, const std::string& source) {
  if (!rules.is_object()) fail("{}: expected an object of keyword or regex rules", source);
  for (const auto& [key, value] : rules.items()) {
    if (value.is_array() && value.size() == 2) {
      scale.keywords.push_back({key, weight_at(value, 0, source, key), weight_at(value, 1, source, key)});
    } else if (value.is_array() && value.size() == 1) {
      // SWIFT matches these with re.DOTALL: a tool call spans lines.
      scale.regexes.push_back({tokenizer::Pattern::regex("(?s)" + key, source + ": '" + key + "'"),
                               weight_at(value, 0, source, key)});
    } else {
      fail("{}: '{}' must be [weight] (a regex) or [keyword weight, text weight]", source, key);
    }
  }
}

bool is_trained_type(ContextType type) { return type == ContextType::Response || type == ContextType::Suffix; }

double base_weight(const std::string& base, const Context& context, int last_round) {
  if (base == "all") return 1.0;
  if (!is_trained_type(context.type)) return 0.0;
  if (base == "last_round") return context.round == last_round ? 1.0 : 0.0;
  return 1.0;  // default
}

// The user query of each round, for strategies that look at it (agentflan).
std::vector<std::string> round_queries(const Conversation& conversation) {
  std::vector<std::string> queries;
  std::string current;
  bool answered = false;
  for (const auto& message : conversation.messages) {
    if (message.role == "user") {
      if (answered) {
        answered = false;
      }
      current = message.content;
    } else if (message.role == "assistant" || message.role == "tool_call") {
      if (!answered) queries.push_back(current);
      answered = true;
    }
  }
  return queries;
}

}  // namespace

std::shared_ptr<LossScale> loss_scale_from_config(const json& config, const std::string& source) {
  auto scale = std::make_shared<ConfiguredLossScale>();
  if (config.contains("response") || config.contains("query")) {
    if (config.contains("response")) add_rules(*scale, config["response"], source + ": response");
    if (config.contains("query")) {
      for (const auto& [key, value] : config["query"].items()) {
        scale->query_rules.emplace_back(key, weight_at(value, 0, source, key));
      }
    }
  } else {
    add_rules(*scale, config, source);
  }
  return scale;
}

const std::vector<LossScaleBase>& loss_scale_bases() {
  static const std::vector<LossScaleBase> bases{
      {"default", "every response (and suffix) token weighs 1, prompts and tool results 0"},
      {"last_round", "only the last round's response is trained"},
      {"all", "every token is trained, prompts included"}};
  return bases;
}

LossScalePipeline::LossScalePipeline(const std::string& spec, const Arguments& arguments) : spec_(spec) {
  std::size_t start = 0;
  std::vector<std::string> names;
  while (start <= spec.size()) {
    auto end = spec.find('+', start);
    if (end == std::string::npos) end = spec.size();
    names.push_back(spec.substr(start, end - start));
    start = end + 1;
  }
  const auto& bases = loss_scale_bases();
  base_ = "default";
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto& name = names[i];
    if (name.empty()) fail("--loss_scale '{}': empty part (expected base+name+name)", spec);
    if (std::any_of(bases.begin(), bases.end(), [&](const LossScaleBase& base) { return base.name == name; })) {
      if (i != 0) fail("--loss_scale '{}': the base '{}' must come first", spec, name);
      base_ = name;
      continue;
    }
    parts_.push_back(loss_scale_registry().create(name, arguments));
  }
}

std::vector<WeightedText> LossScalePipeline::apply(const std::vector<Context>& contexts,
                                                   const Conversation& conversation) const {
  int last_round = -1;
  for (const auto& context : contexts) last_round = std::max(last_round, context.round);
  const auto queries = round_queries(conversation);
  std::vector<WeightedText> pieces;
  for (const auto& context : contexts) {
    WeightedText start{context.text, context.type, base_weight(base_, context, last_round)};
    // Per-message overrides win over every strategy.
    if (is_trained_type(context.type) && context.loss.has_value()) start.weight = *context.loss ? 1.0 : 0.0;
    PieceInfo info{context.round == last_round && last_round >= 0,
                   context.round >= 0 && context.round < static_cast<int>(queries.size()) ? queries[context.round] : ""};
    std::vector<WeightedText> current{start};
    if (start.weight != 0.0) {
      for (const auto& part : parts_) {
        std::vector<WeightedText> next;
        for (const auto& piece : current) {
          for (auto& sub : part->split(piece, info)) {
            sub.weight *= piece.weight;
            next.push_back(std::move(sub));
          }
        }
        current = std::move(next);
      }
    }
    if (is_trained_type(context.type) && context.loss_scale.has_value() && context.loss != false) {
      for (auto& piece : current) piece.weight = *context.loss_scale;
    }
    for (auto& piece : current) {
      if (!piece.text.empty()) pieces.push_back(std::move(piece));
    }
  }
  return pieces;
}

Registry<LossScaleFactory>& loss_scale_registry() {
  static Registry<LossScaleFactory> registry = [] {
    Registry<LossScaleFactory> built_ins("loss_scale");
    auto configured = [&](const std::string& name, const std::string& description) {
      built_ins.add(name, description, [name](const PluginContext&) {
        return loss_scale_from_config(json::parse(builtin_loss_scale_config(name)), "loss_scale/" + name + ".json");
      });
    };
    configured("react", "ReAct: Action / Action Input x2, Thought / Final Answer x1, Observation text untrained");
    configured("qwen", "Qwen tools: ✿FUNCTION✿ / ✿ARGS✿ x2, ✿RETURN✿ x1, ✿RESULT✿ text untrained");
    configured("alpha_umi", "react's rules plus Next: x2");
    configured("agentflan", "AgentFLAN: tool parts x3; a whole response x3 when the query asks for a tool");
    configured("hermes", "<tool_call>...</tool_call> spans x2");
    configured("ignore_empty_think", "an empty <think></think> block at the start is not trained");
    configured("ignore_think_prefix", "the opening <think> tag is not trained");
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
