// `lathe rlhf`: preference alignment through the training recipe, with ms-swift's defaults for it.
#include "cli/arguments.h"
#include "lathe/recipe/training.h"

namespace lathe::cli {

namespace {

// ms-swift's grpo defaults where they differ from the shared options': sampling at temperature
// 0.9, completions of at most 512 tokens (--max_new_tokens is its alias); an evaluation batch
// counts completions too, so by default it holds one prompt's group.
void apply_grpo_defaults(const CLI::App& app, Arguments& arguments) {
  if (app.count("--temperature") == 0) arguments.temperature = 0.9;
  if (app.count("--max_completion_length") == 0)
    arguments.max_completion_length = app.count("--max_new_tokens") ? arguments.max_new_tokens : 512;
  // ms-swift trains every answer of a multi-turn trajectory.
  if (!arguments.multi_turn_scheduler.empty() && app.count("--loss_scale") == 0) arguments.loss_scale = "default";
  if (app.count("--per_device_eval_batch_size") == 0)
    arguments.per_device_eval_batch_size = arguments.num_generations_eval.value_or(arguments.num_generations);
}

}  // namespace

int run_rlhf(const Args& args) {
  CLI::App app("Preference alignment on pairs ({\"messages\": ..., \"rejected_response\": ...}) or, for kto, labelled "
               "completions ({\"messages\": ..., \"label\": true}); --rlhf_type rm trains a reward model on pairs; "
               "--rlhf_type grpo learns from the rewards of its own completions to prompts.",
               "rlhf");
  Arguments arguments;
  arguments.alignment = true;
  arguments.load_args = false;
  // ms-swift's rlhf trains the last answer only; earlier turns are context.
  arguments.loss_scale = "last_round";
  add_options(app, arguments,
              {ArgumentGroup::Model, ArgumentGroup::Data, ArgumentGroup::Dataset, ArgumentGroup::Tuner,
               ArgumentGroup::Schedule, ArgumentGroup::Alignment, ArgumentGroup::Checkpoints, ArgumentGroup::Output,
               ArgumentGroup::Evaluation, ArgumentGroup::Generation, ArgumentGroup::Reward});
  if (int code = parse(app, arguments, args); code >= 0) return code;
  // ms-swift trains every answer of an ORPO conversation (its NLL is the SFT term) on text models.
  if (arguments.rlhf_type == "orpo" && app.count("--loss_scale") == 0) arguments.loss_scale = "default";
  if (arguments.rlhf_type == "grpo") apply_grpo_defaults(app, arguments);
  TrainingRun run(std::move(arguments));
  run.train();
  return 0;
}

}  // namespace lathe::cli
