#include "recipe/classifier.h"

#include "lathe/common/json_file.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe {

ClassifierConversion classifier_conversion(const std::filesystem::path& model_dir, int64_t labels) {
  ClassifierConversion conversion{labels};
  const auto tokenizer_config = read_json_if_present(model_dir / "tokenizer_config.json");
  auto text = text_field(tokenizer_config, "pad_token");
  if (text.empty()) text = text_field(tokenizer_config, "eos_token");
  if (text.empty()) return conversion;
  if (const auto id = Tokenizer::from_file(model_dir).token_to_id(text)) conversion.pad_token_id = *id;
  return conversion;
}

}  // namespace lathe
