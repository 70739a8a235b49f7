// cnx-transform-bench: images per second per core of the training transform
// (data/transform.h: JPEG decode + RandomResizedCrop + horizontal flip +
// normalise to float CHW) over a folder or list of real JPEG files, on ONE
// thread, with JPEG DCT-domain scaling on and off and crop-only decoding
// (TransformOptions::crop_decode) on and off in the same run. The
// counterpart of bench/data/torchvision_compare.py (torchvision + PIL on the
// same files); bench/data/torchvision_compare.sh runs both.
//
//   cnx-transform-bench (--dir DIR | --list FILE) [--dct both|on|off]
//       [--crop both|on|off] [--reps 3] [--min-seconds 2] [--size 224] [--scale-lo 0.08]
//       [--seed 0] [--label NAME]
//
// The files are read into memory first (the timing covers decode and
// transform, not the disk). Then one warm-up pass, in which files that fail to
// decode are dropped and counted, then `reps` rounds; in each round the DCT
// settings take turns, each doing whole passes over the files until
// --min-seconds have passed. Pass p draws its crops from
// sample_rng(seed, p, file name), so all settings see the same crops.
// Settings (variant names): dct_crop (DCT scaling and crop decoding on, the
// default of TransformOptions), dct (DCT scaling only), crop (crop decoding
// only), full (neither: whole image at full size).
// Defaults are torchvision's RandomResizedCrop(224): scale (0.08, 1), ratio
// (3/4, 4/3); bicubic antialiased resampling (torchvision: interpolation=
// BICUBIC) and ImageNet mean/std.
//
// Output, one line per round and setting (key=value, for the driver):
//   result impl=cnx variant=dct_crop set=LABEL rep=0 images=N wall_s=.. cpu_s=..
//          img_per_s=.. img_per_cpu_s=..
// img_per_cpu_s (images per CPU-second of the process) is the per-core
// figure that other load on the machine disturbs least. Also printed: how
// often each DCT scale was used. Exit 2 on bad arguments, a missing folder or
// list, or no JPEG files; exit 1 when no file decodes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/cli.h"
#include "common/errors.h"
#include "common/rng.h"
#include "data/image_codec.h"
#include "data/transform.h"

using cnx::bench::process_cpu_seconds;

namespace fs = std::filesystem;
using namespace cnx;
using namespace cnx::data;

namespace {

struct File {
  std::string name;  // path as listed (the crop stream's key)
  std::vector<uint8_t> bytes;
};

bool is_jpeg_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg";
}

// The JPEG paths under --dir (recursive, sorted) or in --list (one a line,
// blank lines and '#' comments ignored; relative paths are relative to the
// list's folder).
std::vector<std::string> jpeg_paths(const std::string& dir, const std::string& list) {
  std::vector<std::string> paths;
  if (!dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw UsageError("--dir " + dir + ": no such folder");
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (is_jpeg_name(it->path()) && !it->is_directory()) paths.push_back(it->path().string());
    }
    if (ec) throw UsageError("--dir " + dir + ": " + ec.message());
    std::sort(paths.begin(), paths.end());
    if (paths.empty()) throw UsageError("--dir " + dir + ": no JPEG files (*.jpg, *.jpeg)");
  } else {
    std::ifstream in(list);
    if (!in) throw UsageError("--list " + list + ": cannot open");
    const fs::path base = fs::path(list).parent_path();
    for (std::string line; std::getline(in, line);) {
      line.erase(line.find_last_not_of(" \t\r") + 1);
      line.erase(0, line.find_first_not_of(" \t"));
      if (line.empty() || line[0] == '#') continue;
      const fs::path p(line);
      paths.push_back(p.is_absolute() ? line : (base / p).string());
    }
    if (paths.empty()) throw UsageError("--list " + list + ": no file names");
  }
  return paths;
}

struct PassStats {
  int64_t images = 0;
  int64_t failures = 0;
  std::map<std::string, int64_t> scales;  // "num/den" -> count
};

PassStats run_pass(const std::vector<File>& files, int64_t pass, uint64_t seed, const TransformOptions& opt,
                   std::vector<bool>* ok) {
  PassStats st;
  for (size_t i = 0; i < files.size(); ++i) {
    if (ok && !(*ok)[i]) continue;
    const File& f = files[i];
    TransformResult r =
        decode_and_transform(f.bytes.data(), f.bytes.size(), ImageFormat::kJpeg, sample_rng(seed, pass, f.name), opt);
    if (r.status != DecodeStatus::kOk) {
      ++st.failures;
      if (ok) {
        (*ok)[i] = false;
        std::fprintf(stderr, "cnx-transform-bench: skipped %s: %s (%s)\n", f.name.c_str(), decode_status_name(r.status),
                     r.error.c_str());
      }
      continue;
    }
    ++st.images;
    ++st.scales[std::to_string(r.jpeg_scale.num) + "/" + std::to_string(r.jpeg_scale.den)];
    // Keep the result observable so the work cannot be optimised away.
    if (r.chw.empty() || r.chw[0] != r.chw[0]) ++st.failures;
  }
  return st;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Images/s of decode + RandomResizedCrop + flip + normalise on one thread, over real JPEG files"};
  std::string dir, list, dct = "both", crop = "both", label;
  int reps = 3;
  double min_seconds = 2.0, scale_lo = 0.08;
  int64_t size = 224;
  uint64_t seed = 0;
  auto* o_dir = app.add_option("--dir", dir, "folder of JPEG files (*.jpg, *.jpeg; searched recursively)");
  auto* o_list = app.add_option("--list", list, "file with one JPEG path a line");
  o_dir->excludes(o_list);
  app.add_option("--dct", dct, "JPEG DCT-domain scaling: both (alternating), on or off")
      ->check(CLI::IsMember({"both", "on", "off"}));
  app.add_option("--crop", crop, "JPEG crop-only decoding (decode_jpeg_region): both (alternating), on or off")
      ->check(CLI::IsMember({"both", "on", "off"}));
  app.add_option("--reps", reps, "measured rounds")->check(CLI::Range(1, 1000));
  app.add_option("--min-seconds", min_seconds, "minimum time of one setting in one round (whole passes)")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--size", size, "output side")->check(CLI::Range(8, 4096));
  app.add_option("--scale-lo", scale_lo, "RandomResizedCrop's smallest area fraction")->check(CLI::Range(0.001, 1.0));
  app.add_option("--seed", seed, "crop stream seed");
  app.add_option("--label", label, "set name printed in the result lines (default: the folder or list name)");
  return cli::run_main("cnx-transform-bench", app, argc, argv, [&] {
    if (dir.empty() == list.empty()) throw UsageError("give exactly one of --dir and --list");
    if (label.empty()) label = fs::path(dir.empty() ? list : dir).filename().string();
    if (label.empty()) label = dir.empty() ? list : dir;
    const std::vector<std::string> paths = jpeg_paths(dir, list);

    std::vector<File> files;
    int64_t unreadable = 0, bytes = 0;
    for (const std::string& p : paths) {
      std::ifstream in(p, std::ios::binary);
      std::vector<uint8_t> b;
      if (in) b.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (!in && !in.eof()) b.clear();
      if (b.empty()) {
        ++unreadable;
        std::fprintf(stderr, "cnx-transform-bench: skipped %s: unreadable or empty\n", p.c_str());
        continue;
      }
      bytes += static_cast<int64_t>(b.size());
      files.push_back({p, std::move(b)});
    }

    TransformOptions opt;
    opt.size = size;
    opt.scale_lo = scale_lo;
    opt.scale_hi = 1.0;
    // Warm-up pass (full decode): drops the files that do not decode.
    std::vector<bool> ok(files.size(), true);
    opt.dct_scaling = false;
    opt.crop_decode = false;
    const PassStats warm = run_pass(files, 0, seed, opt, &ok);
    const int64_t usable = warm.images;
    std::printf("set %s: %zu JPEG files, %lld skipped (%lld unreadable, %lld do not decode), %lld used, mean %.1f KB\n",
                label.c_str(), paths.size(), static_cast<long long>(paths.size() - usable),
                static_cast<long long>(unreadable), static_cast<long long>(warm.failures),
                static_cast<long long>(usable), files.empty() ? 0.0 : bytes / 1024.0 / files.size());
    if (usable == 0) throw UserError("no file of " + label + " decodes");

    struct Setting {
      bool dct, crop;
      std::string name;
    };
    std::vector<Setting> settings;
    for (const bool d : {true, false}) {
      if (d ? dct == "off" : dct == "on") continue;
      for (const bool c : {true, false}) {
        if (c ? crop == "off" : crop == "on") continue;
        settings.push_back({d, c, d ? (c ? "dct_crop" : "dct") : (c ? "crop" : "full")});
      }
    }
    std::map<std::string, PassStats> totals;
    int64_t pass = 0;
    for (int rep = 0; rep < reps; ++rep) {
      std::vector<Setting> order = settings;
      if (rep % 2 == 1) std::reverse(order.begin(), order.end());  // ABBA: cancels drift
      const int64_t first_pass = pass;
      for (const Setting& set : order) {
        opt.dct_scaling = set.dct;
        opt.crop_decode = set.crop;
        pass = first_pass;
        int64_t images = 0;
        const auto t0 = std::chrono::steady_clock::now();
        const double c0 = process_cpu_seconds();
        double wall = 0;
        do {
          PassStats st = run_pass(files, ++pass, seed, opt, &ok);
          if (st.failures) throw UserError("a file that decoded in the warm-up pass failed later");
          images += st.images;
          for (const auto& [k, v] : st.scales) totals[set.name].scales[k] += v;
          totals[set.name].images += st.images;
          wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } while (wall < min_seconds);
        const double cpu = process_cpu_seconds() - c0;
        std::printf(
            "result impl=cnx variant=%s set=%s rep=%d images=%lld wall_s=%.4f cpu_s=%.4f img_per_s=%.2f "
            "img_per_cpu_s=%.2f\n",
            set.name.c_str(), label.c_str(), rep, static_cast<long long>(images), wall, cpu, images / wall,
            images / cpu);
        std::fflush(stdout);
      }
    }
    for (const Setting& set : settings) {
      std::printf("scales %s:", set.name.c_str());
      const PassStats& t = totals[set.name];
      for (const auto& [k, v] : t.scales) {
        std::printf(" %s=%.1f%%", k.c_str(), 100.0 * static_cast<double>(v) / static_cast<double>(t.images));
      }
      std::printf("\n");
    }
    return 0;
  });
}
