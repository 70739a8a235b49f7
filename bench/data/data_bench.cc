// Decode + RandomResizedCrop(224) + flip + normalise throughput on 2 threads
// over synthetic photo-like JPEGs (500x375 as in ImageNet; 1000x750 for
// larger photos), with DCT-domain scaling on vs off (full-size decode), in
// the same run. Two levels:
//   BM_Transform/<dct>/<width>: decode_and_transform on 2 threads
//   BM_Pipeline/<dct>/<width>:  the full Pipeline (tar shards, shuffle
//                               buffer, 2 decode threads, batch 32)
// After the runs the program prints the DCT/full speedup of each pair (at
// 500x375 a crop rarely allows one of the fast DCT scales, 1/2 and below,
// data/image_codec.h, so that pair runs nearly the same code).
// Real JPEGs against torchvision + PIL: cnx-transform-bench, README.md.
// Run: build-*/bench/data/data_bench [--benchmark_min_time=2]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>

#include "bench/bench_util.h"
#include "common/rng.h"
#include "data/image_codec.h"
#include "data/pipeline.h"
#include "data/shard_index.h"
#include "data/tar_io.h"
#include "data/transform.h"

using cnx::bench::median;
using cnx::bench::process_cpu_seconds;

namespace fs = std::filesystem;
using namespace cnx;
using namespace cnx::data;

namespace {

constexpr int kImages = 48;

// Photo-like content: smooth illumination, a few soft-edged objects,
// mid-frequency texture and sensor noise, so JPEG sizes resemble photos
// (~40-80 KB at 500x375, quality 90).
Image synth_photo(int w, int h, uint64_t seed) {
  SplitMix64 rng(seed);
  Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.pixels.resize(static_cast<size_t>(w) * h * 3);
  struct Blob {
    double x, y, r, c[3];
  };
  Blob blobs[6];
  for (auto& b : blobs) {
    b = {rng.uniform(0, w),
         rng.uniform(0, h),
         rng.uniform(0.05, 0.3) * w,
         {rng.uniform(0, 255), rng.uniform(0, 255), rng.uniform(0, 255)}};
  }
  const double base[3] = {rng.uniform(60, 200), rng.uniform(60, 200), rng.uniform(60, 200)};
  const double tf = rng.uniform(0.05, 0.2);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      double v[3];
      const double light = 0.6 + 0.4 * std::sin(3.0 * x / w + 2.0 * y / h);
      for (int c = 0; c < 3; ++c) v[c] = base[c] * light;
      for (const auto& b : blobs) {
        const double d = std::sqrt((x - b.x) * (x - b.x) + (y - b.y) * (y - b.y));
        const double a = 1.0 / (1.0 + std::exp((d - b.r) / 2.0));
        for (int c = 0; c < 3; ++c) v[c] = v[c] * (1 - a) + b.c[c] * a;
      }
      const double tex = 12 * std::sin(tf * x * 6.28) * std::sin(tf * 1.3 * y * 6.28);
      for (int c = 0; c < 3; ++c) {
        const double p = v[c] + tex + rng.uniform(-8, 8);
        im.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>(std::clamp(p, 0.0, 255.0));
      }
    }
  }
  return im;
}

struct Corpus {
  std::vector<std::vector<uint8_t>> jpegs;
  std::string index_path;
};

// Built once per width; shards go to a temp folder removed at exit.
const Corpus& corpus(int width) {
  static std::map<int, Corpus> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  auto it = cache.find(width);
  if (it != cache.end()) return it->second;
  Corpus c;
  const int height = width * 3 / 4;
  size_t bytes = 0;
  for (int i = 0; i < kImages; ++i) {
    c.jpegs.push_back(encode_jpeg(synth_photo(width, height, 1000 + i), 90));
    bytes += c.jpegs.back().size();
  }
  std::fprintf(stderr, "corpus %dx%d: %d JPEGs, mean %.1f KB\n", width, height, kImages, bytes / 1024.0 / kImages);
  const fs::path dir = fs::temp_directory_path() / ("cnx_data_bench_" + std::to_string(width));
  fs::remove_all(dir);
  fs::create_directories(dir);
  ShardIndex idx;
  idx.dataset = "bench";
  for (int s = 0; s < 2; ++s) {
    const std::string name = "bench-" + std::to_string(s) + ".tar";
    {
      TarWriter w((dir / name).string());
      for (int i = s * kImages / 2; i < (s + 1) * kImages / 2; ++i) {
        char key[32];
        std::snprintf(key, sizeof(key), "%06d.jpg", i);
        w.add(key, c.jpegs[i].data(), c.jpegs[i].size());
      }
      w.close();
    }
    idx.shards.push_back(
        {name, kImages / 2, static_cast<int64_t>(fs::file_size(dir / name)), sha256_file((dir / name).string())});
  }
  idx.total_samples = kImages;
  c.index_path = (dir / "index.json").string();
  save_index(idx, c.index_path);
  return cache.emplace(width, std::move(c)).first->second;
}

// Per benchmark name, one value per run (repetition): images/s (wall) and
// process CPU ms per image. The summary prints medians.
std::map<std::string, std::vector<double>> g_rate;
std::map<std::string, std::vector<double>> g_cpu_ms;

void record(benchmark::State& state, const std::string& name, int64_t images, double seconds, double cpu_s) {
  state.counters["cpu_ms_per_img"] = 1e3 * cpu_s / static_cast<double>(images);
  g_rate[name].push_back(images / seconds);
  g_cpu_ms[name].push_back(1e3 * cpu_s / static_cast<double>(images));
}

// Registered with Threads(2): each of the two benchmark threads (kept
// for the whole run) transforms every other image per iteration.
void BM_Transform(benchmark::State& state) {
  const bool dct = state.range(0) != 0;
  const Corpus& c = corpus(static_cast<int>(state.range(1)));
  TransformOptions opt;
  opt.dct_scaling = dct;
  int64_t images = 0, epoch = 0, failures = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = process_cpu_seconds();
  for (auto _ : state) {
    const int64_t e = epoch++ % 4;  // same crops for both settings: epoch cycles over 4 values
    for (int i = state.thread_index(); i < kImages; i += state.threads()) {
      auto r = decode_and_transform(c.jpegs[i].data(), c.jpegs[i].size(), ImageFormat::kJpeg,
                                    sample_rng(0, e, std::to_string(i)), opt);
      if (r.status != DecodeStatus::kOk) ++failures;
      benchmark::DoNotOptimize(r.chw.data());
      ++images;
    }
  }
  if (failures) state.SkipWithError("decode failures");
  state.SetItemsProcessed(images);
  if (state.thread_index() == 0) {
    // Thread 0 speaks for both: wall time is shared, CPU time is the process's.
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    record(state, std::string("transform/") + (dct ? "dct" : "full") + "/" + std::to_string(state.range(1)),
           images * state.threads(), wall, process_cpu_seconds() - c0);
  }
}

void BM_Pipeline(benchmark::State& state) {
  const bool dct = state.range(0) != 0;
  const Corpus& c = corpus(static_cast<int>(state.range(1)));
  DataOptions o;
  o.index_path = c.index_path;
  o.batch_size = 16;
  o.num_threads = 2;
  o.shuffle_buffer = 16;
  o.dct_scaling = dct;
  o.drop_last = false;
  Pipeline p(o);
  int64_t images = 0, epoch = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = process_cpu_seconds();
  for (auto _ : state) {
    p.start_epoch(epoch++ % 4, {0, 1});
    while (auto b = p.next()) {
      images += b->labels.size(0);
      benchmark::DoNotOptimize(b->images.data_ptr());
    }
  }
  if (p.counters().skipped_total() > 0) state.SkipWithError("samples skipped");
  state.SetItemsProcessed(images);
  record(state, std::string("pipeline/") + (dct ? "dct" : "full") + "/" + std::to_string(state.range(1)), images,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), process_cpu_seconds() - c0);
}

BENCHMARK(BM_Transform)
    ->Threads(2)
    ->ArgsProduct({{0, 1}, {500, 1000}})
    ->ArgNames({"dct", "width"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pipeline)
    ->ArgsProduct({{0, 1}, {500, 1000}})
    ->ArgNames({"dct", "width"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::printf("\nDCT-domain scaling speedup (medians over runs; DCT scaling vs full-size decode, same run):\n");
  for (const char* level : {"transform", "pipeline"}) {
    for (int w : {500, 1000}) {
      const std::string full = std::string(level) + "/full/" + std::to_string(w);
      const std::string dct = std::string(level) + "/dct/" + std::to_string(w);
      if (g_rate.count(full) && g_rate.count(dct)) {
        std::printf(
            "  %-9s %4dx%-4d  wall: full %7.1f img/s, dct %7.1f img/s, speedup %.2fx;"
            "  cpu: full %6.2f ms/img, dct %6.2f ms/img, speedup %.2fx\n",
            level, w, w * 3 / 4, median(g_rate[full]), median(g_rate[dct]), median(g_rate[dct]) / median(g_rate[full]),
            median(g_cpu_ms[full]), median(g_cpu_ms[dct]), median(g_cpu_ms[full]) / median(g_cpu_ms[dct]));
      }
    }
  }
  for (int w : {500, 1000}) fs::remove_all(fs::temp_directory_path() / ("cnx_data_bench_" + std::to_string(w)));
  return 0;
}
