// A reward-model plugin registered as "sigmoid_rm": the reward model's score squashed into (0, 1)
// by the logistic function, so that it weighs like a 0/1 reward function beside it. Written only
// against the public headers; the built-in `default` is the same without the squashing.
//
//   lathe rlhf --rlhf_type grpo ... --reward_model RM_DIR --reward_model_plugin sigmoid_rm \
//       --external_plugins examples/plugins/reward_model/sigmoid_rm.cpp
//
// The folder is a one-label sequence classifier (what lathe rlhf --rlhf_type rm --train_type full
// writes); each conversation ends with the completion and is encoded with the folder's template.
#include <lathe/plugin.h>
#include <lathe/plugin/reward_model.h>
#include <lathe/model/classifier.h>
#include <lathe/model/model.h>
#include <lathe/tokenizer/tokenizer.h>

#include <torch/torch.h>

#include <cmath>

namespace {

class SigmoidRewardModel : public lathe::RewardModelScorer {
 public:
  explicit SigmoidRewardModel(const std::filesystem::path& dir)
      : model_(lathe::load_pretrained(dir)), tokenizer_(lathe::Tokenizer::from_file(dir)),
        template_(lathe::Template::for_model(dir.string())) {
    model_->eval();
  }

  std::vector<double> score(const std::vector<lathe::RewardModelInput>& inputs) override {
    std::vector<std::vector<int32_t>> encoded;
    for (const auto& input : inputs) encoded.push_back(template_.encode(tokenizer_, input.conversation, false).input_ids);
    std::vector<std::span<const int32_t>> sequences(encoded.begin(), encoded.end());
    torch::NoGradGuard no_grad;
    const auto logits = lathe::classifier_logits(model_, sequences);
    std::vector<double> rewards;
    for (int64_t i = 0; i < logits.size(0); ++i) rewards.push_back(1.0 / (1.0 + std::exp(-logits[i][0].item<double>())));
    return rewards;
  }

 private:
  lathe::CausalLM model_;
  lathe::Tokenizer tokenizer_;
  lathe::Template template_;
};

}  // namespace

LATHE_PLUGIN() {
  lathe::reward_model_registry().add(
      "sigmoid_rm", "the reward model's score through the logistic function, in (0, 1) (example plugin)",
      [](const lathe::PluginContext&, const std::filesystem::path& dir) { return std::make_shared<SigmoidRewardModel>(dir); });
}
