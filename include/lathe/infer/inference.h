#pragma once
// What inference needs from a model folder, loaded once: the model, its tokenizer, the chat
// template and the tokens that end a response. Shared by infer, sample, eval and deploy.
#include <optional>
#include <string>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/infer/engine.h"
#include "lathe/infer/generate.h"
#include "lathe/model/model.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

struct InferenceModel {
  CausalLM model{nullptr};
  Tokenizer tokenizer;
  Template chat_template;
  std::vector<int32_t> stop_token_ids;  // template stop words that are one token, and config eos ids
  std::optional<std::string> system;

  // Prompt tokens for a conversation that ends with a user turn. (The `raw` template gives the
  // query as it is, plus what the tokenizer's post-processor adds.)
  std::vector<int32_t> encode_prompt(const Conversation& conversation) const;
  // Response text without the final stop token.
  std::string decode_response(std::vector<int32_t> ids) const;
  // The template's and agent template's stop words that are not one token (e.g. ReAct's
  // "Observation:"): generation stops at these strings.
  std::vector<std::string> stop_strings() const;
  // Sampling settings from the arguments, with the stop tokens and stop strings above.
  SamplingParams sampling(const Arguments& arguments) const;
  // --max_batch_size, text through this tokenizer (for stop strings and Generation::text; the
  // InferenceModel must outlive the engine), and max_new_tokens shortened to fit the context.
  EngineOptions engine_options(const Arguments& arguments) const;
};

// Loads --model (and, later, --adapters) with --template / --system / --torch_dtype; the chat
// template gets --agent_template (default: the chat template's own, make_agent_template).
InferenceModel load_inference_model(const Arguments& arguments);

}  // namespace lathe

LATHE_API_END
