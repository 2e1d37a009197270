#pragma once
// Reading tokenizer.json sections with errors that name the file and the field.
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "lathe/common/format.h"

namespace lathe::tokenizer {

// A JSON value together with where it came from, e.g. "tokenizer.json: pre_tokenizer.pretokenizers[1]".
class Section {
 public:
  Section(const nlohmann::json& value, std::string file, std::string path)
      : value_(&value), file_(std::move(file)), path_(std::move(path)) {}

  const nlohmann::json& json() const { return *value_; }
  const std::string& path() const { return path_; }
  // "file: path", the prefix of every message about this section.
  std::string where() const { return fmt::format("{}: {}", file_, path_.empty() ? "(top level)" : path_); }
  bool is_null() const { return value_->is_null(); }
  bool has(std::string_view key) const { return value_->is_object() && value_->contains(key); }

  Section at(std::string_view key) const {
    if (!value_->is_object()) fail_here("expected an object");
    const auto it = value_->find(key);
    static const nlohmann::json null_value;
    return Section(it == value_->end() ? null_value : *it, file_, join(key));
  }
  Section at(std::size_t index) const {
    return Section((*value_)[index], file_, fmt::format("{}[{}]", path_, index));
  }
  std::size_t size() const {
    if (!value_->is_array()) fail_here("expected an array");
    return value_->size();
  }

  std::string string(std::string_view key) const {
    const Section field = at(key);
    if (!field.value_->is_string()) field.fail_here("expected a string");
    return field.value_->get<std::string>();
  }
  std::string string_or(std::string_view key, std::string fallback) const {
    const Section field = at(key);
    if (field.is_null()) return fallback;
    return string(key);
  }
  bool boolean_or(std::string_view key, bool fallback) const {
    const Section field = at(key);
    if (field.is_null()) return fallback;
    if (!field.value_->is_boolean()) field.fail_here("expected true or false");
    return field.value_->get<bool>();
  }
  long long integer_or(std::string_view key, long long fallback) const {
    const Section field = at(key);
    if (field.is_null()) return fallback;
    if (!field.value_->is_number_integer()) field.fail_here("expected an integer");
    return field.value_->get<long long>();
  }
  std::string type() const { return string("type"); }

  [[noreturn]] void fail_here(std::string_view problem) const {
    fail("{}: {}", where(), problem);
  }

 private:
  std::string join(std::string_view key) const {
    return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
  }
  const nlohmann::json* value_;
  std::string file_;
  std::string path_;
};

}  // namespace lathe::tokenizer
