#include "tools/visualize/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace cnx::viz {

namespace {

constexpr Rgb kBlack{0, 0, 0};
constexpr Rgb kGrid{225, 225, 225};
constexpr Rgb kAxis{90, 90, 90};

void line(data::Image& img, int x0, int y0, int x1, int y1, const Rgb& c) {
  // Bresenham, 2 px thick vertically for visibility.
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (int guard = 0; guard < 100000; ++guard) {
    set_pixel(img, x0, y0, c);
    set_pixel(img, x0, y0 + 1, c);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

void render_chart(data::Image& img, int ox, int w, int h, const Chart& chart) {
  // The y value as plotted (log10 on a log axis; NaN = skipped).
  auto ty = [&](double y) {
    if (!chart.log_y) return y;
    return y > 0 ? std::log10(y) : std::numeric_limits<double>::quiet_NaN();
  };
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const Series& s : chart.series) {
    if (s.x.size() != s.y.size())
      throw std::invalid_argument("chart '" + chart.title + "': series '" + s.name + "' has " +
                                  std::to_string(s.x.size()) + " x values and " + std::to_string(s.y.size()) +
                                  " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double y = ty(s.y[i]);
      if (!std::isfinite(s.x[i]) || !std::isfinite(y)) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
  }
  const bool empty = !(xmin <= xmax);
  if (empty) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (chart.y_from_zero && !chart.log_y) ymin = std::min(ymin, 0.0), ymax = std::max(ymax, 0.0);
  if (xmax - xmin <= 0) xmax = xmin + 1;
  if (ymax - ymin <= 0) {
    const double pad = std::max(std::abs(ymax) * 0.05, 1e-12);
    ymin -= pad;
    ymax += pad;
  }
  // Plot area inside the chart.
  const int left = ox + 56, right = ox + w - 12, top = 24, bottom = h - 34;
  const std::string title = chart.log_y ? chart.title + " (log)" : chart.title;
  draw_text(img, ox + (w - text_width(title, 2)) / 2, 4, title, kBlack, 2);
  const auto grid_y = [&](double y) {
    return bottom - static_cast<int>(std::lround((y - ymin) / (ymax - ymin) * (bottom - top)));
  };
  for (int g = 0; g <= 4; ++g) {
    const int gx = left + (right - left) * g / 4;
    for (int y = top; y <= bottom; ++y) set_pixel(img, gx, y, kGrid);
    if (chart.log_y) continue;
    const int gy = top + (bottom - top) * g / 4;
    for (int x = left; x <= right; ++x) set_pixel(img, x, gy, kGrid);
  }
  if (chart.log_y) {
    // Horizontal grid lines at the powers of ten inside the range, labelled.
    for (double d = std::ceil(ymin); d <= ymax; d += 1) {
      const int gy = grid_y(d);
      for (int x = left; x <= right; ++x) set_pixel(img, x, gy, kGrid);
      const std::string l = axis_label(std::pow(10.0, d));
      if (gy - top > kGlyphHeight + 2 && bottom - gy > kGlyphHeight + 2)
        draw_text(img, left - 4 - text_width(l), gy - kGlyphHeight / 2, l, kAxis);
    }
  }
  for (int x = left; x <= right; ++x) set_pixel(img, x, bottom, kAxis);
  for (int y = top; y <= bottom; ++y) set_pixel(img, left, y, kAxis);
  const std::string ytop = axis_label(chart.log_y ? std::pow(10.0, ymax) : ymax),
                    ybot = axis_label(chart.log_y ? std::pow(10.0, ymin) : ymin);
  draw_text(img, left - 4 - text_width(ytop), top, ytop, kBlack);
  draw_text(img, left - 4 - text_width(ybot), bottom - kGlyphHeight, ybot, kBlack);
  const std::string xl = axis_label(xmin), xr = axis_label(xmax);
  draw_text(img, left, bottom + 4, xl, kBlack);
  draw_text(img, right - text_width(xr), bottom + 4, xr, kBlack);
  draw_text(img, (left + right - text_width(chart.x_label)) / 2, bottom + 16, chart.x_label, kAxis);
  if (empty) {
    draw_text(img, (left + right - text_width("NO DATA", 2)) / 2, (top + bottom) / 2, "NO DATA", kAxis, 2);
    return;
  }
  auto px = [&](double x) { return left + static_cast<int>(std::lround((x - xmin) / (xmax - xmin) * (right - left))); };
  auto py = [&](double y) { return grid_y(ty(y)); };
  int legend_y = top + 4;
  for (const Series& s : chart.series) {
    bool have_prev = false;
    int x0 = 0, y0 = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(ty(s.y[i]))) {
        have_prev = false;
        continue;
      }
      const int x1 = px(s.x[i]), y1 = py(s.y[i]);
      if (have_prev) line(img, x0, y0, x1, y1, s.colour);
      if (s.markers || s.x.size() == 1) {
        for (int dy = -2; dy <= 2; ++dy)
          for (int dx = -2; dx <= 2; ++dx) set_pixel(img, x1 + dx, y1 + dy, s.colour);
      }
      x0 = x1, y0 = y1, have_prev = true;
    }
    if (!s.name.empty()) {
      const int lx = right - text_width(s.name) - 4;
      for (int k = 0; k < 10; ++k) set_pixel(img, lx - 14 + k, legend_y + 3, s.colour);
      draw_text(img, lx, legend_y, s.name, s.colour);
      legend_y += kGlyphHeight + 4;
    }
  }
}

}  // namespace

std::string axis_label(double v) {
  char buf[32];
  const double a = std::abs(v);
  if (a != 0 && (a < 1e-2 || a >= 1e5)) {
    std::snprintf(buf, sizeof(buf), "%.2E", v);
  } else if (a >= 100) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3g", v);
  }
  return buf;
}

data::Image render_charts(const std::vector<Chart>& charts, int chart_w, int chart_h) {
  data::Image img;
  img.width = std::max<int>(1, static_cast<int>(charts.size())) * chart_w;
  img.height = chart_h;
  img.channels = 3;
  img.pixels.assign(static_cast<size_t>(img.width) * img.height * 3, 255);
  for (size_t i = 0; i < charts.size(); ++i)
    render_chart(img, static_cast<int>(i) * chart_w, chart_w, chart_h, charts[i]);
  return img;
}

data::Image add_column_labels(const data::Image& grid, int column_width, int gap,
                              const std::vector<std::string>& labels) {
  const int scale = column_width >= 2 * text_width("PREDICTION") + 4 ? 2 : 1;
  const int line_h = (kGlyphHeight + 3) * scale;
  std::vector<std::vector<std::string>> wrapped;
  size_t max_lines = 1;
  for (const std::string& label : labels) {
    std::vector<std::string> lines;
    std::istringstream words(label);
    std::string word, cur;
    while (words >> word) {
      const std::string next = cur.empty() ? word : cur + " " + word;
      if (!cur.empty() && text_width(next, scale) > column_width) {
        lines.push_back(cur);
        cur = word;
      } else {
        cur = next;
      }
    }
    if (!cur.empty()) lines.push_back(cur);
    max_lines = std::max(max_lines, lines.size());
    wrapped.push_back(std::move(lines));
  }
  const int band = static_cast<int>(max_lines) * line_h + 4 * scale;
  data::Image out;
  out.width = grid.width;
  out.height = grid.height + band;
  out.channels = grid.channels;
  out.pixels.assign(static_cast<size_t>(out.width) * out.height * out.channels, 255);
  std::copy(grid.pixels.begin(), grid.pixels.end(),
            out.pixels.begin() + static_cast<std::ptrdiff_t>(band) * out.width * out.channels);
  for (size_t k = 0; k < wrapped.size(); ++k) {
    const int x0 = static_cast<int>(k) * (column_width + gap);
    for (size_t l = 0; l < wrapped[k].size(); ++l) {
      const std::string& t = wrapped[k][l];
      draw_text(out, x0 + (column_width - text_width(t, scale)) / 2, 2 * scale + static_cast<int>(l) * line_h, t,
                kBlack, scale);
    }
  }
  return out;
}

ProgressLog parse_progress_log(const std::string& text) {
  static const std::regex re(
      R"(step (\d+)(?:/\d+ \([0-9.]+%\))? epoch ([0-9.eE+-]+) \| loss ([0-9a-zA-Z.+-]+) \| lr ([0-9.eE+-]+) \| ([0-9.eE+-]+) img/s)");
  ProgressLog log;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    log.step.push_back(std::stod(m[1]));
    log.epoch.push_back(std::stod(m[2]));
    log.loss.push_back(std::strtod(m[3].str().c_str(), nullptr));
    log.lr.push_back(std::stod(m[4]));
    log.images_per_s.push_back(std::stod(m[5]));
  }
  return log;
}

data::Image render_progress(const ProgressLog& log, const std::string& title_prefix) {
  Chart loss{title_prefix + "loss", "step", {Series{"", log.step, log.loss, {214, 39, 40}}}};
  loss.log_y = std::any_of(log.loss.begin(), log.loss.end(), [](double l) { return std::isfinite(l) && l > 0; }) &&
               std::none_of(log.loss.begin(), log.loss.end(), [](double l) { return l <= 0; });
  Chart lr{title_prefix + "learning rate", "step", {Series{"", log.step, log.lr, {31, 119, 180}}}, true};
  Chart ips{title_prefix + "throughput (img/s)", "step", {Series{"", log.step, log.images_per_s, {44, 160, 44}}}, true};
  return render_charts({loss, lr, ips});
}

size_t Table::column(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return i;
  std::string known;
  for (const std::string& c : columns) known += (known.empty() ? "" : ", ") + c;
  throw std::invalid_argument("no column '" + name + "' (columns: " + known + ")");
}

Table parse_tsv(const std::string& text) {
  Table t;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  auto cells_of = [](const std::string& l) {
    std::vector<std::string> cells;
    std::string::size_type start = 0;
    for (;;) {
      const auto tab = l.find('\t', start);
      cells.push_back(l.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) return cells;
      start = tab + 1;
    }
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cells = cells_of(line);
    if (t.columns.empty()) {
      t.columns = std::move(cells);
      continue;
    }
    if (cells.size() != t.columns.size())
      throw std::invalid_argument("line " + std::to_string(line_no) + " has " + std::to_string(cells.size()) +
                                  " cells, the header " + std::to_string(t.columns.size()));
    std::vector<double> row;
    for (const std::string& c : cells) {
      if (c.empty()) {
        row.push_back(std::nan(""));
        continue;
      }
      char* end = nullptr;
      const double v = std::strtod(c.c_str(), &end);
      if (end != c.c_str() + c.size())
        throw std::invalid_argument("line " + std::to_string(line_no) + ": '" + c + "' is not a number");
      row.push_back(v);
    }
    t.rows.push_back(std::move(row));
  }
  if (t.columns.empty()) throw std::invalid_argument("no header line");
  return t;
}

data::Image render_table(const Table& table, const std::string& x, const std::vector<std::string>& ys,
                         const std::string& title_prefix) {
  static const Rgb kColours[] = {{214, 39, 40}, {31, 119, 180}, {44, 160, 44}, {148, 103, 189}};
  const size_t xi = table.column(x);
  std::vector<Chart> charts;
  for (size_t k = 0; k < ys.size(); ++k) {
    const size_t yi = table.column(ys[k]);
    Series s{"", {}, {}, kColours[k % 4], true};
    for (const std::vector<double>& row : table.rows) {
      s.x.push_back(row[xi]);
      s.y.push_back(row[yi]);
    }
    charts.push_back(Chart{title_prefix + ys[k], x, {std::move(s)}});
  }
  return render_charts(charts);
}

void write_png_file(const std::string& path, const data::Image& img) {
  const std::vector<uint8_t> bytes = data::encode_png(img);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
}

}  // namespace cnx::viz
