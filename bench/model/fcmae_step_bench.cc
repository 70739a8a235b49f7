// cnx-fcmae-step-bench: images per second of one FCMAE training step
// (forward, loss, backward, AdamW) on one device, as a plain program (no
// Google Benchmark: the GPU machine has none). scripts/gpu_check.sh runs it
// for each configuration next to the dense-masked timm baseline of
// scripts/gpu_bench_timm.py, and compares them as ratios.
//
//   cnx-fcmae-step-bench [--device cuda|cpu] [--variant atto] [--size 224]
//       [--batch 64] [--mask 0.6] [--encoder sparse|dense_masked]
//       [--kernels auto|generic] [--precision fp32|bf16] [--warmup 3]
//       [--steps 10] [--max-seconds 30] [--threads N] [--ceiling on|off]
//       [--profile-steps 2] [--gemm cnx,onednn,blas]
//
// --gemm: the GEMM path(s) of the blocks' pointwise Linears
// (model/onednn_matmul.h): a comma list of auto, cnx (AVX-512 CPUs), blas,
// onednn (the GELU backward as CNX_ONEDNN_GELU says), onednn-keep,
// onednn-recompute. With more
// than one, every path gets its warm-up steps, then the timed steps
// alternate between them (step 1 on the first path, step 2 on the second,
// ...), so that all see the same machine load; one JSON object per path,
// each with "vs_first" / "vs_first_cpu": its img/s over the first path's
// (wall, per CPU-second). Default: the process's setting (CNX_GEMM).
//
// Prints one JSON object on stdout. Exit 0; 1 with {"error": ...} in the
// object when the configuration fails (e.g. a dtype the kernels reject);
// 2 for bad arguments.
//
// Utilization: the step's FLOPs are counted analytically
// (model::fcmae_step_flops: 6 x the forward's multiply-adds of convs and
// linears, the encoder at visible sites only, the decoder dense; atto at 224,
// mask 0.6: 2.41 GFLOP per image). The GEMM ceiling is measured in the same
// run at the same thread count and dtype: the faster of a square 2048^3 matmul
// and one the shape of the step's largest GEMM (the decoder's first Linear,
// batch*L x D times D x 4D), best of several repetitions, once before and
// once after the timed steps (the higher is the ceiling; both are printed).
// "ceiling_share" = achieved / ceiling, achieved from the median step time.
//
// A ceiling that cannot hide a fallback (CPU): beside the measured ceiling the
// object carries the CPU's theoretical fp32 peak for the threads used
// (common/cpu_features.h: cores x nominal clock x FLOP/cycle of its vector
// units; "peak_assumption" says where each factor came from), a measured FMA
// rate of the same cores (registers only, no BLAS: what the cores deliver
// under the current load), the shares of both, the BLAS library and kernel
// set ("blas", "blas_core"), and "ceiling_warning" when the ceiling (the
// better of wall and per-CPU-second, below) is under half the peak (also on
// stderr), naming the likely cause. On a machine
// shared with other jobs wall time mostly measures the neighbours:
// "gflop_per_cpu_s" / "ceiling_gflop_per_cpu_s" are the step's and the
// ceiling's FLOPs per CPU-second of this process (divided by the threads),
// "ceiling_share_cpu" their ratio and "share_of_peak_cpu" the step's
// against the peak (exact at 1 thread; at more threads idle waits are not
// counted, so they overstate parallel efficiency).
//
// Breakdown: with --profile-steps K > 0, K more steps run under LibTorch's
// RecordFunction (bench/model/op_profile.h) and two tables go to stderr: per
// top-level op (forward and backward apart) and per GEMM/conv input shape,
// each with time, share, FLOPs and GFLOP/s. The profiled steps are not part
// of the timing.
//
// --threads N sets LibTorch's intra-op threads (default: leave as is).
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "bench/model/op_profile.h"
#include "common/blas_info.h"
#include "common/cpu_features.h"
#include "common/torch_compat.h"
#include "model/complexity.h"
#include "model/fcmae.h"
#include "model/onednn_matmul.h"
#include "sparse_ops/backend.h"
#ifdef CNX_BENCH_WORKER_ADAMW
#include "worker/optimizer.h"
#endif

using cnx::bench::median;
using cnx::bench::process_cpu_seconds;

namespace {

// bf16 autocast for `device` on or off.
void set_bf16_autocast(at::DeviceType device, bool on) {
  cnx::compat::set_autocast(device, on, at::kBFloat16);
  if (!on) at::autocast::clear_cache();
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) >= 0x20) {
      out += c;
    }
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best GFLOP/s of a (m x k) @ (k x n) matmul over `reps` timed calls; with
// `per_cpu_s`, also the best GFLOP per CPU-second x threads (what the call
// reaches while it runs: steadier than wall time on a shared machine).
double matmul_gflops(int64_t m, int64_t k, int64_t n, const torch::TensorOptions& opts, int reps,
                     const std::function<void()>& sync, double* per_cpu_s = nullptr) {
  auto a = torch::randn({m, k}, opts), b = torch::randn({k, n}, opts);
  auto c = torch::mm(a, b);
  sync();
  double best = 1e30, best_cpu = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = process_cpu_seconds();
    torch::mm_out(c, a, b);
    sync();
    best = std::min(best, seconds_since(t0));
    best_cpu = std::min(best_cpu, (process_cpu_seconds() - c0) / at::get_num_threads());
  }
  const double flop = 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n);
  if (per_cpu_s) *per_cpu_s = std::max(*per_cpu_s, flop / best_cpu * 1e-9);
  return flop / best * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-fcmae-step-bench", argc, argv);
  std::map<std::string, std::string> a = {
      {"device", "cuda"},    {"variant", "atto"}, {"size", "224"},       {"batch", "64"},        {"mask", "0.6"},
      {"encoder", "sparse"}, {"kernels", "auto"}, {"precision", "fp32"}, {"warmup", "3"},        {"steps", "10"},
      {"max-seconds", "30"}, {"threads", "0"},    {"ceiling", "on"},     {"profile-steps", "2"}, {"gemm", ""}};
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc || !a.count(k.substr(2))) {
      std::fprintf(stderr, "cnx-fcmae-step-bench: unknown or incomplete argument '%s' (see the file header)\n",
                   k.c_str());
      return 2;
    }
    a[k.substr(2)] = argv[++i];
  }
  {
    std::istringstream items(a["gemm"]);
    for (std::string item; std::getline(items, item, ',');) {
      if (item.empty() || item == "onednn-keep" || item == "onednn-recompute") continue;
      try {
        cnx::model::parse_gemm_path(item, "--gemm");
      } catch (const std::exception& e) {
        std::fprintf(stderr, "cnx-fcmae-step-bench: %s (or onednn-keep, onednn-recompute)\n", e.what());
        return 2;
      }
    }
  }
  std::ostringstream head;
  head << "{\"impl\": \"cnx-" << a["encoder"] << "-" << a["kernels"] << "\", \"variant\": \"" << a["variant"]
       << "\", \"device\": \"" << a["device"] << "\", \"precision\": \"" << a["precision"]
       << "\", \"batch\": " << a["batch"] << ", \"size\": " << a["size"] << ", \"mask\": " << a["mask"];
  try {
    const int threads = std::stoi(a["threads"]);
    if (threads > 0) at::set_num_threads(threads);
    head << ", \"threads\": " << at::get_num_threads();
    const torch::Device device(a["device"]);
    const int64_t batch = std::stoll(a["batch"]), size = std::stoll(a["size"]);
    const int warmup = std::stoi(a["warmup"]), steps = std::stoi(a["steps"]);
    const double max_seconds = std::stod(a["max-seconds"]);
    const bool bf16 = a["precision"] == "bf16";
    if (!bf16 && a["precision"] != "fp32") throw std::invalid_argument("--precision: expected fp32 or bf16");
    cnx::sparse_ops::set_kernel_mode(cnx::sparse_ops::parse_kernel_mode(a["kernels"], "--kernels"));
    std::istringstream gemm_list(a["gemm"]);

    torch::manual_seed(0);
    auto options = cnx::model::fcmae_options(a["variant"]);
    const double mask_ratio = std::stod(a["mask"]);
    options.encoder_type = a["encoder"];
    cnx::model::Fcmae model(options);
    model->to(device);
    // The worker's optimizer where it is built (what training runs: the
    // reference's decay groups, betas (0.9, 0.95), weight decay 0.05).
#ifdef CNX_BENCH_WORKER_ADAMW
    cnx::worker::NamedTensors named;
    for (const auto& kv : model->named_parameters()) named.emplace_back(kv.key(), kv.value());
    cnx::worker::AdamW opt(named, cnx::worker::AdamWOptions{});
    auto adamw_step = [&] { opt.step(1.5e-4); };
#else
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1.5e-4).betas({0.9, 0.95}));
    auto adamw_step = [&] { opt.step(); };
#endif
    const auto images = torch::randn({batch, 3, size, size}).to(device);
    const auto mask = cnx::model::generate_mask(batch, size / 32, size / 32, mask_ratio, 1).to(device);

    const int64_t patches = (size / 32) * (size / 32);
    const auto macs = cnx::model::fcmae_forward_macs(options.encoder, options.decoder_dim, options.decoder_depth, size,
                                                     size, cnx::model::num_visible(patches, mask_ratio));
    const double step_flops = cnx::model::fcmae_step_flops(macs, batch);

    double loss = 0.0;
    auto run_step = [&] {
      {
        RECORD_USER_SCOPE("optimizer.zero_grad");
        model->zero_grad();
      }
      if (bf16) set_bf16_autocast(device.type(), true);
      auto out = model->forward(images, mask);
      if (bf16) set_bf16_autocast(device.type(), false);
      out.loss.backward();
      {
        RECORD_USER_SCOPE("optimizer.adamw_step");
        adamw_step();
      }
      loss = out.loss.item<double>();  // also waits for the step
    };
    std::function<void()> sync = [&] {
      if (device.is_cuda()) torch::cuda::synchronize();
    };
    // The ceiling: a square GEMM and the step's largest GEMM shape.
    const auto mm_opts = torch::TensorOptions().device(device).dtype(bf16 ? torch::kBFloat16 : torch::kFloat);
    double ceiling_cpu = 0.0;  // GFLOP per CPU-second x threads
    auto ceiling = [&] {
      const int64_t d = options.decoder_dim;
      return std::max(matmul_gflops(2048, 2048, 2048, mm_opts, 5, sync, &ceiling_cpu),
                      matmul_gflops(batch * patches, d, 4 * d, mm_opts, 10, sync, &ceiling_cpu));
    };
    const bool with_ceiling = a["ceiling"] == "on";
    const double ceiling_before = with_ceiling ? ceiling() : 0.0;

    // The GEMM paths to time (--gemm), each with its warm-up steps.
    struct PathRun {
      std::string name;
      cnx::model::GemmPath path = cnx::model::GemmPath::kAuto;
      cnx::model::GeluBackward gelu = cnx::model::GeluBackward::kKeep;
      std::vector<double> wall, cpu;
      double loss = 0.0;
    };
    std::vector<PathRun> paths;
    for (std::string item; std::getline(gemm_list, item, ',');) {
      if (item.empty()) continue;
      PathRun r;
      r.name = item;
      r.gelu = cnx::model::gelu_backward_mode();
      std::string base = item;
      if (item == "onednn-keep" || item == "onednn-recompute") {
        base = "onednn";
        r.gelu = item == "onednn-keep" ? cnx::model::GeluBackward::kKeep : cnx::model::GeluBackward::kRecompute;
      }
      r.path = cnx::model::parse_gemm_path(base, "--gemm");
      paths.push_back(r);
    }
    if (paths.empty()) {
      PathRun r;
      r.path = cnx::model::gemm_path();
      r.gelu = cnx::model::gelu_backward_mode();
      r.name = cnx::model::gemm_path_name(r.path);
      paths.push_back(r);
    }
    auto use = [&](const PathRun& r) {
      cnx::model::set_gemm_path(r.path);
      cnx::model::set_gelu_backward_mode(r.gelu);
    };
    for (auto& r : paths) {
      use(r);
      std::fprintf(stderr, "cnx-fcmae-step-bench: --gemm %s: %s\n", r.name.c_str(),
                   cnx::model::describe_gemm_path().c_str());
      for (int i = 0; i < warmup; ++i) run_step();
    }
    sync();
    const auto start = std::chrono::steady_clock::now();
    int done = 0;
    double elapsed = 0.0;
    while (done < steps) {
      for (auto& r : paths) {
        use(r);
        const auto t0 = std::chrono::steady_clock::now();
        const double c0 = process_cpu_seconds();
        run_step();
        sync();
        r.wall.push_back(seconds_since(t0));
        r.cpu.push_back((process_cpu_seconds() - c0) / at::get_num_threads());
        r.loss = loss;
      }
      ++done;
      elapsed = seconds_since(start);
      if (elapsed > max_seconds) break;
    }
    const double ceiling_after = with_ceiling ? ceiling() : 0.0;
    const double ceiling_gflops = std::max(ceiling_before, ceiling_after);

    // The CPU's theoretical and measured-FMA peaks for the threads used.
    double peak_gflops = 0.0, fma = 0.0;
    std::string peak_tail;
    if (device.is_cpu()) {
      const int cores =
          std::max(1, std::min(at::get_num_threads(), static_cast<int>(std::thread::hardware_concurrency())));
      const auto cpu = cnx::cpu::detect_cpu();
      const auto peak = cnx::cpu::fp32_peak(cpu, cores);
      peak_gflops = peak.gflops;
      // Best of 5 short FMA runs, like the ceiling's best of several calls.
      for (int r = 0; with_ceiling && !bf16 && r < 5; ++r)
        fma = std::max(fma, cnx::cpu::measure_fma_gflops(cores, 0.08));
      // The verdict uses the better of the wall and the per-CPU-second
      // ceiling: fallback kernels are slow either way, a busy machine only in
      // wall time.
      const std::string warning = with_ceiling && !bf16
                                      ? cnx::cpu::judge_ceiling(std::max(ceiling_gflops, ceiling_cpu), peak.gflops, fma)
                                      : std::string();
      if (!warning.empty()) std::fprintf(stderr, "cnx-fcmae-step-bench: WARNING: %s\n", warning.c_str());
      std::ostringstream t;
      t << ", \"peak_assumption\": \"" << json_escape(peak.assumption) << "\", \"cpu\": \"" << json_escape(cpu.brand)
        << " (family " << cpu.family << " model " << cpu.model << ", " << cnx::cpu::describe_simd(cpu)
        << ")\", \"ceiling_warning\": \"" << json_escape(warning) << "\"";
      peak_tail = t.str();
    }
    const auto blas = cnx::blas::query_blas();
    peak_tail += ", \"blas\": \"" + json_escape(blas.library + " " + blas.version) + "\", \"blas_core\": \"" +
                 json_escape(blas.core) + "\"";

    const int profile_steps = std::stoi(a["profile-steps"]);
    for (const auto& r : paths) {
      if (profile_steps <= 0) break;
      use(r);
      cnx::bench::OpProfile profile;
      profile.start();
      for (int i = 0; i < profile_steps; ++i) run_step();
      sync();
      profile.stop();
      std::cerr << "per-op breakdown (" << a["variant"] << ", batch " << batch << ", " << at::get_num_threads()
                << " thread(s), GEMM path " << r.name << ", " << profile_steps
                << " profiled steps; the unprofiled median step is " << 1e3 * median(r.wall) << " ms; "
                << step_flops * 1e-9 << " GFLOP/step analytic)\n"
                << cnx::bench::format_breakdown(profile.rows(), profile_steps, "op (top level)") << "\n"
                << cnx::bench::format_breakdown(profile.flop_rows(), profile_steps, "FLOP-counted op [input shapes]",
                                                0.0);
    }
    auto share = [](double x, double of) { return of > 0 ? x / of : 0.0; };
    const double first_wall = median(paths.front().wall), first_cpu = median(paths.front().cpu);
    for (const auto& r : paths) {
      const double med = median(r.wall), med_cpu = median(r.cpu);
      const double achieved = step_flops / med * 1e-9;
      const double achieved_cpu = step_flops / med_cpu * 1e-9;
      const double total = std::accumulate(r.wall.begin(), r.wall.end(), 0.0);
      use(r);
      const std::string effective = cnx::model::gemm_path_name(cnx::model::effective_gemm_path());
      std::ostringstream peak_json;
      if (device.is_cpu()) {
        char buf[768];
        std::snprintf(buf, sizeof buf,
                      ", \"gflop_per_cpu_s\": %.2f, \"ceiling_gflop_per_cpu_s\": %.2f, \"ceiling_share_cpu\": %.4f, "
                      "\"share_of_peak_cpu\": %.4f, \"peak_gflop_per_s\": %.1f, \"fma_gflop_per_s\": %.1f, "
                      "\"ceiling_share_of_peak\": %.4f, "
                      "\"ceiling_share_of_fma\": %.4f, \"share_of_peak\": %.4f, \"share_of_fma\": %.4f",
                      achieved_cpu, ceiling_cpu, share(achieved_cpu, ceiling_cpu), share(achieved_cpu, peak_gflops),
                      peak_gflops, fma, share(ceiling_gflops, peak_gflops), share(ceiling_gflops, fma),
                      share(achieved, peak_gflops), share(achieved, fma));
        peak_json << buf;
      }
      std::printf(
          "%s, \"gemm\": \"%s\", \"gemm_path\": \"%s\", \"steps\": %zu, \"seconds\": %.4f, \"ms_per_step\": %.3f, "
          "\"ms_per_step_median\": %.3f, \"img_per_s\": %.2f, \"img_per_s_median\": %.2f, "
          "\"img_per_cpu_s_median\": %.2f, \"vs_first\": %.4f, \"vs_first_cpu\": %.4f, \"loss\": %.6f, "
          "\"gflop_per_img\": %.4f, \"gflop_per_s\": %.2f, \"ceiling_gflop_per_s\": %.2f, \"ceiling_before\": %.2f, "
          "\"ceiling_after\": %.2f, \"ceiling_share\": %.4f%s%s}\n",
          head.str().c_str(), r.name.c_str(), effective.c_str(), r.wall.size(), total, 1000.0 * total / r.wall.size(),
          1000.0 * med, static_cast<double>(batch) * r.wall.size() / total, static_cast<double>(batch) / med,
          static_cast<double>(batch) / med_cpu, first_wall / med, first_cpu / med_cpu, r.loss,
          step_flops / static_cast<double>(batch) * 1e-9, achieved, ceiling_gflops, ceiling_before, ceiling_after,
          share(achieved, ceiling_gflops), peak_json.str().c_str(), peak_tail.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (msg.size() > 600) msg = msg.substr(0, 600) + "...";
    std::printf("%s, \"error\": \"%s\"}\n", head.str().c_str(), json_escape(msg).c_str());
    return 1;
  }
}
