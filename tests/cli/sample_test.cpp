// `lathe sample` end to end: plain SFT rows without reward models; an ORM written in the test
// (scoring by a property of the text) deciding what is kept and rejected; the built-in math ORM
// keeping only correct answers from a fake OpenAI-compatible server (--sampler_engine client);
// a run interrupted mid-write resumed without duplicate rows.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<json> kQueries = {
    {{"messages", {{{"role", "user"}, {"content", "What is 2 + 2?"}}, {{"role", "assistant"}, {"content", "4"}}}}},
    {{"query", "What is 3 + 3?"}, {"response", "6"}},
};

std::vector<std::string> sample_arguments(const TempDir& dir, const std::string& output, int n) {
  return {"sample", "--model", (dir / "model").string(), "--dataset", (dir / "queries.jsonl").string(),
          "--output_dir", (dir / output).string(), "--num_return_sequences", std::to_string(n),
          "--temperature", "1.0", "--max_new_tokens", "6", "--max_batch_size", "4"};
}

// The answer a written row carries: its last assistant message, or its response column.
std::string response_of(const json& row) {
  if (row.contains("messages")) return row["messages"].back().at("content").get<std::string>();
  return row.at("response").get<std::string>();
}

// The test ORM's reward from the count L of ASCII letters: L / 100 when L is a positive multiple
// of 3, else -L / 100 (so about a third of the samples are judged good, and ranked among
// themselves). Letters survive the U+FFFD replacement of cut characters, so the reward can be
// recomputed from the written rows.
double letter_score(const std::string& text) {
  const auto letters = std::count_if(text.begin(), text.end(), [](unsigned char c) { return std::isalpha(c); });
  return (letters > 0 && letters % 3 == 0 ? letters : -letters) / 100.0;
}

const char* kLetterOrm = R"(
#include <lathe/plugin.h>
#include <lathe/plugin/orm.h>
#include <algorithm>
#include <cctype>
namespace {
struct Letters : lathe::OutcomeRewardModel {
  std::vector<double> score(const std::vector<lathe::RewardInput>& inputs) override {
    std::vector<double> rewards;
    for (const auto& input : inputs) {
      const auto& t = input.completion;
      const auto letters = std::count_if(t.begin(), t.end(), [](unsigned char c) { return std::isalpha(c); });
      rewards.push_back((letters > 0 && letters % 3 == 0 ? letters : -letters) / 100.0);
    }
    return rewards;
  }
};
}
LATHE_PLUGIN() {
  lathe::orm_registry().add("letters", "letters / 100, negated unless a multiple of 3", [](const lathe::PluginContext&) { return std::make_shared<Letters>(); });
}
)";

class Sample : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("sample");
    write_tiny_model(*dir_ / "model");
    write_jsonl(*dir_ / "queries.jsonl", kQueries);
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
};
TempDir* Sample::dir_ = nullptr;

TEST_F(Sample, WithoutRewardModelsEverySampleIsAnSftRow) {
  const auto& dir = *dir_;
  auto result = run_lathe(sample_arguments(dir, "plain", 8));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto rows = read_jsonl(dir / "plain" / "sample.jsonl");
  ASSERT_EQ(rows.size(), 16u);
  std::map<std::string, int> per_id;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& original = kQueries[i / 8];
    ASSERT_TRUE(rows[i].contains("id"));
    ++per_id[rows[i]["id"].get<std::string>()];
    EXPECT_FALSE(rows[i].contains("rejected_response"));
    // The original row, with only its answer replaced.
    auto expected = original;
    if (original.contains("messages")) {
      expected["messages"].back()["content"] = response_of(rows[i]);
    } else {
      expected["response"] = response_of(rows[i]);
    }
    expected["id"] = rows[i]["id"];
    EXPECT_EQ(rows[i], expected);
  }
  EXPECT_EQ(per_id.size(), 2u) << "one id per query, the same for its rows";
  std::set<std::string> distinct;
  for (std::size_t i = 0; i < 8; ++i) distinct.insert(response_of(rows[i]));
  EXPECT_GT(distinct.size(), 1u) << "samples of one query use distinct seeds";
}

TEST_F(Sample, AnOrmKeepsTheBestAndNamesTheWorstAsRejected) {
  const auto& dir = *dir_;
  const auto cache = "LATHE_PLUGIN_CACHE=" + (fs::path(LATHE_BINARY_DIR) / "plugin-cache-examples").string();
  write_file_atomic(dir / "letters.cpp", kLetterOrm);
  auto plain = run_lathe(sample_arguments(dir, "all", 8));
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  auto arguments = sample_arguments(dir, "scored", 8);
  arguments.insert(arguments.end(), {"--external_plugins", (dir / "letters.cpp").string(), "--orm_model", "letters",
                                     "--n_best_to_keep", "3"});
  auto scored = run_lathe(arguments, "", {cache});
  ASSERT_EQ(scored.exit_code, 0) << scored.err;

  // The same seeds draw the same 8 responses per query as the plain run; recompute what is kept.
  const auto all = read_jsonl(dir / "all" / "sample.jsonl");
  const auto kept = read_jsonl(dir / "scored" / "sample.jsonl");
  ASSERT_EQ(all.size(), 16u);
  std::size_t expected_rows = 0, judged_good = 0;
  for (std::size_t query = 0; query < 2; ++query) {
    std::vector<double> scores;
    for (std::size_t i = 0; i < 8; ++i) scores.push_back(letter_score(response_of(all[query * 8 + i])));
    const double worst = *std::min_element(scores.begin(), scores.end());
    std::vector<double> positive;
    std::copy_if(scores.begin(), scores.end(), std::back_inserter(positive), [](double s) { return s > 0; });
    judged_good += positive.size();
    std::sort(positive.rbegin(), positive.rend());
    positive.resize(std::min<std::size_t>(positive.size(), 3));

    std::vector<double> kept_scores;
    for (const auto& row : kept) {
      if (row["id"] != all[query * 8]["id"]) continue;
      kept_scores.push_back(letter_score(response_of(row)));
      EXPECT_EQ(letter_score(row.at("rejected_response").get<std::string>()), worst);
    }
    EXPECT_EQ(kept_scores, positive) << "query " << query << ": the best positive scores, best first";
    expected_rows += positive.size();
  }
  EXPECT_EQ(kept.size(), expected_rows);
  EXPECT_GT(expected_rows, 0u) << "the scenario keeps something";
  EXPECT_LT(judged_good, 16u) << "the scenario has responses the ORM rejects";
}

// A fake OpenAI-compatible server: every chat completion gets the same four choices (cycled to
// n), and the request bodies are appended to requests.jsonl.
const char* kFakeServer = R"(
import http.server, json, sys
CHOICES = ["The sum is \\boxed{4}.", "\\boxed{5}", "so \\boxed{ 4 }", "no idea"]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(sys.argv[2], "a") as log:
            log.write(json.dumps({"path": self.path, "body": body}) + "\n")
        reply = {"choices": [{"index": i, "message": {"role": "assistant", "content": CHOICES[i % 4]},
                              "finish_reason": "stop"} for i in range(body["n"])]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
)";

// The fake server in a child process, stopped when the test ends however it ends.
class FakeServer {
 public:
  explicit FakeServer(const fs::path& dir) : dir_(dir) {
    write_file_atomic(dir / "server.py", kFakeServer);
    pid_ = fork();
    if (pid_ == 0) {
      execl("/usr/bin/python3", "python3", (dir / "server.py").c_str(), (dir / "port").c_str(),
            (dir / "requests.jsonl").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 300 && pid_ > 0 && !fs::exists(dir / "port"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ~FakeServer() { stop(); }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool started() const { return fs::exists(dir_ / "port"); }
  std::string base() const { return "http://127.0.0.1:" + read_file(dir_ / "port") + "/v1"; }
  std::vector<json> requests() const { return read_jsonl(dir_ / "requests.jsonl"); }

 private:
  fs::path dir_;
  pid_t pid_ = -1;
};

TEST(SampleClient, MathOrmKeepsOnlyCorrectAnswersFromAServer) {
  TempDir dir("sample-client");
  FakeServer server(dir.path());
  ASSERT_TRUE(server.started()) << "the fake server did not start";
  const auto base = server.base();

  // References: "4" as a response column, \boxed{4} as the assistant message, "6" (never given).
  write_jsonl(dir / "queries.jsonl",
              {{{"query", "2 + 2?"}, {"response", "4"}},
               {{"messages", {{{"role", "user"}, {"content", "1 + 3?"}}, {{"role", "assistant"}, {"content", "\\boxed{4}"}}}}},
               {{"query", "3 + 3?"}, {"response", "6"}}});
  const std::vector<std::string> arguments{"sample", "--sampler_engine", "client", "--engine_kwargs_base_url", base,
                                           "--engine_kwargs_model", "fake", "--dataset", (dir / "queries.jsonl").string(),
                                           "--output_dir", (dir / "out").string(), "--num_return_sequences", "8",
                                           "--temperature", "0.7", "--max_new_tokens", "32", "--orm_model", "math"};
  auto result = run_lathe(arguments);
  // A rerun asks for nothing: every query is finished, also 3 + 3, which kept no response.
  auto rerun = run_lathe(arguments);
  server.stop();
  ASSERT_EQ(result.exit_code, 0) << result.err;
  ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
  EXPECT_EQ(read_file(dir / "out" / "sample.jsonl.done").size(), 3 * 17u) << "one 16-hex-digit id per line";

  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0]["path"], "/v1/chat/completions");
  EXPECT_EQ(requests[0]["body"]["n"], 8);
  EXPECT_EQ(requests[0]["body"]["max_tokens"], 32);
  EXPECT_EQ(requests[0]["body"]["temperature"], 0.7);
  EXPECT_EQ(requests[0]["body"]["model"], "fake");
  EXPECT_EQ(requests[1]["body"]["messages"], json::array({{{"role", "user"}, {"content", "1 + 3?"}}}));

  // 8 choices per query: four right (\boxed{4} twice per cycle), n_best_to_keep 5 keeps all four;
  // the first wrong one is the rejected response. Nothing is right for 3 + 3.
  const auto rows = read_jsonl(dir / "out" / "sample.jsonl");
  ASSERT_EQ(rows.size(), 8u);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto answer = response_of(rows[i]);
    EXPECT_TRUE(answer == "The sum is \\boxed{4}." || answer == "so \\boxed{ 4 }") << answer;
    EXPECT_EQ(rows[i]["rejected_response"], "\\boxed{5}");
    EXPECT_EQ(rows[i]["id"], rows[i < 4 ? 0 : 4]["id"]);
  }
  EXPECT_NE(rows[0]["id"], rows[4]["id"]);
  EXPECT_EQ(rows[4]["messages"][0]["content"], "1 + 3?");
}

TEST_F(Sample, ResumingAfterAnInterruptedWriteLeavesNoDuplicates) {
  const auto& dir = *dir_;
  auto first = run_lathe(sample_arguments(dir, "whole", 3));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto whole = read_file(dir / "whole" / "sample.jsonl");

  // As if killed while writing the second query's rows: three lines and half of the fourth.
  std::size_t cut = 0;
  for (int line = 0; line < 3; ++line) cut = whole.find('\n', cut) + 1;
  const auto fourth_end = whole.find('\n', cut);
  fs::create_directories(dir / "resumed");
  write_file_atomic(dir / "resumed" / "sample.jsonl", whole.substr(0, cut + (fourth_end - cut) / 2));
  auto resumed = run_lathe(sample_arguments(dir, "resumed", 3));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("dropping"), std::string::npos) << resumed.err;
  EXPECT_EQ(read_file(dir / "resumed" / "sample.jsonl"), whole) << "query 1 kept, query 2 redone once";

  auto again = run_lathe(sample_arguments(dir, "resumed", 3));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(read_file(dir / "resumed" / "sample.jsonl"), whole) << "a finished run adds nothing";
}

}  // namespace
}  // namespace lathe::testing

namespace lathe::testing {
namespace {

// The last \boxed{...} of a text (no nesting: the answers here are digits).
std::string boxed(const std::string& text) {
  const auto open = text.rfind("\\boxed{");
  if (open == std::string::npos) return {};
  const auto close = text.find('}', open);
  return close == std::string::npos ? std::string() : text.substr(open + 7, close - open - 7);
}

// Issue 5: a tiny model trained here on a synthetic arithmetic set, then sampled hot enough to
// make mistakes; the built-in math ORM keeps only the correct answers.
TEST(SampleTrained, MathOrmKeepsOnlyCorrectAnswersOfATrainedModel) {
  TempDir dir("sample-trained");
  write_tiny_model(dir / "model");
  std::vector<nlohmann::json> sums;
  for (auto [a, b] : std::vector<std::pair<int, int>>{{2, 3}, {4, 4}, {1, 2}, {3, 6}}) {
    const auto answer = "\\boxed{" + std::to_string(a + b) + "}";
    sums.push_back({{"query", std::to_string(a) + " + " + std::to_string(b) + " = ?"}, {"response", answer}});
  }
  write_jsonl(dir / "sums.jsonl", sums);
  auto train = run_lathe({"sft", "--model", (dir / "model").string(), "--dataset", (dir / "sums.jsonl").string(),
                          "--train_type", "full", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
                          "--max_steps", "60", "--per_device_train_batch_size", "4", "--save_steps", "60",
                          "--logging_steps", "60", "--output_dir", (dir / "trained").string(), "--add_version", "false"});
  ASSERT_EQ(train.exit_code, 0) << train.err;

  auto sample = run_lathe({"sample", "--model", (dir / "trained" / "checkpoint-60").string(), "--dataset",
                           (dir / "sums.jsonl").string(), "--output_dir", (dir / "out").string(),
                           "--num_return_sequences", "8", "--n_best_to_keep", "8", "--temperature", "1.5",
                           "--max_new_tokens", "8", "--orm_model", "math"});
  ASSERT_EQ(sample.exit_code, 0) << sample.err;
  const auto rows = read_jsonl(dir / "out" / "sample.jsonl");
  ASSERT_FALSE(rows.empty()) << "the trained model answers some sums right";
  int rejected_wrong = 0;
  for (const auto& row : rows) {
    const auto expected = boxed(row.at("response").get<std::string>());
    const auto original = std::find_if(sums.begin(), sums.end(), [&](const auto& s) { return s["query"] == row["query"]; });
    ASSERT_NE(original, sums.end()) << "a written row keeps its query: " << row.dump();
    EXPECT_EQ(expected, boxed((*original)["response"].get<std::string>())) << "kept: " << row.dump();
    if (boxed(row.at("rejected_response").get<std::string>()) != expected) ++rejected_wrong;
  }
  ::testing::Test::RecordProperty("kept_of_32", static_cast<int>(rows.size()));
  ::testing::Test::RecordProperty("rejected_wrong", rejected_wrong);
  EXPECT_LT(rows.size(), 4u * 8u) << "sampling at temperature 1.5 gets some wrong, and those are dropped";
  EXPECT_GT(rejected_wrong, 0) << "the rejected response of a query with mistakes is a wrong one";
}

// OpenAI (and `lathe deploy`) accept at most 64 choices per request: 70 samples are two requests,
// the second seeded where the first left off, so the server draws what one request would have.
TEST(SampleClient, AsksAtMost64ChoicesPerRequestWithContinuingSeeds) {
  TempDir dir("sample-client-many");
  FakeServer server(dir.path());
  ASSERT_TRUE(server.started()) << "the fake server did not start";
  write_jsonl(dir / "queries.jsonl", {{{"query", "2 + 2?"}, {"response", "4"}}});
  auto result = run_lathe({"sample", "--sampler_engine", "client", "--engine_kwargs_base_url", server.base(),
                           "--engine_kwargs_model", "fake", "--dataset", (dir / "queries.jsonl").string(),
                           "--output_dir", (dir / "out").string(), "--num_return_sequences", "70", "--seed", "42",
                           "--top_p", "0.9", "--orm_model", "math"});
  server.stop();
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0]["body"]["n"], 64);
  EXPECT_EQ(requests[0]["body"]["seed"], 42);
  EXPECT_EQ(requests[1]["body"]["n"], 6);
  EXPECT_EQ(requests[1]["body"]["seed"], 42 + 64);
  EXPECT_EQ(requests[1]["body"]["top_p"], 0.9);
  EXPECT_FALSE(requests[1]["body"].contains("top_k"));
}

}  // namespace
}  // namespace lathe::testing
