#pragma once
// The training recipe behind `lathe sft`, `lathe pt` and `lathe rlhf`: from the arguments to a
// trained run folder. It loads the model folder (tokenizer, chat template with its agent template,
// weights in the dtype the tuner trains), encodes the datasets with the loss-scale strategy, holds
// out the evaluation split, prepares the tuner, creates the run folder with args.json, and trains.
// For rlhf (`arguments.alignment`) the rows are preference pairs or labelled completions, and the
// objective of --rlhf_type (lathe/train/alignment.h) with its reference model replaces the token
// loss. The command line, the benchmarks and the tests all train through it.
#include <torch/types.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "lathe/common/arguments.h"
#include "lathe/model/model.h"
#include "lathe/template/template.h"
#include "lathe/tokenizer/tokenizer.h"
#include "lathe/train/trainer.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// The dtype of the model's weights as loaded for training: frozen base weights (adapters) are held
// in bfloat16 under --torch_dtype bfloat16; weights that train stay float32, and autocast computes
// in bfloat16 with them as master weights.
torch::Dtype base_weight_dtype(const Arguments& arguments);
// How the projection matrices are held for training (--weight_dtype): in 16 bits only when they
// stay frozen; auto takes the checkpoint's 16-bit dtype unless PiSSA rewrites the base. 16 bits
// with --train_type full is refused.
ProjectionStorage training_projections(const Arguments& arguments);

// A run made ready from its arguments. Construction does all the loading and encoding, so that a
// caller can look at the model before training (the embedded default shows its answers).
class TrainingRun {
 public:
  // `arguments.model` is a Hugging Face model folder and `arguments.dataset` names the training
  // files; `arguments.pretraining` selects `lathe pt`'s encoding, `arguments.alignment` rlhf's.
  // Throws lathe::Error naming the file, row or argument at fault; nothing is written before the
  // data has been encoded.
  explicit TrainingRun(Arguments arguments);
  ~TrainingRun();
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;

  // Trains to the end (or to a stop requested by a callback or a signal); callbacks given here
  // run after the trainer's own and those of --callbacks.
  TrainingResult train(std::vector<std::shared_ptr<Callback>> extra_callbacks = {});

  const Arguments& arguments() const;
  CausalLM& model();
  const Tokenizer& tokenizer() const;
  const Template& chat_template() const;
  const std::filesystem::path& run_dir() const;
  // The token ids that end a response: the chat template's stop words that are single tokens.
  std::vector<int32_t> stop_token_ids() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lathe

LATHE_API_END
