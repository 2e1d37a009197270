#pragma once
// Which Linear layers a LoraConfig targets, with PEFT's matching rules.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lathe/model/model.h"
#include "lathe/tuner/lora.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe::tuner {

using NamedLinear = std::pair<std::string, std::shared_ptr<LinearImpl>>;

// Every Linear of the model with its path, in model order.
std::vector<NamedLinear> linear_modules(CausalLM& model);

// The layers `config` selects: target_regex full-matches the path; a name matches a path equal to
// it or ending in "." + name; "all-linear" takes every Linear but the output head. Throws
// lathe::Error naming `source` (where the request came from) when nothing matches or the regex is
// invalid.
std::vector<NamedLinear> select_targets(const std::vector<NamedLinear>& linears, const LoraConfig& config,
                                        const std::string& source);

// The target_modules value PEFT records for the adapted paths: the regex, or the sorted requested
// names that matched something (for all-linear, the last path component of every adapted layer).
std::vector<std::string> recorded_target_names(const LoraConfig& config, const std::vector<std::string>& adapted);

bool suffix_matches(const std::string& path, const std::string& name);

// default | gaussian | pissa (defined with the initialisers in lora.cpp).
bool is_known_init(const std::string& init);

}  // namespace lathe::tuner

LATHE_API_END
