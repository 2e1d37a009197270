// Reward-model plugins (reward_model.h). The registry and its built-in are at the bottom.
#include "lathe/plugin/reward_model.h"

#include <torch/torch.h>

#include "lathe/common/format.h"
#include "lathe/model/classifier.h"
#include "lathe/model/model.h"
#include "lathe/tokenizer/tokenizer.h"

namespace lathe {
namespace {

// ms-swift's `default` reward-model plugin: the classifier's score of each conversation, encoded
// with the reward model's own template.
class ClassifierScorer : public RewardModelScorer {
 public:
  explicit ClassifierScorer(const std::filesystem::path& dir)
      : model_(load_pretrained(dir)), tokenizer_(Tokenizer::from_file(dir)), template_(Template::for_model(dir.string())) {
    if (model_->config().num_labels != 1) {
      fail("--reward_model {}: expected a one-label sequence classifier (a reward model from lathe rlhf --rlhf_type rm), "
           "got {}", dir.string(),
           model_->is_classifier() ? fmt::format("a classifier with {} labels", *model_->config().num_labels) : "a causal LM");
    }
    for (auto& parameter : model_->parameters()) parameter.set_requires_grad(false);
    model_->eval();
  }

  std::vector<double> score(const std::vector<RewardModelInput>& inputs) override {
    std::vector<std::vector<int32_t>> encoded;
    for (const auto& input : inputs)
      encoded.push_back(template_.encode(tokenizer_, input.conversation, /*add_generation_prompt=*/false).input_ids);
    std::vector<std::span<const int32_t>> sequences(encoded.begin(), encoded.end());
    torch::NoGradGuard no_grad;
    const auto logits = classifier_logits(model_, sequences).select(1, 0).contiguous();
    return {logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel()};
  }

 private:
  CausalLM model_;
  Tokenizer tokenizer_;
  Template template_;
};

}  // namespace

Registry<RewardModelFactory>& reward_model_registry() {
  static Registry<RewardModelFactory> registry = [] {
    Registry<RewardModelFactory> built_ins("reward model");
    built_ins.add("default",
                  "a one-label sequence classifier's score of the conversation's last token, in its own template",
                  [](const PluginContext&, const std::filesystem::path& dir) { return std::make_shared<ClassifierScorer>(dir); });
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
