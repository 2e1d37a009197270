#pragma once
// How the built-in `client` process reward model reads a judge's answer.
#include <optional>
#include <string>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The last "Reward: x" of a judge's answer, clamped to [-1, 1]; nullopt when there is none.
std::optional<double> parse_judge_reward(const std::string& answer);

}  // namespace lathe

LATHE_API_END
