// `lathe rlhf`: preference alignment through the training recipe, with ms-swift's defaults for it.
#include "cli/arguments.h"
#include "lathe/recipe/training.h"

namespace lathe::cli {

int run_rlhf(const Args& args) {
  CLI::App app("Preference alignment on pairs ({\"messages\": ..., \"rejected_response\": ...}) or, for kto, labelled "
               "completions ({\"messages\": ..., \"label\": true}); --rlhf_type rm trains a reward model on pairs.",
               "rlhf");
  Arguments arguments;
  arguments.alignment = true;
  arguments.load_args = false;
  // ms-swift's rlhf trains the last answer only; earlier turns are context.
  arguments.loss_scale = "last_round";
  add_options(app, arguments,
              {ArgumentGroup::Model, ArgumentGroup::Data, ArgumentGroup::Dataset, ArgumentGroup::Tuner,
               ArgumentGroup::Schedule, ArgumentGroup::Alignment, ArgumentGroup::Checkpoints, ArgumentGroup::Output,
               ArgumentGroup::Evaluation});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  // ms-swift trains every answer of an ORPO conversation (its NLL is the SFT term) on text models.
  if (arguments.rlhf_type == "orpo" && app.count("--loss_scale") == 0) arguments.loss_scale = "default";
  TrainingRun run(std::move(arguments));
  run.train();
  return 0;
}

}  // namespace lathe::cli
