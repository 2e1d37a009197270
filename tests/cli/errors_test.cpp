// Bad input: a one-line error naming the file and the problem, a non-zero exit, no crash.
#include <gtest/gtest.h>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;

void expect_clean_error(const CommandResult& result, const std::vector<std::string>& fragments) {
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find("error: "), std::string::npos) << result.err;
  for (const auto& fragment : fragments) EXPECT_NE(result.err.find(fragment), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("internal error"), std::string::npos) << result.err;
}

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new TempDir("bad-input-model");
    write_tiny_model(model_->path());
  }
  static void TearDownTestSuite() { delete model_; }
  static TempDir* model_;
  // A copy of the tiny model with one file replaced.
  fs::path broken_copy(const TempDir& dir, const std::string& file, const std::string& content) {
    fs::copy(model_->path(), dir.path() / "model", fs::copy_options::recursive);
    write_file_atomic(dir.path() / "model" / file, content);
    return dir.path() / "model";
  }
};
TempDir* BadInput::model_ = nullptr;

TEST_F(BadInput, MissingModelFolder) {
  expect_clean_error(run_lathe({"infer", "--model", "/nonexistent/model"}), {"/nonexistent/model", "not found"});
}

TEST_F(BadInput, MissingTokenizer) {
  TempDir dir("missing-tokenizer");
  fs::copy(model_->path(), dir / "model", fs::copy_options::recursive);
  fs::remove(dir / "model" / "tokenizer.json");
  expect_clean_error(run_lathe({"infer", "--model", (dir / "model").string()}), {"tokenizer.json"});
}

TEST_F(BadInput, InvalidTokenizer) {
  TempDir dir("invalid-tokenizer");
  auto model = broken_copy(dir, "tokenizer.json", "{\"model\": {\"type\": ");
  expect_clean_error(run_lathe({"infer", "--model", model.string()}), {"tokenizer.json"});
}

TEST_F(BadInput, CorruptSafetensors) {
  TempDir dir("corrupt-weights");
  auto model = broken_copy(dir, "model.safetensors", std::string("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", 13));
  expect_clean_error(run_lathe({"infer", "--model", model.string()}), {"model.safetensors"});
}

TEST_F(BadInput, UnsupportedArchitecture) {
  TempDir dir("unsupported-arch");
  auto config = nlohmann::json::parse(read_file(model_->path() / "config.json"));
  config["model_type"] = "mamba";
  config["architectures"] = {"MambaForCausalLM"};
  auto model = broken_copy(dir, "config.json", config.dump());
  expect_clean_error(run_lathe({"infer", "--model", model.string()}), {"config.json", "MambaForCausalLM"});
}

TEST_F(BadInput, UnreadableDataset) {
  TempDir dir("bad-dataset");
  write_file_atomic(dir / "rows.jsonl", "{\"query\": \"hi\"}\n{oops\n");
  expect_clean_error(run_lathe({"infer", "--model", model_->path().string(), "--val_dataset", (dir / "rows.jsonl").string(),
                                "--result_path", (dir / "out.jsonl").string()}),
                     {"rows.jsonl:2"});
  EXPECT_FALSE(fs::exists(dir / "out.jsonl"));
  expect_clean_error(run_lathe({"sft", "--model", model_->path().string(), "--dataset", (dir / "missing.jsonl").string()}),
                     {"missing.jsonl"});
}

TEST_F(BadInput, UnknownAndIllTypedArguments) {
  auto unknown = run_lathe({"sft", "--model", model_->path().string(), "--no_such_argument", "1"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("no_such_argument"), std::string::npos) << unknown.err;
  auto ill_typed = run_lathe({"sft", "--lora_rank", "eight"});
  EXPECT_EQ(ill_typed.exit_code, 2);
  EXPECT_NE(ill_typed.err.find("lora_rank"), std::string::npos) << ill_typed.err;
  auto command = run_lathe({"frobnicate"});
  EXPECT_EQ(command.exit_code, 2);
  EXPECT_NE(command.err.find("unknown command"), std::string::npos);
}

TEST_F(BadInput, HelpDocumentsEveryArgument) {
  auto help = run_lathe({"sft", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* option : {"--model", "--dataset", "--lora_rank", "--gradient_accumulation_steps", "--save_total_limit",
                             "--resume_from_checkpoint", "--config", "--loss_scale", "--packing"}) {
    EXPECT_NE(help.out.find(option), std::string::npos) << option;
  }
}

}  // namespace
}  // namespace lathe::testing
