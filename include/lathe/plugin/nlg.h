#pragma once
// The pieces of the built-in `nlg` metric, public for tests and for metric plugins that combine
// them.
#include <string>
#include <string_view>
#include <vector>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Words split on whitespace; every CJK character (ideographs, kana, CJK punctuation) a token.
std::vector<std::string> nlg_tokens(std::string_view text);
// ROUGE-N F1 from clipped n-gram overlap; 0 when either side has no n-gram.
double rouge_n(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference, int n);
// ROUGE-L F1 from the longest common subsequence.
double rouge_l(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference);
// Sentence BLEU-4 (uniform weights, brevity penalty) with NIST geometric smoothing: the k-th
// n-gram order without a match gets precision 1 / (2^k * hypothesis n-grams).
double sentence_bleu4(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference);

}  // namespace lathe

LATHE_API_END
