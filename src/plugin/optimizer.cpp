// Optimizers and learning-rate schedules (docs/plugins.md). The registry is at the bottom.
#include "lathe/plugin/optimizer.h"
#include "lathe/plugin/schedules.h"
#include "lathe/plugin/matrix_optimizer.h"

#include <torch/optim/adamw.h>

#include <cmath>
#include <map>
#include <numbers>
#include <tuple>

#include "lathe/common/format.h"

namespace lathe {

void LRScheduler::remember_base_rates(torch::optim::Optimizer& optimizer) {
  base_rates_.clear();
  for (auto& group : optimizer.param_groups()) base_rates_.push_back(group.options().get_lr());
}

void LRScheduler::apply(torch::optim::Optimizer& optimizer, int64_t step) const {
  const double multiplier = factor(step);
  auto& groups = optimizer.param_groups();
  for (std::size_t g = 0; g < groups.size() && g < base_rates_.size(); ++g) {
    groups[g].options().set_lr(base_rates_[g] * multiplier);
  }
}

namespace {

class FunctionScheduler : public LRScheduler {
 public:
  explicit FunctionScheduler(std::function<double(int64_t)> function) : function_(std::move(function)) {}
  double factor(int64_t step) const override { return function_(step); }

 private:
  std::function<double(int64_t)> function_;
};

// As transformers' schedules: linear warm-up from 0, then the decay over the remaining steps.
double warmup(int64_t step, int64_t warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
}
double progress(int64_t step, int64_t warmup_steps, int64_t total_steps) {
  return static_cast<double>(step - warmup_steps) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
}

}  // namespace

std::shared_ptr<LRScheduler> make_scheduler(const std::string& type, int64_t warmup_steps, int64_t total_steps,
                                            double min_lr_rate) {
  auto schedule = [&](std::function<double(double)> decay) {
    return std::make_shared<FunctionScheduler>([=](int64_t step) {
      if (step < warmup_steps) return warmup(step, warmup_steps);
      return decay(std::clamp(progress(step, warmup_steps, total_steps), 0.0, 1.0));
    });
  };
  if (type == "cosine") return schedule([](double p) { return 0.5 * (1.0 + std::cos(std::numbers::pi * p)); });
  if (type == "linear") return schedule([](double p) { return 1.0 - p; });
  if (type == "constant") return std::make_shared<FunctionScheduler>([](int64_t) { return 1.0; });
  if (type == "constant_with_warmup") return schedule([](double) { return 1.0; });
  if (type == "cosine_with_min_lr") {
    return schedule([min_lr_rate](double p) {
      return min_lr_rate + (1.0 - min_lr_rate) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    });
  }
  fail("--lr_scheduler_type: unknown schedule '{}' (expected cosine, linear, constant, "
       "constant_with_warmup or cosine_with_min_lr)", type);
}

int64_t warmup_steps_for(const Arguments& arguments, int64_t total_steps) {
  if (arguments.warmup_steps > 0) return arguments.warmup_steps;
  return static_cast<int64_t>(std::ceil(arguments.warmup_ratio * static_cast<double>(total_steps)));
}

static bool is_no_decay(const std::string& name, const torch::Tensor& parameter) {
  return parameter.dim() < 2 || name.find("norm") != std::string::npos || name.ends_with(".bias");
}

ParameterGroups trainable_parameter_groups(CausalLMImpl& model) {
  ParameterGroups groups;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    if (is_no_decay(item.key(), item.value())) {
      groups.no_decay.push_back(item.value());
      groups.no_decay_names.push_back(item.key());
    } else {
      groups.decay.push_back(item.value());
      groups.decay_names.push_back(item.key());
    }
  }
  return groups;
}

std::string optimizer_name(const Arguments& arguments) {
  if (arguments.optimizer != "default") return arguments.optimizer;
  if (arguments.use_galore) return "galore";
  if (arguments.lorap_lr_ratio > 0) return "lorap";
  return arguments.optimizer;
}

MatrixOptimizer::MatrixOptimizer(std::vector<RuleGroup> groups, MatrixOptimizerOptions options)
    : torch::optim::Optimizer(std::vector<torch::optim::OptimizerParamGroup>{}, std::make_unique<torch::optim::AdamWOptions>()),
      options_(options) {
  for (auto& group : groups) {
    auto group_options = torch::optim::AdamWOptions(group.lr)
                             .betas({options.beta1, options.beta2})
                             .eps(options.eps)
                             .weight_decay(group.weight_decay);
    states_.emplace_back(group.parameters.size());
    rules_.push_back(group.rule);
    add_param_group({std::move(group.parameters), std::make_unique<torch::optim::AdamWOptions>(group_options)});
  }
}

torch::Tensor MatrixOptimizer::adam_direction(ParameterState& state, const torch::Tensor& gradient, double beta1,
                                              double beta2, double eps) const {
  if (!state.exp_avg.defined()) {
    state.exp_avg = torch::zeros_like(gradient);
    state.exp_avg_sq = torch::zeros_like(gradient);
  }
  state.exp_avg.mul_(beta1).add_(gradient, 1.0 - beta1);
  state.exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, 1.0 - beta2);
  const double step = static_cast<double>(state.step);
  const double first_correction = 1.0 - std::pow(beta1, step), second_correction = 1.0 - std::pow(beta2, step);
  return (state.exp_avg / first_correction) / ((state.exp_avg_sq / second_correction).sqrt() + eps);
}

torch::Tensor newton_schulz_orthogonalize(const torch::Tensor& matrix, int64_t steps) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  const bool tall = matrix.size(0) > matrix.size(1);
  auto x = tall ? matrix.t() : matrix;
  x = x / (x.norm() + 1e-7);
  for (int64_t i = 0; i < steps; ++i) {
    const auto gram = x.matmul(x.t());
    x = a * x + (b * gram + c * gram.matmul(gram)).matmul(x);
  }
  return tall ? x.t() : x;
}

torch::Tensor MatrixOptimizer::muon_direction(ParameterState& state, const torch::Tensor& gradient) const {
  if (!state.momentum.defined()) state.momentum = torch::zeros_like(gradient);
  const double beta = options_.muon_momentum;
  state.momentum.lerp_(gradient, 1.0 - beta);
  const auto nesterov = gradient.lerp(state.momentum, beta);
  const double aspect = static_cast<double>(gradient.size(0)) / static_cast<double>(gradient.size(1));
  return newton_schulz_orthogonalize(nesterov, options_.newton_schulz_steps) * std::sqrt(std::max(1.0, aspect));
}

// As galore_torch's projector: a tall or square G [m, n] (m >= n) is projected on the right by the
// top-r right singular vectors (G P^T, P [r, n]); a wide one on the left by the top-r left ones
// (P^T G, P [m, r]). The projection is recomputed at step 1 and every update_proj_gap steps.
torch::Tensor MatrixOptimizer::galore_direction(ParameterState& state, const torch::Tensor& gradient, double beta1,
                                                double beta2, double eps) const {
  const bool project_right = gradient.size(0) >= gradient.size(1);
  const int64_t rank = std::min({options_.galore_rank, gradient.size(0), gradient.size(1)});
  if (!state.projection.defined() || state.step % options_.galore_update_proj_gap == 0) {
    auto [u, singular_values, vh] = at::linalg_svd(gradient, /*full_matrices=*/false);
    state.projection = project_right ? vh.narrow(0, 0, rank).contiguous() : u.narrow(1, 0, rank).contiguous();
  }
  const auto& p = state.projection;
  const auto low_rank = project_right ? gradient.matmul(p.t()) : p.t().matmul(gradient);
  const auto direction = adam_direction(state, low_rank, beta1, beta2, eps);
  return (project_right ? direction.matmul(p) : p.matmul(direction)) * options_.galore_scale;
}

torch::Tensor MatrixOptimizer::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (std::size_t g = 0; g < param_groups().size(); ++g) {
    auto& group = param_groups()[g];
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    const auto [beta1, beta2] = options.betas();
    for (std::size_t i = 0; i < group.params().size(); ++i) {
      auto& parameter = group.params()[i];
      if (!parameter.grad().defined()) continue;
      auto& state = states_[g][i];
      ++state.step;
      // Moments and orthogonalisation in float32 even over bfloat16 weights (float64 stays).
      const auto& raw = parameter.grad();
      const auto gradient = raw.scalar_type() == torch::kFloat64 ? raw : raw.to(torch::kFloat32);
      torch::Tensor direction;
      switch (rules_[g]) {
        case UpdateRule::adamw: direction = adam_direction(state, gradient, beta1, beta2, options.eps()); break;
        case UpdateRule::muon: direction = muon_direction(state, gradient); break;
        case UpdateRule::galore: direction = galore_direction(state, gradient, beta1, beta2, options.eps()); break;
      }
      parameter.mul_(1.0 - options.lr() * options.weight_decay());
      parameter.sub_((direction * options.lr()).to(parameter.dtype()));
    }
  }
  return loss;
}

void MatrixOptimizer::save(torch::serialize::OutputArchive& archive) const {
  for (std::size_t g = 0; g < states_.size(); ++g) {
    for (std::size_t i = 0; i < states_[g].size(); ++i) {
      const auto& state = states_[g][i];
      const auto key = fmt::format("group{}.param{}.", g, i);
      archive.write(key + "step", torch::tensor(state.step));
      const std::pair<const char*, const torch::Tensor*> tensors[] = {{"exp_avg", &state.exp_avg},
                                                                      {"exp_avg_sq", &state.exp_avg_sq},
                                                                      {"momentum", &state.momentum},
                                                                      {"projection", &state.projection}};
      for (const auto& [name, tensor] : tensors) {
        if (tensor->defined()) archive.write(key + name, *tensor);
      }
    }
  }
}

void MatrixOptimizer::load(torch::serialize::InputArchive& archive) {
  for (std::size_t g = 0; g < states_.size(); ++g) {
    for (std::size_t i = 0; i < states_[g].size(); ++i) {
      auto& state = states_[g][i];
      const auto key = fmt::format("group{}.param{}.", g, i);
      torch::Tensor step;
      if (!archive.try_read(key + "step", step)) {
        fail("optimizer state: no entry for parameter {} of group {} (saved with another parameter grouping?)", i, g);
      }
      state = ParameterState{step.item<int64_t>()};
      const auto device = param_groups()[g].params()[i].device();
      const std::pair<const char*, torch::Tensor*> tensors[] = {{"exp_avg", &state.exp_avg},
                                                                {"exp_avg_sq", &state.exp_avg_sq},
                                                                {"momentum", &state.momentum},
                                                                {"projection", &state.projection}};
      for (const auto& [name, tensor] : tensors) {
        if (archive.try_read(key + name, *tensor)) *tensor = tensor->to(device);
      }
    }
  }
}

namespace {

// Trainable parameters grouped by (rule, learning-rate multiplier, weight decay or not), in model
// order; `classify` picks the rule and multiplier, and decay follows trainable_parameter_groups.
using Classifier = std::function<std::pair<UpdateRule, double>(const std::string& name, const torch::Tensor& parameter)>;

std::vector<RuleGroup> grouped_parameters(const Arguments& arguments, CausalLMImpl& model, const Classifier& classify) {
  auto split = trainable_parameter_groups(model);
  if (split.decay.empty() && split.no_decay.empty()) fail("the model has no trainable parameters");
  std::vector<RuleGroup> groups;
  std::map<std::tuple<UpdateRule, double, bool>, std::size_t> index;
  auto place = [&](const std::vector<std::string>& names, const std::vector<torch::Tensor>& parameters, bool decay) {
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      const auto [rule, multiplier] = classify(names[i], parameters[i]);
      auto [found, inserted] = index.try_emplace({rule, multiplier, decay}, groups.size());
      if (inserted) {
        groups.push_back({{}, rule, arguments.effective_learning_rate() * multiplier,
                          decay ? arguments.weight_decay : 0.0});
      }
      groups[found->second].parameters.push_back(parameters[i]);
    }
  };
  place(split.decay_names, split.decay, true);
  place(split.no_decay_names, split.no_decay, false);
  return groups;
}

OptimizerSetup torch_adamw(const Arguments& arguments, std::vector<RuleGroup> groups) {
  auto options = torch::optim::AdamWOptions(arguments.effective_learning_rate())
                     .betas({arguments.adam_beta1, arguments.adam_beta2})
                     .eps(arguments.adam_epsilon)
                     .weight_decay(arguments.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  for (auto& group : groups) {
    auto group_options = options;
    group_options.lr(group.lr).weight_decay(group.weight_decay);
    param_groups.emplace_back(std::move(group.parameters), std::make_unique<torch::optim::AdamWOptions>(group_options));
  }
  return {std::make_unique<torch::optim::AdamW>(std::move(param_groups), options), nullptr};
}

OptimizerSetup make_adamw(const PluginContext& context, CausalLMImpl& model, int64_t) {
  const Arguments& arguments = context.arguments;
  return torch_adamw(arguments, grouped_parameters(arguments, model, [](const std::string&, const torch::Tensor&) {
                       return std::pair{UpdateRule::adamw, 1.0};
                     }));
}

// LoRA+: the B matrices learn lorap_lr_ratio times faster (16 when lorap is named without a ratio).
OptimizerSetup make_lorap(const PluginContext& context, CausalLMImpl& model, int64_t) {
  const Arguments& arguments = context.arguments;
  const double ratio = arguments.lorap_lr_ratio > 0 ? arguments.lorap_lr_ratio : 16.0;
  return torch_adamw(arguments, grouped_parameters(arguments, model, [ratio](const std::string& name, const torch::Tensor&) {
                       return std::pair{UpdateRule::adamw, name.ends_with(".lora_B") ? ratio : 1.0};
                     }));
}

// 2-D weights inside the transformer blocks; embeddings and the output head stay with AdamW.
bool is_hidden_matrix(const std::string& name, const torch::Tensor& parameter) {
  return parameter.dim() == 2 && name.find("embed_tokens") == std::string::npos &&
         name.find("lm_head") == std::string::npos;
}

OptimizerFactory matrix_optimizer(UpdateRule matrix_rule) {
  return [matrix_rule](const PluginContext& context, CausalLMImpl& model, int64_t) {
    const Arguments& arguments = context.arguments;
    auto groups = grouped_parameters(arguments, model, [matrix_rule](const std::string& name, const torch::Tensor& parameter) {
      return std::pair{is_hidden_matrix(name, parameter) ? matrix_rule : UpdateRule::adamw, 1.0};
    });
    MatrixOptimizerOptions options;
    options.beta1 = arguments.adam_beta1;
    options.beta2 = arguments.adam_beta2;
    options.eps = arguments.adam_epsilon;
    options.galore_rank = arguments.galore_rank;
    options.galore_update_proj_gap = std::max<int64_t>(1, arguments.galore_update_proj_gap);
    options.galore_scale = arguments.galore_scale;
    return OptimizerSetup{std::make_unique<MatrixOptimizer>(std::move(groups), options), nullptr};
  };
}

}  // namespace

Registry<OptimizerFactory>& optimizer_registry() {
  static Registry<OptimizerFactory> registry = [] {
    Registry<OptimizerFactory> built_ins("optimizer");
    built_ins.add("default", "AdamW with decoupled weight decay (none on biases and norm weights)", make_adamw);
    built_ins.add("lorap", "LoRA+: AdamW with LoRA B matrices at lr * --lorap_lr_ratio (default 16)", make_lorap);
    built_ins.add("galore", "GaLore: Adam in a rank --galore_rank SVD projection of 2-D weight gradients", matrix_optimizer(UpdateRule::galore));
    built_ins.add("muon", "Muon: Newton-Schulz orthogonalised momentum for hidden 2-D weights, AdamW for the rest", matrix_optimizer(UpdateRule::muon));
    return built_ins;
  }();
  return registry;
}

}  // namespace lathe
