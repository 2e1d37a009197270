// lathe rlhf's formulas against ms-swift's and TRL's own (the versions ms-swift pins, from PyPI):
// every DPO preference loss through ms-swift's DPOTrainer.dpo_loss, CPO and SimPO through TRL's
// cpo_loss, ORPO through odds_ratio_loss and KTO through kto_loss, on the same log-probabilities.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cli/cli_util.h"
#include "ecosystem/oracle.h"
#include "lathe/common/files.h"
#include "lathe/plugin/preference_loss.h"
#include "lathe/train/alignment.h"

namespace lathe::testing {
namespace {
using nlohmann::json;

constexpr double kTolerance = 2e-5;

std::vector<float> values_of(const torch::Tensor& tensor) {
  const auto flat = tensor.detach().to(torch::kFloat32).contiguous().reshape(-1);
  return {flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel()};
}

// Summed log-probabilities of a batch of pairs: the reference near the policy, as in training.
PreferenceLogps random_logps(int64_t pairs) {
  const auto policy_chosen = -torch::rand({pairs}) * 25 - 5, policy_rejected = -torch::rand({pairs}) * 25 - 5;
  return {policy_chosen, policy_rejected, policy_chosen + torch::randn({pairs}) * 2,
          policy_rejected + torch::randn({pairs}) * 2, torch::rand({}) + 0.5};
}

json batch_json(const PreferenceLogps& logps) {
  return {{"policy_chosen", values_of(logps.policy_chosen)},       {"policy_rejected", values_of(logps.policy_rejected)},
          {"reference_chosen", values_of(logps.reference_chosen)}, {"reference_rejected", values_of(logps.reference_rejected)},
          {"nll", logps.nll.item<double>()}};
}

void expect_values(const json& expected, const torch::Tensor& actual, const std::string& what) {
  const auto values = values_of(actual);
  ASSERT_EQ(expected.size(), values.size()) << what;
  for (std::size_t i = 0; i < values.size(); ++i) EXPECT_NEAR(values[i], expected[i].get<double>(), kTolerance) << what << " [" << i << "]";
}

struct Case {
  json oracle;                                // what hf_oracle.py preference_losses computes
  std::vector<torch::Tensor> lathe;           // Lathe's losses, one tensor per batch
  std::vector<std::pair<std::string, double>> scalars;  // further values to compare with the oracle's first batch
};

Case dpo_case(const std::string& name, double beta, double smoothing) {
  Arguments arguments;
  arguments.beta = beta;
  arguments.label_smoothing = smoothing;
  auto loss = preference_loss_registry().create(name, arguments);
  Case result{{{"kind", "dpo"}, {"loss_type", name}, {"beta", beta}, {"label_smoothing", smoothing}, {"discopop_tau", 0.05},
               {"batches", json::array()}},
              {},
              {}};
  // Three batches in order, so that bco_pair's running mean is compared as it moves.
  for (int batch = 0; batch < 3; ++batch) {
    const auto logps = random_logps(5);
    result.oracle["batches"].push_back(batch_json(logps));
    result.lathe.push_back(loss(logps));
  }
  return result;
}

Case cpo_case(const std::string& variant, double beta, double smoothing) {
  const auto logps = random_logps(6);
  const bool means = variant == "ipo" || variant == "simpo";
  const auto chosen = means ? logps.policy_chosen / 20 : logps.policy_chosen;
  const auto rejected = means ? logps.policy_rejected / 20 : logps.policy_rejected;
  return {{{"kind", "cpo"}, {"loss_type", variant}, {"beta", beta}, {"label_smoothing", smoothing}, {"simpo_gamma", 0.7},
           {"policy_chosen", values_of(chosen)}, {"policy_rejected", values_of(rejected)}},
          {cpo_losses(variant, chosen, rejected, beta, smoothing, 0.7)},
          {}};
}

Case orpo_case() {
  const auto chosen = -torch::rand({6}) * 3 - 0.05, rejected = -torch::rand({6}) * 3 - 0.05;
  const auto odds = orpo_odds_ratio(chosen, rejected);
  return {{{"kind", "orpo"}, {"beta", 0.1}, {"policy_chosen", values_of(chosen)}, {"policy_rejected", values_of(rejected)}},
          {0.1 * odds.log_sigmoid},
          {{"log_odds_ratio", odds.log_sigmoid.mean().item<double>()}, {"log_odds_chosen", odds.log_odds.mean().item<double>()}}};
}

Case kto_case(const std::string& variant) {
  const auto desirable = random_logps(4), undesirable = random_logps(3), mismatched = random_logps(7);
  // A KL estimate above 0, so that the clamp does not hide it.
  const auto policy_kl = mismatched.policy_chosen, reference_kl = mismatched.policy_chosen - torch::rand({7}) * 0.5;
  const auto kl = variant == "kto" ? kto_kl(policy_kl, reference_kl) : torch::zeros({});
  const auto losses = kto_losses(variant, desirable.policy_chosen - desirable.reference_chosen,
                                 undesirable.policy_chosen - undesirable.reference_chosen, kl, 0.1);
  Case result{{{"kind", "kto"}, {"loss_type", variant}, {"beta", 0.1}, {"desirable_weight", 1.0}, {"undesirable_weight", 1.33},
               {"policy_chosen", values_of(desirable.policy_chosen)}, {"reference_chosen", values_of(desirable.reference_chosen)},
               {"policy_rejected", values_of(undesirable.policy_chosen)},
               {"reference_rejected", values_of(undesirable.reference_chosen)}, {"policy_kl", values_of(policy_kl)},
               {"reference_kl", values_of(reference_kl)}},
              {torch::cat({losses.desirable, 1.33 * losses.undesirable})},
              {}};
  if (variant == "kto") result.scalars.push_back({"kl", kl.item<double>()});
  return result;
}

TEST(AlignmentOracle, EveryLossEqualsMsSwiftsAndTrls) {
  torch::manual_seed(17);
  std::vector<Case> cases;
  for (const char* name : {"sigmoid", "hinge", "ipo", "bco_pair", "sppo_hard", "nca_pair", "aot", "aot_unpaired",
                           "apo_zero", "apo_down", "discopop", "sft"}) {
    cases.push_back(dpo_case(name, 0.1, 0));
  }
  for (const char* name : {"sigmoid", "robust", "exo_pair", "aot", "aot_unpaired"}) cases.push_back(dpo_case(name, 0.3, 0.1));
  cases.push_back(dpo_case("exo_pair", 0.1, 0));  // ms-swift's smoothing of 1e-3 when none is given
  for (const char* variant : {"sigmoid", "hinge", "ipo", "simpo"}) cases.push_back(cpo_case(variant, variant == std::string("simpo") ? 2.0 : 0.1, 0));
  cases.push_back(cpo_case("simpo", 2.0, 0.1));
  cases.push_back(orpo_case());
  cases.push_back(kto_case("kto"));
  cases.push_back(kto_case("apo_zero_unpaired"));

  TempDir dir("alignment-oracle");
  json oracle_cases = json::array();
  for (const auto& c : cases) oracle_cases.push_back(c.oracle);
  write_file_atomic(dir / "cases.json", oracle_cases.dump());
  ASSERT_TRUE(run_oracle({{"preference_losses", "--cases", (dir / "cases.json").string(), "--out", (dir / "out.json").string()}},
                         dir.path()));
  const auto results = json::parse(read_file(dir / "out.json"));
  ASSERT_EQ(results.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto label = cases[i].oracle["kind"].get<std::string>() + " " + cases[i].oracle.value("loss_type", std::string()) +
                       " (smoothing " + std::to_string(cases[i].oracle.value("label_smoothing", 0.0)) + ")";
    ASSERT_EQ(results[i].size(), cases[i].lathe.size()) << label;
    for (std::size_t b = 0; b < cases[i].lathe.size(); ++b) {
      expect_values(results[i][b]["losses"], cases[i].lathe[b], label + " batch " + std::to_string(b));
    }
    for (const auto& [key, value] : cases[i].scalars) EXPECT_NEAR(results[i][0][key].get<double>(), value, kTolerance) << label << " " << key;
  }
}

}  // namespace
}  // namespace lathe::testing
