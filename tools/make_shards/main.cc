// cnx-make-shards: packs an ImageFolder tree, a folder of unlabelled images,
// existing WebDataset tars or Fashion-MNIST into tar shards plus index.json
// (docs/data.md), decoding every image on the way; prints what it skipped.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "common/check.h"
#include "common/cli.h"
#include "common/logging.h"
#include "data/make_shards.h"

namespace {

// A one-line progress bar with rate and ETA on stderr, redrawn at most
// every 200 ms (a new line every 5 s when stderr is not a terminal).
class ProgressBar {
 public:
  void operator()(int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    const bool tty = isatty(fileno(stderr)) != 0;
    if (done != total && since < (tty ? 0.2 : 5.0)) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    const double eta = rate > 0 ? (total - done) / rate : 0.0;
    const int width = 30;
    const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "%s[%s] %lld/%lld  %.0f samples/s  ETA %02d:%02d%s", tty ? "\r" : "", bar.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), rate, static_cast<int>(eta) / 60,
                 static_cast<int>(eta) % 60, (done == total || !tty) ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};

// What was packed and what was left out (each skipped input with its reason;
// the full list is in skipped.tsv next to the index).
void print_summary(const cnx::data::ShardIndex& index, const cnx::data::MakeShardsReport& r,
                   const cnx::data::MakeShardsOptions& opt) {
  int64_t bytes = 0;
  for (const auto& s : index.shards) bytes += s.bytes;
  std::fprintf(stderr, "wrote %lld samples in %zu shards (%.1f MiB) to %s/%s\n",
               static_cast<long long>(index.total_samples), index.shards.size(), bytes / 1048576.0, opt.out_dir.c_str(),
               opt.index_name.c_str());
  std::fprintf(stderr, "checked %lld inputs: %lld packed, %zu skipped (bad), %zu ignored (not images)",
               static_cast<long long>(r.inputs), static_cast<long long>(r.written), r.bad.size(), r.not_images.size());
  if (r.extension_fixed > 0)
    std::fprintf(stderr, ", %lld stored under the format of their bytes", static_cast<long long>(r.extension_fixed));
  std::fprintf(stderr, "\n");
  constexpr size_t kShow = 20;
  size_t shown = 0;
  for (const auto* list : {&r.bad, &r.not_images}) {
    for (const auto& s : *list) {
      if (shown++ >= kShow) break;
      std::fprintf(stderr, "  %s %s: %s\n", list == &r.bad ? "skipped" : "ignored", s.origin.c_str(), s.reason.c_str());
    }
  }
  const size_t listed = r.bad.size() + r.not_images.size();
  if (listed > 0)
    std::fprintf(stderr, "%s%s/skipped.tsv lists all %zu\n", listed > kShow ? "  ...\n" : "", opt.out_dir.c_str(),
                 listed);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Pack images into WebDataset-style tar shards with an index.json"};
  cnx::cli::ConfigFlags cfg;
  std::string folder, fmnist_dir = "/usr/share/datasets/fashion-mnist", split = "train", source;
  cnx::data::MakeShardsOptions opt;
  bool quiet = false, no_shuffle = false;
  std::string prefix;
  cnx::cli::add_config_flags(app, &cfg,
                             "job config: data.index (its folder and file name) is the default of --output and "
                             "--index-name, data.shard_root the default folder when set");
  app.add_option("--source", source,
                 "imagefolder (root/<class>/<image>, labelled) | images (a folder of images, unlabelled) | "
                 "webdataset (a .tar or a folder of .tar shards) | fashion-mnist")
      ->required()
      ->check(CLI::IsMember({"imagefolder", "images", "webdataset", "fashion-mnist"}));
  app.add_option("--input,-i", folder, "input folder (or .tar file) for --source imagefolder|images|webdataset");
  app.add_option("--fashion-mnist-dir", fmnist_dir, "folder with the Fashion-MNIST *.gz IDX files")
      ->capture_default_str();
  app.add_option("--split", split, "Fashion-MNIST split")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  app.add_option("--output,-o", opt.out_dir, "output folder for shards and the index (default: from --config)");
  app.add_option("--prefix", prefix, "shard name prefix (default: the split, or 'shard')");
  app.add_option("--dataset", opt.dataset, "dataset name stored in the index");
  app.add_option("--index-name", opt.index_name, "index file name")->capture_default_str();
  app.add_option("--shard-size-mb", opt.shard_size_mb, "target shard size in MiB (0 = unbounded)")
      ->check(cnx::cli::non_negative())
      ->capture_default_str();
  app.add_option("--samples-per-shard", opt.samples_per_shard, "max samples per shard (0 = unbounded)")
      ->check(cnx::cli::non_negative());
  app.add_option("--limit", opt.limit, "keep only this many samples (after shuffling; 0 = all)")
      ->check(cnx::cli::non_negative());
  app.add_option("--seed", opt.seed, "seed of the sample shuffle")->capture_default_str();
  app.add_option("--threads", opt.threads, "threads decoding images to check them (0 = one per core)")
      ->check(cnx::cli::non_negative());
  app.add_flag("--no-shuffle", no_shuffle, "keep the source order");
  app.add_flag("--force", opt.force, "replace an existing index and shards");
  app.add_flag("--quiet,-q", quiet, "no progress bar");

  return cnx::cli::run_main("cnx-make-shards", app, argc, argv, [&] {
    if (cfg.given() || !cfg.overrides.empty()) {
      const cnx::Config c = cnx::cli::load_config(cfg);
      if (opt.out_dir.empty() && !c.data.index.empty()) {
        const std::filesystem::path index(c.data.index);
        opt.out_dir = !c.data.shard_root.empty() ? c.data.shard_root : index.parent_path().string();
        if (opt.out_dir.empty()) opt.out_dir = ".";
        if (app.count("--index-name") == 0) opt.index_name = index.filename().string();
      }
    }
    if (opt.out_dir.empty())
      throw cnx::UsageError("--output is required (or --config with data.index set: shards go to its folder)");
    if (source != "fashion-mnist" && folder.empty())
      throw cnx::UsageError("--source " + source + " needs --input <path>");
    cnx::log::init("make-shards");
    opt.shuffle = !no_shuffle;
    ProgressBar bar;
    if (!quiet) opt.progress = [&bar](int64_t d, int64_t t) { bar(d, t); };
    cnx::data::ShardIndex index;
    cnx::data::MakeShardsReport report;
    opt.prefix = prefix.empty() ? (source == "fashion-mnist" ? split : "shard") : prefix;
    if (source == "fashion-mnist") {
      index = cnx::data::make_shards_from_fashion_mnist(fmnist_dir, split, opt, &report);
    } else {
      if (source == "imagefolder") index = cnx::data::make_shards_from_folder(folder, opt, &report);
      if (source == "images") index = cnx::data::make_shards_from_images(folder, opt, &report);
      if (source == "webdataset") index = cnx::data::make_shards_from_tars(folder, opt, &report);
    }
    print_summary(index, report, opt);
    return 0;
  });
}
