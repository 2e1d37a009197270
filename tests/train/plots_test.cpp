#include "train/plots.h"

#include <cairo.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "lathe/common/files.h"

namespace fs = std::filesystem;

namespace {

class PlotsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lathe_plots_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_log(const std::string& text) {
    const fs::path path = dir_ / "logging.jsonl";
    std::ofstream(path) << text;
    return path;
  }

  fs::path dir_;
};

// 20 training steps and 2 evaluations, in the shape the trainer writes.
std::string training_log(bool with_eval) {
  std::string text;
  for (int step = 1; step <= 20; ++step) {
    text += "{\"loss\": " + std::to_string(2.5 - 0.05 * step + 0.1 * std::sin(step)) +
            ", \"grad_norm\": " + std::to_string(1.0 + 0.02 * step) +
            ", \"learning_rate\": " + std::to_string(1e-4 * std::min(1.0, step / 5.0)) +
            ", \"epoch\": " + std::to_string(step / 20.0) + ", \"global_step/max_steps\": \"" + std::to_string(step) +
            "/20\", \"memory(GiB)\": 1.5, \"global_step\": " + std::to_string(step) + "}\n";
    if (with_eval && step % 10 == 0) {
      text += "{\"eval_loss\": " + std::to_string(2.4 - 0.04 * step) + ", \"eval_token_acc\": " +
              std::to_string(0.3 + 0.01 * step) + ", \"epoch\": 0.5, \"global_step\": " + std::to_string(step) + "}\n";
    }
  }
  return text;
}

struct Png {
  int width = 0, height = 0;
  int non_white_pixels = 0;
};

// Checks the PNG signature, then decodes the file with cairo.
Png read_png(const fs::path& path) {
  const std::string bytes = lathe::read_file(path);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
  const std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
      cairo_image_surface_create_from_png(path.c_str()), cairo_surface_destroy);
  EXPECT_EQ(cairo_surface_status(surface.get()), CAIRO_STATUS_SUCCESS) << path;
  Png png{cairo_image_surface_get_width(surface.get()), cairo_image_surface_get_height(surface.get())};
  cairo_surface_flush(surface.get());
  const unsigned char* data = cairo_image_surface_get_data(surface.get());
  const int stride = cairo_image_surface_get_stride(surface.get());
  for (int y = 0; data && y < png.height; ++y) {
    const auto* row = reinterpret_cast<const uint32_t*>(data + y * stride);
    for (int x = 0; x < png.width; ++x) png.non_white_pixels += (row[x] & 0xFFFFFF) != 0xFFFFFF;
  }
  return png;
}

TEST_F(PlotsTest, WritesOnePngPerLoggedKey) {
  const fs::path images = dir_ / "images";
  lathe::write_training_plots(write_log(training_log(true)), images);
  for (const char* name : {"train_loss.png", "eval_loss.png", "eval_token_acc.png", "learning_rate.png",
                           "grad_norm.png"}) {
    ASSERT_TRUE(fs::exists(images / name)) << name;
    const Png png = read_png(images / name);
    EXPECT_EQ(png.width, 800) << name;
    EXPECT_EQ(png.height, 500) << name;
    EXPECT_GT(png.non_white_pixels, 2000) << name << " looks blank";
  }
  // Only plots: no other keys (epoch, memory), and no temporary files left behind.
  int files = 0;
  for (const auto& entry : fs::directory_iterator(images)) files += entry.is_regular_file();
  EXPECT_EQ(files, 5);
}

TEST_F(PlotsTest, NoEvalRowsMeansNoEvalPlot) {
  const fs::path images = dir_ / "images";
  lathe::write_training_plots(write_log(training_log(false)), images);
  EXPECT_TRUE(fs::exists(images / "train_loss.png"));
  EXPECT_TRUE(fs::exists(images / "learning_rate.png"));
  EXPECT_FALSE(fs::exists(images / "eval_loss.png"));
  EXPECT_FALSE(fs::exists(images / "eval_token_acc.png"));
}

TEST_F(PlotsTest, MissingOrEmptyLogWritesNothing) {
  const fs::path images = dir_ / "images";
  lathe::write_training_plots(dir_ / "absent.jsonl", images);
  EXPECT_FALSE(fs::exists(images));
  lathe::write_training_plots(write_log(""), images);
  EXPECT_FALSE(fs::exists(images));
}

TEST_F(PlotsTest, SkipsNullsBrokenLinesAndSinglePoints) {
  // nlohmann writes a non-finite loss as null; a killed run leaves half a line at the end.
  const fs::path images = dir_ / "images";
  lathe::write_training_plots(write_log("{\"loss\": null, \"global_step\": 1}\n"
                                        "{\"loss\": 2.0, \"grad_norm\": null, \"global_step\": 2}\n"
                                        "{\"eval_loss\": 1.9, \"global_step\": 2}\n"
                                        "{\"loss\": 1.8, \"global_st"),
                              images);
  EXPECT_EQ(read_png(images / "train_loss.png").width, 800);
  EXPECT_GT(read_png(images / "eval_loss.png").non_white_pixels, 2000);
  EXPECT_FALSE(fs::exists(images / "grad_norm.png"));
}

TEST(SmoothEma, MatchesHandComputedDebiasedAverage) {
  // weight 0.5 on 1, 2, 3: averages 0.5, 1.25, 2.125 divided by 1 - 0.5^n = 0.5, 0.75, 0.875.
  const auto half = lathe::smooth_ema({1, 2, 3}, 0.5);
  ASSERT_EQ(half.size(), 3u);
  EXPECT_DOUBLE_EQ(half[0], 1.0);
  EXPECT_DOUBLE_EQ(half[1], 1.25 / 0.75);
  EXPECT_DOUBLE_EQ(half[2], 2.125 / 0.875);
  // weight 0.9 on 2, 1: averages 0.2, 0.28 divided by 0.1, 0.19.
  const auto tensorboard = lathe::smooth_ema({2, 1}, 0.9);
  EXPECT_NEAR(tensorboard[0], 2.0, 1e-12);
  EXPECT_NEAR(tensorboard[1], 0.28 / 0.19, 1e-12);
  // weight 0 leaves the values as they are; a constant stays constant.
  EXPECT_EQ(lathe::smooth_ema({3, -1, 4}, 0.0), (std::vector<double>{3, -1, 4}));
  for (const double value : lathe::smooth_ema({5, 5, 5, 5}, 0.9)) EXPECT_NEAR(value, 5.0, 1e-12);
  EXPECT_TRUE(lathe::smooth_ema({}, 0.9).empty());
}

}  // namespace
