#include "ecosystem/oracle.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace fs = std::filesystem;
using nlohmann::json;

std::string oracle_python() {
  if (const char* given = std::getenv("LATHE_ORACLE_PYTHON"); given && *given) return given;
  const auto venv = fs::path(LATHE_SOURCE_DIR) / ".cache" / "oracle-venv";
  if (!fs::exists(venv / ".lathe-pins")) {
    ADD_FAILURE() << venv << " is missing: scripts/test.sh makes it (or run scripts/oracle_env.sh)";
  }
  return (venv / "bin" / "python").string();
}

bool run_oracle(const std::vector<std::vector<std::string>>& jobs, const fs::path& scratch) {
  const auto job_file = scratch / "oracle-jobs.json";
  write_file_atomic(job_file, json(jobs).dump(1));
  const auto script = (fs::path(LATHE_SOURCE_DIR) / "tests" / "ecosystem" / "hf_oracle.py").string();
  // One thread keeps the two-core machine free for the test that runs beside this one.
  const auto result = run_program(oracle_python(), {script, "batch", job_file.string()}, "",
                                  {"OMP_NUM_THREADS=1", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"});
  if (result.exit_code != 0) {
    ADD_FAILURE() << "hf_oracle.py failed (exit " << result.exit_code << "):\n" << result.out << result.err;
    return false;
  }
  return true;
}

json run_llama_cpp(const fs::path& gguf, const json& jobs, const fs::path& scratch) {
  const auto job_file = scratch / "llama-jobs.json", out_file = scratch / "llama-out.json";
  write_file_atomic(job_file, json{{"model", gguf.string()}, {"threads", 1}, {"jobs", jobs}}.dump());
  const auto script = fs::path(LATHE_SOURCE_DIR) / "tests" / "llama" / "llama_oracle.mjs";
  if (!fs::exists(script.parent_path() / "node_modules" / "node-llama-cpp")) {
    ADD_FAILURE() << "tests/llama/node_modules is missing: scripts/test.sh installs it (scripts/llama_cpp_env.sh)";
    return nullptr;
  }
  const auto result = run_program("/usr/bin/env", {"node", script.string(), job_file.string(), out_file.string()}, "",
                                  {"NODE_LLAMA_CPP_SKIP_DOWNLOAD=true"});
  if (result.exit_code != 0) {
    ADD_FAILURE() << "llama_oracle.mjs failed (exit " << result.exit_code << "):\n" << result.out << result.err;
    return nullptr;
  }
  return json::parse(read_file(out_file)).at("results");
}

namespace {

torch::Tensor matrix(const json& rows) {
  std::vector<float> values;
  for (const auto& row : rows) {
    for (const auto& value : row) values.push_back(value.get<float>());
  }
  const auto height = static_cast<int64_t>(rows.size());
  return torch::tensor(values).view({height, height == 0 ? 0 : static_cast<int64_t>(values.size()) / height});
}

}  // namespace

OracleLogits read_oracle_logits(const fs::path& file) {
  const auto result = json::parse(read_file(file));
  return {matrix(result.at("logits")), matrix(result.at("step_logits")), result.at("loading")};
}

std::vector<std::string> logits_job(const fs::path& model, const std::vector<int32_t>& ids, const fs::path& out,
                                    const std::vector<std::string>& extra) {
  std::string joined;
  for (const auto id : ids) joined += (joined.empty() ? "" : ",") + std::to_string(id);
  std::vector<std::string> job{"logits", "--model", model.string(), "--ids", joined, "--out", out.string()};
  job.insert(job.end(), extra.begin(), extra.end());
  return job;
}

LatheLogits lathe_logits(CausalLM& model, const std::vector<int32_t>& ids) {
  torch::NoGradGuard no_grad;
  model->eval();
  const auto length = static_cast<int64_t>(ids.size());
  const auto tokens = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).view({1, length});
  ForwardInputs whole{tokens, torch::arange(length, torch::kLong).view({1, length}), {}, nullptr};
  auto full = model->logits(model->forward(whole))[0].to(torch::kFloat32);
  KVCache cache;
  std::vector<torch::Tensor> steps;
  for (int64_t i = 0; i < length; ++i) {
    ForwardInputs step{tokens.slice(1, i, i + 1), torch::full({1, 1}, i, torch::kLong), {}, &cache};
    steps.push_back(model->logits(model->forward(step))[0][0].to(torch::kFloat32));
  }
  return {full, torch::stack(steps)};
}

fs::path lathe_sft_checkpoint(const fs::path& dir, const fs::path& base, const std::string& output,
                              const std::vector<std::string>& tuner_arguments) {
  const auto dataset = dir / "train.jsonl";
  if (!fs::exists(dataset)) {
    std::vector<json> rows;
    for (int i = 0; i < 8; ++i) rows.push_back({{"query", "Count to " + std::to_string(i)}, {"response", std::to_string(i) + "!"}});
    write_jsonl(dataset, rows);
  }
  // A large learning rate, so that two steps move every adapter tensor well away from its start.
  std::vector<std::string> args{"sft", "--model", base.string(), "--dataset", dataset.string(), "--output_dir",
                                (dir / output).string(), "--add_version", "false", "--max_steps", "2",
                                "--per_device_train_batch_size", "4", "--save_steps", "2", "--learning_rate", "1e-2",
                                "--lora_dropout", "0", "--lora_rank", "4", "--lora_alpha", "8", "--seed", "5"};
  args.insert(args.end(), tuner_arguments.begin(), tuner_arguments.end());
  const auto result = run_lathe(args);
  EXPECT_EQ(result.exit_code, 0) << output << ": " << result.err;
  return dir / output / "checkpoint-2";
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace lathe::testing
