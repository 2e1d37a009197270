#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lathe/data/dataset.h"
#include "lathe/common/error.h"
#include "lathe/common/files.h"

namespace lathe {
namespace {
using nlohmann::json;

const RowLocation kWhere{"rows.jsonl", 3};

std::vector<std::pair<std::string, std::string>> turns(const Conversation& conversation) {
  std::vector<std::pair<std::string, std::string>> result;
  for (const auto& message : conversation.messages) result.emplace_back(message.role, message.content);
  return result;
}

using Turns = std::vector<std::pair<std::string, std::string>>;

TEST(Formats, Messages) {
  auto row = json::parse(R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
      {"role": "assistant", "content": "A", "loss": false, "loss_scale": 2.5}]})");
  auto conversation = to_conversation(row, kWhere);
  EXPECT_EQ(turns(conversation), (Turns{{"system", "S"}, {"user", "Q"}, {"assistant", "A"}}));
  EXPECT_EQ(conversation.messages[2].loss, false);
  EXPECT_EQ(conversation.messages[2].loss_scale, 2.5);
}

TEST(Formats, ShareGptFromValue) {
  auto row = json::parse(R"({"system": "S", "conversations": [{"from": "human", "value": "Q1"},
      {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]})");
  EXPECT_EQ(turns(to_conversation(row, kWhere)),
            (Turns{{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "A2"}}));
}

TEST(Formats, ShareGptTurnPairs) {
  auto row = json::parse(R"({"conversation": [{"human": "Q1", "assistant": "A1"}, {"human": "Q2", "assistant": "A2"}]})");
  EXPECT_EQ(turns(to_conversation(row, kWhere)),
            (Turns{{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "A2"}}));
}

TEST(Formats, AlpacaJoinsInstructionAndInput) {
  auto row = json::parse(R"({"instruction": "Translate", "input": "bonjour", "output": "hello"})");
  EXPECT_EQ(turns(to_conversation(row, kWhere)), (Turns{{"user", "Translate\nbonjour"}, {"assistant", "hello"}}));
  auto no_input = json::parse(R"({"instruction": "Say hi", "input": "", "output": "hi"})");
  EXPECT_EQ(turns(to_conversation(no_input, kWhere)), (Turns{{"user", "Say hi"}, {"assistant", "hi"}}));
}

TEST(Formats, QueryResponseWithHistoryAndAliases) {
  auto row = json::parse(R"({"system": "S", "history": [["q0", "a0"]], "query": "q1", "response": "a1"})");
  EXPECT_EQ(turns(to_conversation(row, kWhere)),
            (Turns{{"system", "S"}, {"user", "q0"}, {"assistant", "a0"}, {"user", "q1"}, {"assistant", "a1"}}));
  auto aliased = json::parse(R"({"prompt": "p", "completion": "c"})");
  EXPECT_EQ(turns(to_conversation(aliased, kWhere)), (Turns{{"user", "p"}, {"assistant", "c"}}));
  auto question = json::parse(R"({"question": "p", "answer": "c"})");
  EXPECT_EQ(turns(to_conversation(question, kWhere)), (Turns{{"user", "p"}, {"assistant", "c"}}));
}

TEST(Formats, TextRowIsOneAssistantMessage) {
  auto row = json::parse(R"({"text": "Once upon a time"})");
  EXPECT_EQ(turns(to_conversation(row, kWhere)), (Turns{{"assistant", "Once upon a time"}}));
}

TEST(Formats, AgentRowsNormaliseRolesAndTools) {
  auto row = json::parse(R"({"tools": "[{\"name\": \"get_weather\"}]", "messages": [
      {"role": "user", "content": "weather?"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "content": "sunny"},
      {"role": "function_call", "content": "{}"}, {"role": "observation", "content": "ok"},
      {"role": "assistant", "content": "It is sunny."}]})");
  auto conversation = to_conversation(row, kWhere);
  ASSERT_EQ(conversation.messages.size(), 6u);
  EXPECT_EQ(conversation.messages[1].role, "tool_call");
  EXPECT_EQ(json::parse(conversation.messages[1].content),
            json::parse(R"({"name": "get_weather", "arguments": {"city": "Paris"}})"));
  EXPECT_EQ(conversation.messages[2].role, "tool_response");
  EXPECT_EQ(conversation.messages[3].role, "tool_call");
  EXPECT_EQ(conversation.messages[4].role, "tool_response");
  ASSERT_TRUE(conversation.tools.is_array());
  EXPECT_EQ(conversation.tools[0]["name"], "get_weather");
}

// An OpenAI assistant message with text and several calls keeps all of them, in order, each with
// the message's loss settings.
TEST(Formats, AssistantMessageKeepsItsTextAndEveryToolCall) {
  auto row = json::parse(R"({"messages": [{"role": "user", "content": "weather in two cities?"},
      {"role": "assistant", "content": "Let me look.", "loss": false, "loss_scale": 0.5, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"name": "get_weather", "arguments": {"city": "Rome"}}]}]})");
  auto conversation = to_conversation(row, kWhere);
  ASSERT_EQ(conversation.messages.size(), 4u);
  EXPECT_EQ(turns(conversation)[1], (std::pair<std::string, std::string>{"assistant", "Let me look."}));
  for (std::size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(conversation.messages[i].loss, false) << i;
    EXPECT_EQ(conversation.messages[i].loss_scale, 0.5) << i;
  }
  EXPECT_EQ(conversation.messages[2].role, "tool_call");
  EXPECT_EQ(json::parse(conversation.messages[2].content),
            json::parse(R"({"name": "get_weather", "arguments": {"city": "Paris"}})"));
  EXPECT_EQ(conversation.messages[3].role, "tool_call");
  EXPECT_EQ(json::parse(conversation.messages[3].content),
            json::parse(R"({"name": "get_weather", "arguments": {"city": "Rome"}})"));
}

void expect_error(const json& row, const std::string& fragment) {
  try {
    to_conversation(row, kWhere);
    FAIL() << "expected an error containing: " << fragment;
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("rows.jsonl:3"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

TEST(Formats, BadRowsNameLocationAndField) {
  expect_error(json::parse(R"({"messages": "hello"})"), "'messages'");
  expect_error(json::parse(R"({"messages": [{"content": "x"}]})"), "'role'");
  expect_error(json::parse(R"({"messages": [{"role": "wizard", "content": "x"}]})"), "unknown role 'wizard'");
  expect_error(json::parse(R"({"query": ["not", "text"]})"), "'query'");
  expect_error(json::parse(R"({"history": [["only one"]], "query": "q"})"), "'history'");
  expect_error(json::parse(R"({"tools": "{not json", "query": "q"})"), "'tools'");
  expect_error(json::parse(R"({"foo": 1})"), "no recognised fields");
  expect_error(json::parse(R"([1, 2])"), "JSON object");
  expect_error(json::parse(R"({"messages": [{"role": "assistant", "tool_calls": ["x"]}]})"), "tool_calls[0]");
  expect_error(json::parse(R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": 1}}]}]})"),
               "tool_calls[0]");
  expect_error(json::parse(R"({"messages": [{"role": "assistant", "tool_calls": "call"}]})"), "'tool_calls'");
}

class RowFiles : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("lathe_rows_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::filesystem::path file(const std::string& name, const std::string& content) {
    write_file_atomic(dir / name, content);
    return dir / name;
  }
};

TEST_F(RowFiles, JsonlSkipsBlankLinesAndCountsLines) {
  auto path = file("a.jsonl", "{\"query\": \"q1\"}\n\n{\"query\": \"q2\"}\n");
  std::vector<int64_t> lines;
  for_each_row(path, [&](const json&, const RowLocation& where) { lines.push_back(where.line); });
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 3}));
}

TEST_F(RowFiles, JsonlBadLineNamesFileAndLine) {
  auto path = file("bad.jsonl", "{\"query\": \"q1\"}\n{\"query\": \n");
  try {
    read_rows(path);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("bad.jsonl:2: not valid JSON"), std::string::npos) << error.what();
  }
}

TEST_F(RowFiles, JsonArray) {
  auto rows = read_rows(file("a.json", R"([{"query": "a"}, {"query": "b"}])"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1]["query"], "b");
  EXPECT_THROW(read_rows(file("b.json", R"({"query": "a"})")), Error);
}

TEST_F(RowFiles, CsvWithQuotesAndNewlines) {
  auto rows = read_rows(file("a.csv", "query,response\n\"hello, world\",\"line1\nline2\"\nq2,\"say \"\"hi\"\"\"\n"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["query"], "hello, world");
  EXPECT_EQ(rows[0]["response"], "line1\nline2");
  EXPECT_EQ(rows[1]["response"], "say \"hi\"");
  auto conversation = to_conversation(rows[0], {"a.csv", 2});
  EXPECT_EQ(conversation.messages.size(), 2u);
}

TEST_F(RowFiles, CsvRowWithWrongFieldCount) {
  EXPECT_THROW(read_rows(file("b.csv", "query,response\nonly\n")), Error);
}

TEST_F(RowFiles, MissingAndUnsupportedFiles) {
  EXPECT_THROW(read_rows(dir / "missing.jsonl"), Error);
  EXPECT_THROW(read_rows(file("a.parquet", "x")), Error);
}

}  // namespace
}  // namespace lathe
