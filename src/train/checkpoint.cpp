#include "train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>

#include <algorithm>

#include "lathe/common/format.h"
#include "lathe/common/files.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

json TrainerState::to_json() const {
  json json = {{"epoch", epoch},
               {"global_step", global_step},
               {"max_steps", max_steps},
               {"num_train_epochs", num_train_epochs},
               {"total_flos", total_flos},
               {"log_history", log_history},
               {"best_metric", best_metric ? nlohmann::json(*best_metric) : nlohmann::json()},
               {"best_model_checkpoint", best_model_checkpoint.empty() ? nlohmann::json() : nlohmann::json(best_model_checkpoint)},
               {"is_world_process_zero", is_world_process_zero},
               {"epoch_index", epoch_index},
               {"step_in_epoch", step_in_epoch},
               {"skipped_nonfinite_steps", skipped_nonfinite_steps},
               {"trained_tokens", trained_tokens}};
  return json;
}

TrainerState TrainerState::from_json(const json& json, const std::string& source) {
  TrainerState state;
  try {
    state.epoch = json.at("epoch").get<double>();
    state.global_step = json.at("global_step").get<int64_t>();
    state.max_steps = json.at("max_steps").get<int64_t>();
    state.num_train_epochs = json.value("num_train_epochs", 0.0);
    state.total_flos = json.value("total_flos", 0.0);
    state.log_history = json.value("log_history", std::vector<nlohmann::json>{});
    if (json.contains("best_metric") && !json["best_metric"].is_null()) state.best_metric = json["best_metric"].get<double>();
    if (json.contains("best_model_checkpoint") && json["best_model_checkpoint"].is_string()) {
      state.best_model_checkpoint = json["best_model_checkpoint"].get<std::string>();
    }
    state.epoch_index = json.at("epoch_index").get<int64_t>();
    state.step_in_epoch = json.at("step_in_epoch").get<int64_t>();
    state.skipped_nonfinite_steps = json.value("skipped_nonfinite_steps", int64_t{0});
    state.trained_tokens = json.value("trained_tokens", int64_t{0});
  } catch (const nlohmann::json::exception& error) {
    fail("{}: {}", source, error.what());
  }
  return state;
}

void write_checkpoint(const fs::path& dir, const CheckpointContents& c) {
  write_dir_atomic(dir, [&](const fs::path& folder) {
    c.tuner.save_pretrained(c.model, folder, c.arguments);
    for (const auto& file : c.files_to_copy) {
      std::error_code ec;
      if (!fs::exists(file, ec)) continue;
      // A classifier's config.json is its own (its base folder's describes the causal LM).
      const bool own_config = !c.tuner.saves_full_model() || c.model->is_classifier();
      if (own_config && file.filename() == "config.json") continue;
      fs::copy_file(file, folder / file.filename(), fs::copy_options::overwrite_existing);
    }
    if (c.optimizer) {
      torch::save(*c.optimizer, (folder / "optimizer.pt").string());
      write_file_atomic(folder / "scheduler.json", json{{"step", c.scheduler_step}}.dump());
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      torch::Tensor rng;
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        rng = generator.get_state();
      }
      torch::save(rng, (folder / "rng_state.pt").string());
    }
    write_file_atomic(folder / "trainer_state.json", c.state.to_json().dump(2));
    write_file_atomic(folder / "args.json", c.arguments.to_json().dump(2));
  });
}

TrainerState read_checkpoint_state(const fs::path& dir, torch::optim::Optimizer* optimizer) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("--resume_from_checkpoint {}: not a folder", dir.string());
  const auto state_file = dir / "trainer_state.json";
  auto parsed = json::parse(read_file(state_file), nullptr, false);
  if (parsed.is_discarded()) fail("{}: not valid JSON", state_file.string());
  auto state = TrainerState::from_json(parsed, state_file.string());
  const auto optimizer_file = dir / "optimizer.pt";
  if (optimizer) {
    if (!fs::exists(optimizer_file, ec)) {
      fail("{}: missing (the checkpoint was saved with --save_only_model; resume with --resume_only_model true)",
           optimizer_file.string());
    }
    try {
      torch::load(*optimizer, optimizer_file.string());
    } catch (const c10::Error& error) {
      fail("{}: cannot restore the optimizer ({})", optimizer_file.string(), error.what_without_backtrace());
    }
  }
  const auto rng_file = dir / "rng_state.pt";
  if (fs::exists(rng_file, ec)) {
    torch::Tensor rng;
    torch::load(rng, rng_file.string());
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle sharing the default
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
  }
  return state;
}

static int64_t checkpoint_step(const fs::path& path) {
  const auto name = path.filename().string();
  const std::string prefix = "checkpoint-";
  if (!name.starts_with(prefix) || name.size() == prefix.size()) return -1;
  const auto digits = name.substr(prefix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

void prune_checkpoints(const fs::path& run_dir, int64_t limit, const std::vector<fs::path>& keep) {
  if (limit < 0) return;
  std::vector<std::pair<int64_t, fs::path>> checkpoints;
  for (const auto& entry : fs::directory_iterator(run_dir)) {
    if (auto step = checkpoint_step(entry.path()); step >= 0 && entry.is_directory()) checkpoints.emplace_back(step, entry.path());
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  auto is_kept = [&](const fs::path& path) {
    return std::any_of(keep.begin(), keep.end(), [&](const fs::path& k) {
      std::error_code ec;
      return !k.empty() && fs::equivalent(k, path, ec);
    });
  };
  auto excess = static_cast<int64_t>(checkpoints.size()) - std::max<int64_t>(limit, 1);
  for (const auto& [step, path] : checkpoints) {
    if (excess <= 0) break;
    if (is_kept(path)) continue;
    fs::remove_all(path);
    --excess;
  }
}

}  // namespace lathe
