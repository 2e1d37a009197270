// `lathe deploy` as a program: it prints its address for --port 0, answers the PRM `client`
// (docs/plugins.md) as an OpenAI-compatible judge would, and stops cleanly on SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "cli/cli_util.h"
#include "lathe/common/files.h"
#include "lathe/plugin/prm.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;

// The port from "listening on http://127.0.0.1:PORT", waiting for the program to load the model.
int wait_for_port(const fs::path& out, int pid) {
  static const std::regex address(R"(listening on http://127\.0\.0\.1:(\d+))");
  for (int i = 0; i < 1200; ++i) {
    std::error_code ec;
    if (fs::exists(out, ec)) {
      std::smatch match;
      const std::string text = read_file(out);
      if (std::regex_search(text, match, address)) return std::stoi(match[1]);
    }
    if (waitpid(pid, nullptr, WNOHANG) == pid) return -1;  // it exited
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return -1;
}

TEST(Deploy, ThePrmClientJudgesWithItAndSigtermStopsIt) {
  testing::TempDir dir("deploy");
  testing::write_tiny_model(dir / "model");
  const auto log = dir / "deploy";
  const int pid = testing::spawn_lathe({"deploy", "--model", (dir / "model").string(), "--port", "0",
                                        "--served_model_name", "judge", "--max_new_tokens", "8", "--api_key", "k"},
                                       log);
  ASSERT_GT(pid, 0);
  const int port = wait_for_port(log.string() + ".out", pid);
  ASSERT_GT(port, 0) << read_file(log.string() + ".err");

  Arguments arguments;
  arguments.prm_api_base = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  arguments.prm_api_model = "judge";
  arguments.prm_api_key = "k";
  auto judge = prm_registry().create("client", arguments);
  PrmInput input{{{{"user", "What is 2+2?", {}, {}}, {"assistant", "4", {}, {}}}, nullptr}, std::string("4")};
  // A random tiny model never writes "Reward: x"; the client's documented answer to that is an
  // error naming the endpoint. Reaching it means the request and the chat completion round-tripped
  // (an HTTP error or a malformed reply fail with other messages).
  try {
    judge->score({input});
    ADD_FAILURE() << "a reply without \"Reward: x\" was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("has no \"Reward: x\" line"), std::string::npos) << error.what();
  }
  // Without the key the judge is refused.
  arguments.prm_api_key = "wrong";
  try {
    prm_registry().create("client", arguments)->score({input});
    ADD_FAILURE() << "a wrong key was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("HTTP 401"), std::string::npos) << error.what();
  }

  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(log.string() + ".err");
}

// A failure once the signal waiter runs (here: stderr closed, so the first line to it throws) is an
// ordinary error exit, not std::terminate on a joinable thread.
TEST(Deploy, AFailureAfterTheSignalWaiterStartedExitsCleanly) {
  testing::TempDir dir("deploy-closed-stderr");
  testing::write_tiny_model(dir / "model");
  const auto command = fmt::format("'{}' deploy --model '{}' --port 0 > '{}' 2>&-", LATHE_PROGRAM,
                                   (dir / "model").string(), (dir / "out.txt").string());
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "ended by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(read_file(dir / "out.txt").find("listening on http://127.0.0.1:"), std::string::npos);
}

}  // namespace
}  // namespace lathe
