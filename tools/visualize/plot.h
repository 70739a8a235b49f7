#pragma once
// Line charts as PNG (training curves): several charts side by side, each
// with a title, its series, the x/y ranges written at the axes' ends and a
// light grid. Non-finite points are skipped. No LibTorch.
#include <string>
#include <vector>

#include "data/image_codec.h"
#include "tools/visualize/font.h"

namespace cnx::viz {

struct Series {
  std::string name;  // shown in the legend ("" = no legend entry)
  std::vector<double> x, y;
  Rgb colour{31, 119, 180};
  bool markers = false;  // draw a small square at every point
};

struct Chart {
  std::string title;
  std::string x_label;
  std::vector<Series> series;
  bool y_from_zero = false;  // include 0 in the y range
  // A log10 y axis (points <= 0 are skipped; the axis labels stay in the
  // data's units and the grid lines fall on powers of ten inside the range).
  bool log_y = false;
};

// Renders the charts left to right, each chart_w x chart_h pixels, on white.
// Throws std::invalid_argument for a series whose x and y differ in length.
data::Image render_charts(const std::vector<Chart>& charts, int chart_w = 420, int chart_h = 300);

// Writes the image as PNG; throws std::runtime_error naming the file.
void write_png_file(const std::string& path, const data::Image& img);

// "12.3", "0.00123" -> "1.23E-3": a short label for an axis value.
std::string axis_label(double v);

// A copy of `grid` with a white band on top naming its columns: column k
// spans x in [k * (column_width + gap), ... + column_width); each label is
// centred over its column and wrapped at spaces into lines that fit
// (drawn at scale 2 when the column is wide enough, else 1).
data::Image add_column_labels(const data::Image& grid, int column_width, int gap,
                              const std::vector<std::string>& labels);

// Worker progress lines ("step 120/1265 (9.5%) epoch 0.13 | loss 0.9812 |
// lr 1.42e-04 | 85.3 img/s | ..."), as cnx-worker logs them on rank 0.
struct ProgressLog {
  std::vector<double> step, epoch, loss, lr, images_per_s;
};
// Every progress line of `text`, in order (other lines are ignored).
ProgressLog parse_progress_log(const std::string& text);

// Loss (log y axis when every loss is > 0: the first steps' loss is often
// 10-100x the rest), lr and throughput over steps, one chart each.
data::Image render_progress(const ProgressLog& log, const std::string& title_prefix = "");

// A table of numbers (tab-separated, first line = column names; empty lines
// and lines starting with '#' are skipped; an empty cell is NaN, so its point
// is not drawn). Throws std::invalid_argument naming the line for a cell that
// is not a number or a row with the wrong number of cells.
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  // The column's index; throws std::invalid_argument naming the columns.
  size_t column(const std::string& name) const;
};
Table parse_tsv(const std::string& text);

// One chart per y column: y over the x column, lines with markers.
data::Image render_table(const Table& table, const std::string& x, const std::vector<std::string>& ys,
                         const std::string& title_prefix = "");

}  // namespace cnx::viz
