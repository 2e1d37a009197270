#pragma once
// How the built-in outcome reward models read a reference answer and compare math answers, public
// for reward plugins that want the same rules.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The row's reference answer ("solution", else "answer", else "response"); fails when none is a
// string.
std::string reference_answer(const nlohmann::json& row);

// The content of the last \boxed{...} (balanced braces), or nullopt when there is none.
std::optional<std::string> last_boxed(const std::string& text);
// The canonical form of a math answer (spaces, \left/\right, \dfrac, \frac12, $...$, trailing "."
// and a trailing \text{unit} removed or unified).
std::string normalize_math_answer(const std::string& answer);
// Equal after normalisation, or both numbers (integers, decimals, a/b, \frac{a}{b}) within 1e-6
// relative.
bool math_answers_equal(const std::string& a, const std::string& b);

}  // namespace lathe

LATHE_API_END
