// What the trainer leaves behind besides a trained model: the caller's signal handlers, autocast
// setting, model mode and random stream come back as they were on every way out of train() and
// evaluate(); a stop signal finishes the step with its log, evaluation and checkpoint; callbacks'
// should_epoch_stop ends the epoch; the best checkpoint is chosen only from its own step's
// evaluation.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lathe/plugin/tuner.h"
#include "lathe/train/trainer.h"
#include "support/scratch_dir.h"
#include "support/tiny_config.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<Example> examples(int count) {
  std::vector<Example> result;
  for (int i = 0; i < count; ++i) {
    Example example;
    for (int t = 0; t < 6 + i % 3; ++t) {
      example.input_ids.push_back((5 * i + 3 * t) % 32);
      example.labels.push_back(t < 2 ? -100 : (5 * i + 3 * t) % 32);
    }
    result.push_back(example);
  }
  return result;
}

// Records events; `act` runs on each on_step_begin with the step about to run (1-based).
class Recorder : public Callback {
 public:
  std::function<void(int64_t step, TrainerControl&)> act;
  int epoch_ends = 0, prediction_steps = 0;
  std::vector<int64_t> steps_run;
  void on_step_begin(const Arguments&, S& state, C& control, const X&) override {
    if (act) act(state.global_step + 1, control);
  }
  void on_step_end(const Arguments&, S& state, C&, const X&) override { steps_run.push_back(state.global_step); }
  void on_epoch_end(const Arguments&, S&, C&, const X&) override { ++epoch_ends; }
  void on_prediction_step(const Arguments&, S&, C&, const X&) override { ++prediction_steps; }
};

class TrainerSideEffects : public testing::ScratchDir {
 protected:
  Arguments arguments() const {
    Arguments arguments;
    arguments.model = "random-init";
    arguments.train_type = "full";
    arguments.per_device_train_batch_size = 2;
    arguments.per_device_eval_batch_size = 2;
    arguments.learning_rate = 1e-2;
    arguments.logging_steps = 100;
    arguments.save_steps = 100;
    arguments.save_only_model = true;
    arguments.add_version = false;
    arguments.output_dir = (dir() / "run").string();
    return arguments;
  }

  // A trainer over 6 training examples (3 steps an epoch) and 3 evaluation examples (2 batches).
  std::unique_ptr<Trainer> trainer(const Arguments& arguments, std::shared_ptr<Recorder> recorder) {
    torch::manual_seed(1);
    model_ = CausalLM(testing::tiny_config({.vocab = 32, .hidden = 16, .layers = 1}));
    auto tuner = tuner_registry().create(arguments.train_type, arguments);
    tuner->prepare_model(arguments, model_);
    TrainerSetup setup{arguments, model_, tuner, examples(6), nullptr, examples(3), arguments.output_dir, {}, {recorder}, 0};
    return std::make_unique<Trainer>(std::move(setup));
  }

  json log_rows() const {
    json rows = json::array();
    std::ifstream in(dir() / "run" / "logging.jsonl");
    for (std::string line; std::getline(in, line);) rows.push_back(json::parse(line));
    return rows;
  }

  CausalLM model_{nullptr};
};

extern "C" void ignore_signal(int) {}

TEST_F(TrainerSideEffects, ASignalFinishesTheStepWithItsLogEvaluationAndCheckpoint) {
  auto recorder = std::make_shared<Recorder>();
  recorder->act = [](int64_t step, TrainerControl&) {
    if (step == 2) std::raise(SIGTERM);
  };
  auto arguments = this->arguments();
  arguments.num_train_epochs = 3;
  const auto result = trainer(arguments, recorder)->train();
  EXPECT_EQ(result.state.global_step, 2);
  EXPECT_EQ(recorder->steps_run, (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(fs::exists(dir() / "run" / "checkpoint-2" / "trainer_state.json"));
  bool logged = false, evaluated = false;
  for (const auto& row : log_rows()) {
    if (row.value("global_step", 0) != 2) continue;
    logged |= row.contains("loss");
    evaluated |= row.contains("eval_loss");
  }
  EXPECT_TRUE(logged) << log_rows().dump();
  EXPECT_TRUE(evaluated) << log_rows().dump();
  EXPECT_EQ(fs::path(result.state.best_model_checkpoint).filename(), "checkpoint-2");
}

TEST_F(TrainerSideEffects, SignalHandlersAreRestoredOnEveryWayOut) {
  for (const bool fails : {false, true}) {
    auto previous = std::signal(SIGTERM, ignore_signal);
    std::signal(SIGINT, ignore_signal);
    auto recorder = std::make_shared<Recorder>();
    if (fails) {
      recorder->act = [](int64_t, TrainerControl&) { throw std::runtime_error("a failing callback"); };
    }
    auto arguments = this->arguments();
    arguments.max_steps = 1;
    arguments.output_dir = (dir() / (fails ? "failing" : "ok")).string();
    auto run = trainer(arguments, recorder);
    if (fails) {
      EXPECT_THROW(run->train(), Error);
    } else {
      run->train();
    }
    EXPECT_EQ(std::signal(SIGTERM, previous), &ignore_signal) << (fails ? "after a failure" : "after a run");
    EXPECT_EQ(std::signal(SIGINT, SIG_DFL), &ignore_signal) << (fails ? "after a failure" : "after a run");
  }
}

TEST_F(TrainerSideEffects, AutocastModeAndRandomStreamAreTheCallers) {
  auto arguments = this->arguments();
  arguments.torch_dtype = "bfloat16";
  arguments.max_steps = 2;
  auto run = trainer(arguments, std::make_shared<Recorder>());
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  torch::manual_seed(123);
  run->train();
  const auto after_training = torch::rand({4});
  EXPECT_TRUE(at::autocast::is_cpu_enabled()) << "train() switched the caller's autocast off";
  at::autocast::set_cpu_enabled(false);
  torch::manual_seed(123);
  EXPECT_TRUE(torch::equal(after_training, torch::rand({4}))) << "train() reseeded or advanced the global generator";

  model_->eval();
  run->evaluate();
  EXPECT_FALSE(model_->is_training()) << "evaluate() left the model in training mode";
  model_->train();
  run->evaluate();
  EXPECT_TRUE(model_->is_training());
}

TEST_F(TrainerSideEffects, ShouldEpochStopEndsTheEpoch) {
  auto recorder = std::make_shared<Recorder>();
  recorder->act = [](int64_t, TrainerControl& control) { control.should_epoch_stop = true; };
  auto arguments = this->arguments();
  arguments.num_train_epochs = 2;
  const auto result = trainer(arguments, recorder)->train();
  // One step each epoch, then the next epoch; two epochs in all.
  EXPECT_EQ(recorder->steps_run, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(recorder->epoch_ends, 2);
  EXPECT_EQ(result.state.epoch_index, 2);
}

TEST_F(TrainerSideEffects, EvaluationEmitsOnPredictionStepPerBatch) {
  auto recorder = std::make_shared<Recorder>();
  auto run = trainer(arguments(), recorder);
  run->evaluate();
  EXPECT_EQ(recorder->prediction_steps, 2);  // 3 examples in batches of 2
}

// Evaluations every 2 steps, saves every 3: checkpoint-3 has no evaluation of its own, so it
// cannot become the best on step 2's numbers.
TEST_F(TrainerSideEffects, TheBestCheckpointIsChosenFromItsOwnEvaluation) {
  auto arguments = this->arguments();
  arguments.eval_steps = 2;
  arguments.save_steps = 3;
  arguments.max_steps = 4;
  const auto result = trainer(arguments, std::make_shared<Recorder>())->train();
  const auto state = json::parse(std::ifstream(dir() / "run" / "checkpoint-3" / "trainer_state.json"));
  EXPECT_TRUE(state["best_model_checkpoint"].is_null()) << state.dump();
  EXPECT_EQ(fs::path(result.state.best_model_checkpoint).filename(), "checkpoint-4");
}

}  // namespace
}  // namespace lathe
