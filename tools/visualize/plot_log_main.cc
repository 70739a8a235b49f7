// cnx-plot-log: training curves (loss, lr, throughput over steps) as a PNG,
// from the progress lines of a cnx-worker log; or, with --tsv, columns of a
// table over one of its columns (e.g. downstream top-1 over pretraining steps).
#include <CLI/CLI.hpp>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "common/cli.h"
#include "tools/visualize/plot.h"

int main(int argc, char** argv) {
  CLI::App app{"Plot loss, learning rate and throughput over steps from a cnx-worker log"};
  std::string log_path, out_path, title;
  app.add_option("--input,-i", log_path, "cnx-worker log (its rank-0 progress lines); required");
  app.add_option("--log", log_path, "alias of --input")->group("");
  app.add_option("--output,-o", out_path, "PNG to write; required");
  app.add_option("--out", out_path, "alias of --output")->group("");
  app.add_option("--title", title, "prefix of each chart's title");
  std::string tsv_x;
  std::vector<std::string> tsv_y;
  bool tsv = false;
  app.add_flag("--tsv", tsv, "--input is a tab-separated table with a header: plot each --y column over --x");
  app.add_option("--x", tsv_x, "--tsv: the x column");
  app.add_option("--y", tsv_y, "--tsv: a y column, one chart each (repeatable)");
  return cnx::cli::run_main("cnx-plot-log", app, argc, argv, [&] {
    if (log_path.empty()) throw cnx::UsageError("--input is required (a cnx-worker log)");
    if (out_path.empty()) throw cnx::UsageError("--output is required (the PNG to write)");
    std::ifstream in(log_path);
    if (!in) throw cnx::UserError("cannot read '" + log_path + "'");
    std::stringstream text;
    text << in.rdbuf();
    if (tsv) {
      if (tsv_x.empty() || tsv_y.empty()) throw cnx::UsageError("--tsv needs --x COLUMN and at least one --y COLUMN");
      cnx::viz::Table table;
      cnx::data::Image img;
      try {
        table = cnx::viz::parse_tsv(text.str());
        img = cnx::viz::render_table(table, tsv_x, tsv_y, title);
      } catch (const std::invalid_argument& e) {
        throw cnx::UserError("'" + log_path + "': " + e.what());
      }
      cnx::viz::write_png_file(out_path, img);
      std::cerr << "cnx-plot-log: " << table.rows.size() << " rows, " << tsv_y.size() << " chart(s) -> " << out_path
                << "\n";
      return 0;
    }
    const cnx::viz::ProgressLog log = cnx::viz::parse_progress_log(text.str());
    if (log.step.empty()) throw cnx::UserError("'" + log_path + "' has no progress lines ('step N ... | loss ...')");
    cnx::viz::write_png_file(out_path, cnx::viz::render_progress(log, title));
    std::cerr << "cnx-plot-log: " << log.step.size() << " progress points (steps " << log.step.front() << ".."
              << log.step.back() << ") -> " << out_path << "\n";
    return 0;
  });
}
