#include "lathe/train/objective.h"

namespace lathe {

void MetricTotals::add(const std::string& key, double sum, double count) {
  auto& total = totals_[key];
  total.first += sum;
  total.second += count;
}

void MetricTotals::merge(const MetricTotals& other) {
  for (const auto& [key, total] : other.totals_) add(key, total.first, total.second);
}

std::map<std::string, double> MetricTotals::means(const std::string& prefix) const {
  std::map<std::string, double> result;
  for (const auto& [key, total] : totals_) {
    if (total.second > 0) result[prefix + key] = total.first / total.second;
  }
  return result;
}

}  // namespace lathe
