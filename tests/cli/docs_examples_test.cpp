// The code blocks of docs/*.md marked `<!-- example: PATH -->` are the example files the other
// tests compile and run, so the documented examples are known to build and work.
#include <gtest/gtest.h>

#include <regex>

#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;

const fs::path kSource = LATHE_SOURCE_DIR;

TEST(DocsExamples, EveryMarkedBlockEqualsItsExampleFile) {
  const std::regex marker(R"(<!-- example: (\S+) -->\n```cpp\n)");
  int blocks = 0;
  for (const auto& doc : {kSource / "docs/plugins.md"}) {
    const std::string text = read_file(doc);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), marker); it != std::sregex_iterator(); ++it) {
      const auto& match = *it;
      const auto start = static_cast<std::size_t>(match.position(0) + match.length(0));
      const auto end = text.find("```\n", start);
      ASSERT_NE(end, std::string::npos) << doc << ": unterminated block for " << match[1];
      EXPECT_EQ(text.substr(start, end - start), read_file(kSource / match[1].str()))
          << doc << " shows an outdated " << match[1] << "; run scripts/sync_docs_examples.py";
      ++blocks;
    }
  }
  // One example per plugin kind (plugins.md lists thirteen kinds).
  EXPECT_EQ(blocks, 13);
}

TEST(DocsExamples, EveryExampleFileIsDocumented) {
  const std::string text = read_file(kSource / "docs/plugins.md");
  for (const auto& entry : fs::recursive_directory_iterator(kSource / "examples/plugins")) {
    if (entry.path().extension() != ".cpp") continue;
    const auto relative = fs::relative(entry.path(), kSource).string();
    EXPECT_NE(text.find("<!-- example: " + relative + " -->"), std::string::npos) << relative << " is not in docs/plugins.md";
  }
}

}  // namespace
}  // namespace lathe::testing
