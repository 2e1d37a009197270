// `lathe sft` and `lathe pt`: fine-tuning and continued pre-training, through the training recipe.
#include "cli/arguments.h"
#include "cli/embedded_default.h"
#include "lathe/recipe/training.h"

namespace lathe::cli {

namespace {

int run_training(const Args& args, bool pretraining) {
  CLI::App app(pretraining ? "Continued pre-training on {\"text\": ...} rows (every token trained, packing on)."
                           : "Supervised fine-tuning. With no --model and no --dataset, trains the embedded "
                             "default model on the shipped self-cognition dataset.",
               pretraining ? "pt" : "sft");
  Arguments arguments;
  // Rows of a batch are concatenated without padding and attend only within themselves: measured
  // 1.26x (LoRA, hidden 512) to 1.72x (full, hidden 256) the tokens/s of padded batches, with a
  // lower peak (docs/performance.md). `--padding_free false` gives SWIFT's padded batches.
  arguments.padding_free = true;
  arguments.load_args = false;  // --adapters here are weights to go on training, as in SWIFT
  if (pretraining) {
    arguments.pretraining = true;
    arguments.loss_scale = "all";
    arguments.packing = true;
  }
  add_options(app, arguments,
              {ArgumentGroup::Model, ArgumentGroup::Data, ArgumentGroup::Dataset, ArgumentGroup::Tuner,
               ArgumentGroup::Schedule, ArgumentGroup::Checkpoints, ArgumentGroup::Output, ArgumentGroup::Evaluation,
               ArgumentGroup::Generation});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  // A stream cannot be packed (packing needs every row up front): pt's packing default gives way.
  if (pretraining && arguments.streaming && app.count("--packing") == 0) arguments.packing = false;
  const bool embedded = arguments.model.empty() && arguments.dataset.empty() && !pretraining;
  if (embedded) use_embedded_default(app, arguments);
  TrainingRun run(std::move(arguments));
  if (embedded) show_embedded_answers("before", run);
  run.train();
  if (embedded) show_embedded_answers("after", run);
  return 0;
}

}  // namespace

int run_sft(const Args& args) { return run_training(args, false); }
int run_pt(const Args& args) { return run_training(args, true); }

}  // namespace lathe::cli
