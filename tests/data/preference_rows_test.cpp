// lathe rlhf's rows as ms-swift reads them: rejected_response as a string or a list of assistant
// and tool messages replacing the answer after the last user message, rejected_messages as a whole
// conversation, kto's boolean label, and each malformed row as an error naming file and line.
#include <gtest/gtest.h>

#include <functional>

#include "lathe/common/error.h"
#include "lathe/data/dataset.h"

namespace lathe {
namespace {
using nlohmann::json;
using Turns = std::vector<std::pair<std::string, std::string>>;

const RowLocation kWhere{"pairs.jsonl", 7};

Turns turns(const Conversation& conversation) {
  Turns result;
  for (const auto& message : conversation.messages) result.emplace_back(message.role, message.content);
  return result;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

const json kTwoRounds = json::parse(R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
  {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Lathe."}])");

TEST(PreferenceRows, ARejectedResponseReplacesTheLastAnswer) {
  const auto row = to_preference_row({{"messages", kTwoRounds}, {"rejected_response", "I am Orbit."}}, kWhere);
  EXPECT_EQ(turns(row.chosen).back(), (std::pair<std::string, std::string>{"assistant", "I am Lathe."}));
  Turns expected = turns(row.chosen);
  expected.back().second = "I am Orbit.";
  EXPECT_EQ(turns(row.rejected), expected);
  EXPECT_EQ(row.margin, 0);
}

TEST(PreferenceRows, ARejectedListAndRejectedMessagesAndAMargin) {
  const auto listed = to_preference_row(
      json::parse(R"({"query": "2+2?", "response": "4", "margin": 0.5,
                      "rejected_response": [{"role": "assistant", "content": "5"}]})"),
      kWhere);
  EXPECT_EQ(turns(listed.rejected), (Turns{{"user", "2+2?"}, {"assistant", "5"}}));
  EXPECT_DOUBLE_EQ(listed.margin, 0.5);
  auto whole = kTwoRounds;
  whole[2]["content"] = "Hey.";
  whole[4]["content"] = "No idea.";
  const auto row = to_preference_row({{"messages", kTwoRounds}, {"rejected_messages", whole}}, kWhere);
  EXPECT_EQ(turns(row.rejected)[2].second, "Hey.");
  EXPECT_EQ(turns(row.rejected).back().second, "No idea.");
}

TEST(PreferenceRows, MalformedRowsNameTheFileLineAndField) {
  const auto base = json{{"messages", kTwoRounds}};
  const auto expect = [](const json& row, const std::string& fragment) {
    const auto message = error_of([&] { to_preference_row(row, kWhere); });
    EXPECT_NE(message.find("pairs.jsonl:7"), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  };
  expect(base, "neither");
  auto both = base;
  both["rejected_response"] = "x";
  both["rejected_messages"] = kTwoRounds;
  expect(both, "both");
  auto same = base;
  same["rejected_response"] = "I am Lathe.";
  expect(same, "equals the chosen answer");
  auto user = base;
  user["rejected_response"] = json::parse(R"([{"role": "user", "content": "again"}])");
  expect(user, "user message");
  auto margin = base;
  margin["rejected_response"] = "x";
  margin["margin"] = "big";
  expect(margin, "'margin' must be a number");
}

TEST(LabelledRows, TheLabelIsAJsonBoolean) {
  EXPECT_FALSE(to_labelled_row({{"messages", kTwoRounds}, {"label", false}}, kWhere).desirable);
  EXPECT_TRUE(to_labelled_row({{"messages", kTwoRounds}, {"label", true}}, kWhere).desirable);
  const auto missing = error_of([] { to_labelled_row({{"messages", kTwoRounds}}, kWhere); });
  EXPECT_NE(missing.find("pairs.jsonl:7"), std::string::npos) << missing;
  const auto text = error_of([] { to_labelled_row({{"messages", kTwoRounds}, {"label", "true"}}, kWhere); });
  EXPECT_NE(text.find("JSON boolean"), std::string::npos) << text;
}

}  // namespace
}  // namespace lathe
