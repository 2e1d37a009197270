#pragma once
// PNG plots of a training run, drawn with cairo from logging.jsonl (the images/ folder of a run).
#include <filesystem>
#include <vector>

namespace lathe {

// Reads logging.jsonl and writes images/train_loss.png (raw and smoothed), eval_loss.png,
// learning_rate.png, grad_norm.png, one per other numeric eval_* key, and lathe rlhf's measurements
// (rewards_margins.png, logps_chosen.png, nll_loss.png, kl.png, ...) — each only when the log has that
// key. Files are written atomically. A missing or empty log writes nothing.
void write_training_plots(const std::filesystem::path& logging_jsonl, const std::filesystem::path& images_dir);

// TensorBoard's smoothing: an exponential moving average started at zero and divided by
// 1 - weight^n so that the first values are not pulled towards zero. `weight` is in [0, 1).
std::vector<double> smooth_ema(const std::vector<double>& values, double weight);

}  // namespace lathe
