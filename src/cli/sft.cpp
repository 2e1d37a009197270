// `lathe sft` and `lathe pt`: fine-tuning and continued pre-training.
#include <fmt/format.h>

#include <random>

#include "cli/arguments.h"
#include "cli/embedded_default.h"
#include "common/format.h"
#include "lathe/files.h"
#include "lathe/generate.h"
#include "lathe/plugin/agent_template.h"
#include "lathe/plugin/loss_scale.h"
#include "lathe/plugin/tuner.h"
#include "lathe/trainer.h"
#include "lathe/training_data.h"

namespace lathe::cli {
namespace fs = std::filesystem;

namespace {

// The embedded default trains a randomly initialised model, so it needs settings of its own;
// only those the user did not give are filled in.
void use_embedded_default(CLI::App& app, Arguments& arguments) {
  arguments.model = ensure_embedded_model().string();
  arguments.dataset = {embedded_dataset().string()};
  auto unset = [&](const char* option) { return app.count(option) == 0; };
  if (unset("--model_name")) arguments.model_name = {"车床小助手", "Lathe Mini"};
  if (unset("--model_author")) arguments.model_author = {"车床团队", "the Lathe team"};
  if (unset("--train_type")) arguments.train_type = "full";
  if (unset("--learning_rate")) arguments.learning_rate = 2e-3;
  if (unset("--num_train_epochs")) arguments.num_train_epochs = 12;
  if (unset("--per_device_train_batch_size")) arguments.per_device_train_batch_size = 8;
  if (unset("--warmup_ratio")) arguments.warmup_ratio = 0.05;
  if (unset("--weight_decay")) arguments.weight_decay = 0.0;
  if (unset("--save_steps")) arguments.save_steps = 1000;
  if (unset("--logging_steps")) arguments.logging_steps = 10;
  if (unset("--split_dataset_ratio")) arguments.split_dataset_ratio = 0.0;
  if (unset("--lora_dropout")) arguments.lora_dropout = 0.0;
}

torch::Dtype weight_dtype(const Arguments& arguments) {
  // Frozen base weights may be held in bfloat16; trained ones stay float32 (autocast computes in
  // bfloat16 with float32 master weights).
  return arguments.torch_dtype == "bfloat16" && arguments.train_type != "full" ? torch::kBFloat16 : torch::kFloat32;
}

std::vector<fs::path> files_to_copy(const fs::path& model_dir) {
  std::vector<fs::path> files;
  for (const char* name : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json"}) {
    files.push_back(model_dir / name);
  }
  return files;
}

// Holds out --split_dataset_ratio of the training examples (shuffled with the seed).
std::vector<Example> split_off(std::vector<Example>& train, double ratio, uint64_t seed) {
  if (ratio <= 0 || train.size() < 2) return {};
  std::mt19937_64 rng(seed);
  std::shuffle(train.begin(), train.end(), rng);
  const auto count = std::max<std::size_t>(1, static_cast<std::size_t>(ratio * static_cast<double>(train.size())));
  std::vector<Example> eval(std::make_move_iterator(train.end() - static_cast<std::ptrdiff_t>(count)),
                            std::make_move_iterator(train.end()));
  train.resize(train.size() - count);
  return eval;
}

int64_t count_parameters(CausalLM& model, bool trainable_only) {
  int64_t count = 0;
  for (const auto& parameter : model->parameters()) {
    if (!trainable_only || parameter.requires_grad()) count += parameter.numel();
  }
  return count;
}

// The template's stop words as token ids: where a generated response ends.
std::vector<int32_t> stop_token_ids(const Tokenizer& tokenizer, const Template& chat_template) {
  std::vector<int32_t> ids;
  for (const auto& word : chat_template.spec().stop_words) {
    if (auto id = tokenizer.token_to_id(word)) ids.push_back(*id);
  }
  return ids;
}

// The embedded default shows what the model answers before and after training.
void show_answers(const char* when, CausalLM& model, const Tokenizer& tokenizer, const Template& chat_template) {
  const std::vector<std::string> questions{"who are you?", "Who created you?", "你是谁？", "谁开发了你？"};
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& question : questions) {
    Conversation conversation;
    conversation.messages.push_back({"user", question, {}, {}});
    prompts.push_back(chat_template.encode(tokenizer, conversation, /*add_generation_prompt=*/true).input_ids);
  }
  SamplingParams params;
  params.max_new_tokens = 40;
  params.stop_token_ids = stop_token_ids(tokenizer, chat_template);
  const bool training = model->is_training();
  model->eval();
  auto answers = generate(model, prompts, params);
  if (training) model->train();
  fmt::print("\n=== The model's answers {} training ===\n", when);
  for (std::size_t i = 0; i < questions.size(); ++i) {
    auto& ids = answers[i].ids;
    if (answers[i].finish_reason == "stop" && !ids.empty()) ids.pop_back();
    // One line per answer: an untrained model's newlines would scroll the rest away.
    auto text = tokenizer.decode(ids, /*skip_special_tokens=*/true);
    std::replace(text.begin(), text.end(), '\n', ' ');
    fmt::print("Q: {}\nA: {}\n", questions[i], text);
  }
  fmt::print("\n");
  std::fflush(stdout);
}

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
  if (pretraining) {
    arguments.pretraining = true;
    arguments.loss_scale = "all";
    arguments.packing = true;
  }
  add_options(app, arguments, {OptionGroup::Model, OptionGroup::Data, OptionGroup::Training, OptionGroup::Generation});
  if (int code = parse(app, args); code >= 0) return code;
  // SWIFT: with generated responses, rouge-l names the best checkpoint unless the user chose.
  if (arguments.predict_with_generate && app.count("--metric_for_best_model") == 0) {
    arguments.metric_for_best_model = "rouge-l";
  }
  const bool embedded = arguments.model.empty() && arguments.dataset.empty() && !pretraining;
  if (embedded) use_embedded_default(app, arguments);
  if (arguments.model.empty()) fail("--model is required (a Hugging Face model folder)");
  if (arguments.dataset.empty()) fail("--dataset is required (jsonl, json or csv files)");
  if (!fs::is_directory(arguments.model)) fail("{}: model folder not found", arguments.model);

  auto tokenizer = Tokenizer::from_file(arguments.model);
  auto model = load_pretrained(arguments.model, weight_dtype(arguments));
  if (arguments.max_length <= 0) arguments.max_length = model->config().max_position_embeddings;
  auto chat_template = Template::for_model(arguments.model, arguments.template_name);
  chat_template.set_agent_template(make_agent_template(arguments, chat_template.spec().name));
  LossScalePipeline loss_scale(arguments.loss_scale, arguments);
  ExampleEncoder encoder(chat_template, tokenizer,
                         [&](const std::vector<Context>& contexts, const Conversation& conversation) {
                           return loss_scale.apply(contexts, conversation);
                         },
                         EncodeOptions{arguments.max_length, arguments.truncation_strategy, arguments.system, pretraining});
  ConversationEdit edit;
  if (!arguments.model_name.empty() || !arguments.model_author.empty()) {
    edit = self_cognition_edit(arguments.model_name.empty() ? std::vector<std::string>{"Lathe"} : arguments.model_name,
                               arguments.model_author.empty() ? std::vector<std::string>{"Lathe"} : arguments.model_author);
  }
  DatasetStats stats, eval_stats;
  std::shared_ptr<ExampleStream> stream;
  std::vector<Example> train;
  if (arguments.streaming) {
    stream = std::make_shared<ExampleStream>(arguments.dataset, encoder, arguments.strict, edit,
                                             static_cast<uint64_t>(arguments.seed));
    if (arguments.split_dataset_ratio > 0) fail("--streaming: use --val_dataset (a stream cannot be split)");
  } else {
    train = encode_datasets(arguments.dataset, encoder, arguments.strict, arguments.dataset_num_proc,
                            static_cast<uint64_t>(arguments.seed), stats, edit);
    fmt::print(stderr, "lathe: train dataset: {}\n", stats.summary());
  }
  auto eval = arguments.val_dataset.empty()
                  ? split_off(train, arguments.split_dataset_ratio, static_cast<uint64_t>(arguments.seed))
                  : encode_datasets(arguments.val_dataset, encoder, arguments.strict, arguments.dataset_num_proc,
                                    static_cast<uint64_t>(arguments.seed), eval_stats, edit);
  if (!eval.empty()) fmt::print(stderr, "lathe: eval dataset: {} rows\n", eval.size());

  auto tuner = tuner_registry().factory(arguments.train_type)(arguments);
  tuner->prepare_model(arguments, model);
  const auto trainable = count_parameters(model, true), total = count_parameters(model, false);
  fmt::print(stderr, "lathe: {} tuner, trainable parameters: {} of {} ({:.4f}%)\n", arguments.train_type, trainable,
             total, 100.0 * static_cast<double>(trainable) / static_cast<double>(std::max<int64_t>(1, total)));

  const fs::path run_dir = make_run_dir(arguments);
  fs::create_directories(run_dir);
  write_file_atomic(run_dir / "args.json", arguments.to_json().dump(2));
  fmt::print(stderr, "lathe: output folder {}\n", run_dir.string());

  TrainerSetup setup{arguments, model, tuner, std::move(train), stream, std::move(eval), run_dir,
                     files_to_copy(arguments.model), {}, static_cast<int32_t>(model->config().pad_token_id.value_or(0))};
  setup.decode = [&tokenizer](const std::vector<int32_t>& ids) { return tokenizer.decode(ids, /*skip_special_tokens=*/true); };
  setup.stop_token_ids = stop_token_ids(tokenizer, chat_template);
  if (embedded) show_answers("before", model, tokenizer, chat_template);
  Trainer trainer(std::move(setup));
  trainer.train();
  if (embedded) show_answers("after", model, tokenizer, chat_template);
  return 0;
}

}  // namespace

int run_sft(const Args& args) { return run_training(args, false); }
int run_pt(const Args& args) { return run_training(args, true); }

}  // namespace lathe::cli
