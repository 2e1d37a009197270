#include "train/plots.h"

#include <cairo.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

#include "lathe/common/format.h"
#include "lathe/common/files.h"

namespace lathe {
namespace fs = std::filesystem;

std::vector<double> smooth_ema(const std::vector<double>& values, double weight) {
  if (!(weight >= 0.0 && weight < 1.0)) throw std::invalid_argument("smooth_ema: weight must be in [0, 1)");
  std::vector<double> smoothed;
  smoothed.reserve(values.size());
  double average = 0.0;
  double weight_power = 1.0;
  for (const double value : values) {
    average = average * weight + (1.0 - weight) * value;
    weight_power *= weight;
    smoothed.push_back(average / (1.0 - weight_power));
  }
  return smoothed;
}

namespace {

constexpr int kWidth = 800;
constexpr int kHeight = 500;
constexpr double kMinLeft = 60, kRight = 24, kTop = 44, kBottom = 56;  // margins around the plot area
constexpr double kTickFontSize = 12;
constexpr double kSmoothingWeight = 0.9;
constexpr size_t kMaxPointsWithMarkers = 60;  // few points (evaluations) get a dot each so that one shows

// global_step -> value. A resumed run logs the replayed steps again; the later row wins.
using Series = std::map<int64_t, double>;

// Every numeric, finite key of every row that has a global_step. Rows that do not parse are
// skipped: a run killed while appending leaves half a line at the end.
std::map<std::string, Series> read_log(const fs::path& logging_jsonl) {
  std::map<std::string, Series> series;
  std::istringstream lines(read_file(logging_jsonl));
  std::string line;
  while (std::getline(lines, line)) {
    const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!row.is_object() || !row.contains("global_step") || !row["global_step"].is_number()) continue;
    const auto step = row["global_step"].get<int64_t>();
    for (const auto& [key, value] : row.items()) {
      if (key == "global_step" || !value.is_number()) continue;
      const auto number = value.get<double>();
      if (std::isfinite(number)) series[key][step] = number;
    }
  }
  return series;
}

struct Rgb {
  double red, green, blue;
};
constexpr Rgb kDarkBlue{0.12, 0.33, 0.65};
constexpr Rgb kLightBlue{0.62, 0.74, 0.90};

struct Line {
  std::string label;
  std::vector<double> x, y;
  Rgb colour;
  double width;
};

struct Chart {
  std::string title;
  std::vector<Line> lines;
};

// Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten.
struct Ticks {
  double step;
  double first_index;  // the first tick is first_index * step (an integer multiple keeps labels clean)
  int count;
  double first() const { return first_index * step; }
  double last() const { return (first_index + count - 1) * step; }
  double at(int i) const { return (first_index + i) * step; }
};

Ticks nice_ticks(double low, double high, int target_count, bool whole_numbers) {
  if (high - low <= 0.0) {
    const double pad = low != 0.0 ? std::abs(low) * 0.1 : 1.0;
    low -= pad;
    high += pad;
  }
  const double rough = (high - low) / target_count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(rough)));
  const double residual = rough / magnitude;
  double step = (residual < 1.5 ? 1 : residual < 3 ? 2 : residual < 7 ? 5 : 10) * magnitude;
  if (whole_numbers) step = std::max(step, 1.0);
  const double first_index = std::floor(low / step + 1e-9);
  const double last_index = std::ceil(high / step - 1e-9);
  return {step, first_index, static_cast<int>(last_index - first_index) + 1};
}

// Enough significant digits to tell neighbouring ticks apart, even on a nearly flat curve.
std::string tick_label(const Ticks& ticks, int i) {
  const double largest = std::max(std::abs(ticks.first()), std::abs(ticks.last()));
  const int needed = static_cast<int>(std::ceil(std::log10(largest / ticks.step))) + 1;
  return fmt::format("{:.{}g}", ticks.at(i), std::max(6, needed));
}

void set_colour(cairo_t* cr, Rgb colour) { cairo_set_source_rgb(cr, colour.red, colour.green, colour.blue); }

// Draws `text` with its anchor point at (x, y); align_x and align_y are 0 (start), 0.5 or 1 (end).
void draw_text(cairo_t* cr, const std::string& text, double x, double y, double align_x, double align_y) {
  cairo_text_extents_t extents;
  cairo_text_extents(cr, text.c_str(), &extents);
  cairo_move_to(cr, x - extents.x_bearing - extents.width * align_x, y - extents.y_bearing - extents.height * align_y);
  cairo_show_text(cr, text.c_str());
}

struct Frame {  // maps data coordinates to pixels inside the plot area
  Ticks x, y;
  double left;  // wide enough for the y tick labels
  double width = kWidth - left - kRight, height = kHeight - kTop - kBottom;
  double px(double value) const { return left + (value - x.first()) / (x.last() - x.first()) * width; }
  double py(double value) const { return kTop + height - (value - y.first()) / (y.last() - y.first()) * height; }
};

Frame frame_for(cairo_t* cr, const Chart& chart) {
  double x_low = INFINITY, x_high = -INFINITY, y_low = INFINITY, y_high = -INFINITY;
  for (const auto& line : chart.lines) {
    for (const double x : line.x) x_low = std::min(x_low, x), x_high = std::max(x_high, x);
    for (const double y : line.y) y_low = std::min(y_low, y), y_high = std::max(y_high, y);
  }
  const Ticks y_ticks = nice_ticks(y_low, y_high, 6, false);
  cairo_set_font_size(cr, kTickFontSize);
  double label_width = 0;
  for (int i = 0; i < y_ticks.count; ++i) {
    cairo_text_extents_t extents;
    cairo_text_extents(cr, tick_label(y_ticks, i).c_str(), &extents);
    label_width = std::max(label_width, extents.width);
  }
  return {nice_ticks(x_low, x_high, 8, /*whole_numbers=*/true), y_ticks, std::max(kMinLeft, label_width + 20)};
}

void draw_axes(cairo_t* cr, const Frame& frame) {
  cairo_set_font_size(cr, kTickFontSize);
  cairo_set_line_width(cr, 1);
  for (int i = 0; i < frame.y.count; ++i) {
    const double y = std::round(frame.py(frame.y.at(i))) + 0.5;  // crisp one-pixel lines
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, frame.left, y);
    cairo_line_to(cr, frame.left + frame.width, y);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    draw_text(cr, tick_label(frame.y, i), frame.left - 8, y, 1.0, 0.5);
  }
  for (int i = 0; i < frame.x.count; ++i) {
    const double x = std::round(frame.px(frame.x.at(i))) + 0.5;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x, kTop);
    cairo_line_to(cr, x, kTop + frame.height);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    draw_text(cr, tick_label(frame.x, i), x, kTop + frame.height + 8, 0.5, 0.0);
  }
  cairo_rectangle(cr, frame.left + 0.5, kTop + 0.5, frame.width, frame.height);
  cairo_stroke(cr);
  draw_text(cr, "global step", frame.left + frame.width / 2, kHeight - 10, 0.5, 1.0);
}

void draw_line(cairo_t* cr, const Frame& frame, const Line& line) {
  set_colour(cr, line.colour);
  cairo_set_line_width(cr, line.width);
  cairo_new_path(cr);  // text drawing leaves a current point that line_to would join
  for (size_t i = 0; i < line.x.size(); ++i) cairo_line_to(cr, frame.px(line.x[i]), frame.py(line.y[i]));
  cairo_stroke(cr);
  if (line.x.size() > kMaxPointsWithMarkers) return;
  for (size_t i = 0; i < line.x.size(); ++i) {
    cairo_arc(cr, frame.px(line.x[i]), frame.py(line.y[i]), line.width + 1.5, 0, 2 * M_PI);
    cairo_fill(cr);
  }
}

void draw_legend(cairo_t* cr, const Frame& frame, const std::vector<Line>& lines) {
  constexpr double kRowHeight = 20, kSample = 26, kPadding = 8;
  cairo_set_font_size(cr, kTickFontSize);
  double text_width = 0;
  for (const auto& line : lines) {
    cairo_text_extents_t extents;
    cairo_text_extents(cr, line.label.c_str(), &extents);
    text_width = std::max(text_width, extents.x_advance);
  }
  const double box_width = kPadding * 3 + kSample + text_width, box_height = kPadding * 2 + kRowHeight * lines.size();
  const double left = frame.left + frame.width - box_width - 10, top = kTop + 10;
  cairo_rectangle(cr, left + 0.5, top + 0.5, box_width, box_height);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
  cairo_fill_preserve(cr);
  cairo_set_source_rgb(cr, 0.7, 0.7, 0.7);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  for (size_t i = 0; i < lines.size(); ++i) {
    const double middle = top + kPadding + kRowHeight * (i + 0.5);
    set_colour(cr, lines[i].colour);
    cairo_set_line_width(cr, lines[i].width);
    cairo_move_to(cr, left + kPadding, middle);
    cairo_line_to(cr, left + kPadding + kSample, middle);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    draw_text(cr, lines[i].label, left + kPadding * 2 + kSample, middle, 0.0, 0.5);
  }
}

void draw_chart(cairo_t* cr, const Chart& chart) {
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  const Frame frame = frame_for(cr, chart);
  draw_axes(cr, frame);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (const auto& line : chart.lines) draw_line(cr, frame, line);  // the ticks' range holds every value
  if (chart.lines.size() > 1) draw_legend(cr, frame, chart.lines);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, 16);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  draw_text(cr, chart.title, kWidth / 2.0, 14, 0.5, 0.0);
}

void write_png(const fs::path& path, const Chart& chart) {
  const std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, kWidth, kHeight), cairo_surface_destroy);
  const std::unique_ptr<cairo_t, decltype(&cairo_destroy)> cr(cairo_create(surface.get()), cairo_destroy);
  draw_chart(cr.get(), chart);
  write_atomic_with(path, [&](const fs::path& temporary) {
    const cairo_status_t status = cairo_surface_write_to_png(surface.get(), temporary.c_str());
    if (status != CAIRO_STATUS_SUCCESS) fail("{}: cannot write PNG ({})", path.string(), cairo_status_to_string(status));
  });
}

Line line_of(const Series& series, std::string label, Rgb colour, double width) {
  Line line{std::move(label), {}, {}, colour, width};
  for (const auto& [step, value] : series) {
    line.x.push_back(static_cast<double>(step));
    line.y.push_back(value);
  }
  return line;
}

std::string file_stem(const std::string& key) {  // metric names from plugins may hold '/' or spaces
  std::string stem = key == "loss" ? "train_loss" : key;
  for (char& c : stem) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
  }
  return stem;
}

std::string title_of(const std::string& stem) {
  std::string title = stem;
  for (char& c : title) {
    if (c == '_') c = ' ';
  }
  return title;
}

// The training curves, every evaluation value, and what lathe rlhf's objectives measure.
bool plotted(const std::string& key) {
  static const std::set<std::string> keys{"loss", "learning_rate", "grad_norm", "nll_loss", "log_odds_ratio", "log_odds_chosen", "kl",
                                          "center_rewards_loss", "reward", "reward_std", "frac_reward_zero_std",
                                          "completions/mean_length", "num_turns"};
  return keys.contains(key) || key.starts_with("eval_") || key.starts_with("rewards/") || key.starts_with("logps/") ||
         key.starts_with("logits/");
}

}  // namespace

void write_training_plots(const fs::path& logging_jsonl, const fs::path& images_dir) {
  std::error_code ec;
  if (!fs::is_regular_file(logging_jsonl, ec)) return;
  for (const auto& [key, series] : read_log(logging_jsonl)) {
    if (!plotted(key)) continue;
    const std::string stem = file_stem(key);
    Chart chart{title_of(stem), {}};
    if (key == "loss") {
      Line raw = line_of(series, "raw", kLightBlue, 1.2);
      Line smoothed{fmt::format("smoothed (EMA {:g})", kSmoothingWeight), raw.x, smooth_ema(raw.y, kSmoothingWeight),
                    kDarkBlue, 2.0};
      chart.lines = {std::move(raw), std::move(smoothed)};
    } else {
      chart.lines = {line_of(series, key, kDarkBlue, 1.5)};
    }
    write_png(images_dir / (stem + ".png"), chart);
  }
}

}  // namespace lathe
