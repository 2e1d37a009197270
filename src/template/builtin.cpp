// The built-in templates, in SWIFT's shape. Each one is written so that, with a generation prompt,
// it renders exactly what the model's own Jinja chat template renders (tests/template/jinja_test.cpp
// checks Qwen3 and Llama-3 against the files' own templates); docs/templates.md lists where a full
// conversation deliberately differs.
#include <algorithm>
#include <functional>
#include <map>

#include <fmt/ranges.h>

#include "lathe/common/format.h"
#include "lathe/template/template.h"

namespace lathe {
namespace {

TemplateSpec chatml() {
  TemplateSpec spec;
  spec.name = "chatml";
  spec.prompt = "<|im_start|>user\n{{QUERY}}<|im_end|>\n<|im_start|>assistant\n";
  spec.chat_sep = "<|im_end|>\n";
  // ms-swift 4's suffix, as the Jinja templates write it: the newline after the last <|im_end|> is
  // trained too (generation stops at <|im_end|> all the same).
  spec.suffix = "<|im_end|>\n";
  spec.system_prefix = "<|im_start|>system\n{{SYSTEM}}<|im_end|>\n";
  spec.stop_words = {"<|im_end|>"};
  spec.add_special_tokens = true;
  return spec;
}

TemplateSpec qwen(std::string name, std::optional<std::string> default_system) {
  TemplateSpec spec = chatml();
  spec.name = std::move(name);
  spec.default_system = std::move(default_system);
  spec.stop_words = {"<|im_end|>", "<|endoftext|>"};
  spec.agent_template = "hermes";
  spec.add_special_tokens = false;  // Qwen has no BOS
  return spec;
}

TemplateSpec qwen2_5() {
  return qwen("qwen2_5", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
}

TemplateSpec qwen3() {
  TemplateSpec spec = qwen("qwen3", std::nullopt);
  spec.think_blocks = true;
  return spec;
}

// Qwen3 with thinking switched off (enable_thinking=false in its Jinja template): the generation
// prompt already holds an empty think block, so the model answers directly.
TemplateSpec qwen3_nothink() {
  TemplateSpec spec = qwen3();
  spec.name = "qwen3_nothink";
  spec.response_prefix = "<think>\n\n</think>\n\n";
  return spec;
}

// Meta Llama 3 (and 3.1 without tools or a date): no default system.
TemplateSpec llama3() {
  TemplateSpec spec;
  spec.name = "llama3";
  spec.agent_template = "llama3";
  spec.prefix = "<|begin_of_text|>";
  spec.system_prefix =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{{SYSTEM}}<|eot_id|>";
  spec.prompt =
      "<|start_header_id|>user<|end_header_id|>\n\n{{QUERY}}<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  spec.chat_sep = "<|eot_id|>";
  spec.suffix = "<|eot_id|>";
  spec.stop_words = {"<|eot_id|>", "<|end_of_text|>"};
  // Llama 3.1 writes tool results in an "ipython" turn.
  spec.tool_prompt =
      "<|start_header_id|>ipython<|end_header_id|>\n\n{{QUERY}}<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return spec;
}

// Mistral Instruct: no system block; the system is folded into the first [INST] as Mistral's own
// templates do.
TemplateSpec mistral() {
  TemplateSpec spec;
  spec.name = "mistral";
  spec.agent_template = "mistral";
  spec.prefix = "<s>";
  spec.prompt = "[INST] {{QUERY}} [/INST]";
  spec.system_in_query = "{{SYSTEM}}\n\n{{QUERY}}";
  spec.chat_sep = "</s>";
  spec.suffix = "</s>";
  spec.stop_words = {"</s>"};
  return spec;
}

// SWIFT's "default": plain text turns, the tokenizer's BOS in front and its EOS after the answer.
TemplateSpec plain_default() {
  TemplateSpec spec;
  spec.name = "default";
  spec.prompt = "### Human:\n{{QUERY}}\n\n### Assistant:\n";
  spec.chat_sep = "\n\n";
  spec.suffix = "{{EOS}}";
  spec.system_prefix = "{{SYSTEM}}\n\n";
  spec.default_system = "You are a helpful assistant.";
  spec.add_special_tokens = true;
  return spec;
}

// The text as it is: the model sees only what the tokenizer's post-processor adds.
TemplateSpec raw() {
  TemplateSpec spec;
  spec.name = "raw";
  spec.prompt = "{{QUERY}}";
  spec.system_prefix = "{{SYSTEM}}";
  spec.add_special_tokens = true;
  return spec;
}

const std::map<std::string, std::function<TemplateSpec()>>& registry() {
  static const std::map<std::string, std::function<TemplateSpec()>> templates = {
      {"chatml", chatml},     {"qwen2_5", qwen2_5}, {"qwen3", qwen3},
      {"qwen3_nothink", qwen3_nothink},             {"llama3", llama3},
      {"mistral", mistral},   {"default", plain_default}, {"raw", raw},
  };
  return templates;
}

}  // namespace

Template Template::builtin(const std::string& name) {
  const auto& templates = registry();
  auto found = templates.find(name);
  if (found == templates.end()) {
    fail("unknown template '{}'; the templates are: {}", name, fmt::join(builtin_names(), ", "));
  }
  return Template(found->second());
}

std::vector<std::string> Template::builtin_names() {
  std::vector<std::string> names;
  for (const auto& [name, make] : registry()) names.push_back(name);
  return names;
}

}  // namespace lathe
