// External plugins end to end: a .cpp file compiled on the fly, an installed Lathe building a
// plugin out of tree with find_package(Lathe) + lathe_add_plugin, and bad plugins.
#include <gtest/gtest.h>

#include <cstdlib>

#include <fmt/format.h>

#include "cli/cli_util.h"
#include "lathe/common/files.h"

namespace lathe::testing {
namespace {
namespace fs = std::filesystem;

const fs::path kExample = fs::path(LATHE_SOURCE_DIR) / "examples/plugins/loss/custom_loss.cpp";

std::vector<std::string> cache_env(const TempDir& dir) { return {"LATHE_PLUGIN_CACHE=" + (dir / "cache").string()}; }

TEST(ExternalPlugins, SourceFileIsCompiledCachedAndListed) {
  TempDir dir("plugin-source");
  auto listed = run_lathe({"plugins", "--external_plugins", kExample.string()}, "", cache_env(dir));
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("custom_loss"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find(kExample.string()), std::string::npos) << "the origin is shown";
  EXPECT_NE(listed.err.find("compiling plugin"), std::string::npos);
  for (const char* base : {"default", "last_round", "all"}) {
    EXPECT_NE(listed.out.find(fmt::format("\n  {:<22} ", base)), std::string::npos) << "the loss-scale base " << base;
  }
  auto again = run_lathe({"plugins", "--external_plugins", kExample.string()}, "", cache_env(dir));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.err.find("compiling plugin"), std::string::npos) << "the second load uses the cache";
}

TEST(ExternalPlugins, CustomLossValuesReachTheLog) {
  TempDir dir("plugin-loss");
  write_tiny_model(dir / "model");
  write_jsonl(dir / "train.jsonl", {{{"query", "2 + 2?"}, {"response", "4"}}, {{"query", "3 + 3?"}, {"response", "6"}}});
  auto train = [&](const std::vector<std::string>& extra, const std::string& output) {
    std::vector<std::string> args{"sft", "--model", (dir / "model").string(), "--dataset", (dir / "train.jsonl").string(),
                                  "--output_dir", (dir / output).string(), "--max_steps", "1", "--train_type", "full",
                                  "--logging_steps", "1", "--per_device_train_batch_size", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto result = run_lathe(args, "", cache_env(dir));
    EXPECT_EQ(result.exit_code, 0) << result.err;
    for (const auto& run : fs::directory_iterator(dir / output)) {
      for (const auto& row : read_jsonl(run.path() / "logging.jsonl")) {
        if (row.contains("loss")) return row["loss"].get<double>();
      }
    }
    return -1.0;
  };
  const double plain = train({}, "plain");
  const double focal = train({"--external_plugins", kExample.string(), "--loss_type", "custom_loss"}, "focal");
  const double gentle = train({"--external_plugins", kExample.string(), "--loss_type", "custom_loss", "--plugin_args",
                               "{\"custom_loss\": {\"focal_gamma\": 0}}"}, "gentle");
  ASSERT_GT(plain, 0);
  // (1 - p)^gamma <= 1 shrinks the loss; gamma 0 gives back plain cross entropy.
  EXPECT_LT(focal, plain);
  EXPECT_NEAR(gentle, plain, 1e-6 * plain);
}

// A plugin built against another Lathe (another set of public headers, compiler or libtorch) says
// so instead of crashing on mismatched types; so does one from before the hashed identity.
TEST(ExternalPlugins, APluginOfAnotherAbiIsRefused) {
  TempDir dir("plugin-abi");
  write_file_atomic(dir / "other_abi.cpp", "extern \"C\" const char* lathe_plugin_abi() { return \"0123456789abcdef\"; }\n"
                                            "extern \"C\" void lathe_plugin_register() {}\n");
  auto other = run_lathe({"plugins", "--external_plugins", (dir / "other_abi.cpp").string()}, "", cache_env(dir));
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("other_abi.cpp: built against another Lathe (plugin ABI 0123456789abcdef; this Lathe's is "),
            std::string::npos)
      << other.err;
  write_file_atomic(dir / "numbered.cpp", "extern \"C\" int lathe_plugin_abi_version() { return 2; }\n"
                                           "extern \"C\" void lathe_plugin_register() {}\n");
  auto numbered = run_lathe({"plugins", "--external_plugins", (dir / "numbered.cpp").string()}, "", cache_env(dir));
  EXPECT_EQ(numbered.exit_code, 1);
  EXPECT_NE(numbered.err.find("built against another Lathe (plugin ABI an older numbered one"), std::string::npos)
      << numbered.err;
}

TEST(ExternalPlugins, BadPluginsAreNamed) {
  TempDir dir("plugin-bad");
  write_file_atomic(dir / "broken.cpp", "#include <lathe/plugin.h>\nLATHE_PLUGIN() { this does not compile; }\n");
  auto broken = run_lathe({"plugins", "--external_plugins", (dir / "broken.cpp").string()}, "", cache_env(dir));
  EXPECT_EQ(broken.exit_code, 1);
  EXPECT_NE(broken.err.find("broken.cpp: the plugin does not compile"), std::string::npos) << broken.err;
  EXPECT_NE(broken.err.find("error"), std::string::npos);

  write_file_atomic(dir / "no_entry.cpp", "int unrelated() { return 1; }\n");
  auto no_entry = run_lathe({"plugins", "--external_plugins", (dir / "no_entry.cpp").string()}, "", cache_env(dir));
  EXPECT_EQ(no_entry.exit_code, 1);
  EXPECT_NE(no_entry.err.find("not a Lathe plugin"), std::string::npos) << no_entry.err;

  write_file_atomic(dir / "twice.cpp",
                    "#include <lathe/plugin.h>\n#include <lathe/plugin/tuner.h>\n"
                    "LATHE_PLUGIN() { lathe::tuner_registry().add(\"lora\", \"again\", nullptr); }\n");
  auto twice = run_lathe({"plugins", "--external_plugins", (dir / "twice.cpp").string()}, "", cache_env(dir));
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find("'lora' is registered twice"), std::string::npos) << twice.err;

  auto missing = run_lathe({"plugins", "--external_plugins", (dir / "missing.so").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("missing.so: file not found"), std::string::npos) << missing.err;
}

TEST(ExternalPlugins, InstalledLatheBuildsAPluginOutOfTree) {
  TempDir dir("plugin-install");
  const auto prefix = dir / "prefix";
  auto shell = [](const std::string& command) { return std::system((command + " > /dev/null 2>&1").c_str()); };
  ASSERT_EQ(shell("cmake --install " + std::string(LATHE_BINARY_DIR) + " --prefix " + prefix.string()), 0);
  ASSERT_TRUE(fs::exists(prefix / "bin" / "lathe"));
  write_file_atomic(dir / "project" / "CMakeLists.txt",
                    "cmake_minimum_required(VERSION 3.24)\nproject(my_plugin CXX)\nfind_package(Lathe REQUIRED)\n"
                    "lathe_add_plugin(custom_loss " + kExample.string() + ")\n");
  ASSERT_EQ(shell("cmake -S " + (dir / "project").string() + " -B " + (dir / "build").string() +
                  " -DCMAKE_PREFIX_PATH=" + prefix.string()), 0);
  ASSERT_EQ(shell("cmake --build " + (dir / "build").string()), 0);
  const auto plugin = dir / "build" / "custom_loss.so";
  ASSERT_TRUE(fs::exists(plugin));
  auto listed = run_lathe({"plugins", "--external_plugins", plugin.string()});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("custom_loss"), std::string::npos);
}

}  // namespace
}  // namespace lathe::testing
