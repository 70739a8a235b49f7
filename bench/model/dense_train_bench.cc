// cnx-dense-train-bench: images per second of one dense ConvNeXt V2 training
// step (forward, cross-entropy, backward, AdamW) through each kernel set of
// model/dense_kernels.h, measured in one run and compared as ratios to
// LibTorch on NCHW input. A plain program (no Google Benchmark).
//
//   cnx-dense-train-bench [--variant atto] [--configs 224x32,64x64]
//       [--threads 1,2] [--kernels libtorch,libtorch-cl,cnx] [--drop-path 0.1]
//       [--reps 3] [--warmup 1] [--mode train|infer] [--malloc keep|system]
//
// --configs: SIZExBATCH entries (square images; classes 1000 at sizes >= 224,
// 10 below, as ImageNet / Fashion-MNIST fine-tuning). Per configuration and
// thread count, the kernel sets take turns, one step each, `reps` rounds after
// `warmup` rounds; a kernel set's figure is the median of its rounds. The
// first kernel set listed is the ratios' baseline. Also printed: the medians
// of the forward (with the loss), backward and optimizer parts, and of the
// process CPU time per step with its ratio (cpu_ratio: the baseline's CPU
// time / this one's; with 1 thread on a busy machine the steadier figure). --mode infer times the
// eval-mode forward without gradients (feature extraction / evaluation).
// --malloc keep (the default, as cnx-finetune and cnx-eval run) applies
// model/host_memory.h's policy; system leaves glibc's defaults.
// Prints a table on stdout; exit 2 on bad arguments.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/blas_info.h"
#include "model/convnextv2.h"
#include "model/dense_kernels.h"
#include "model/host_memory.h"
#include "model/onednn_matmul.h"

using cnx::bench::median;
using cnx::bench::process_cpu_seconds;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-dense-train-bench", argc, argv);
  cnx::model::log_gemm_path("cnx-dense-train-bench");
  std::map<std::string, std::string> a = {{"variant", "atto"},  {"configs", "224x32,64x64"},
                                          {"threads", "1,2"},   {"kernels", "libtorch,libtorch-cl,cnx"},
                                          {"drop-path", "0.1"}, {"reps", "3"},
                                          {"warmup", "1"},      {"mode", "train"},
                                          {"malloc", "keep"}};
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc || !a.count(k.substr(2))) {
      std::fprintf(stderr, "cnx-dense-train-bench: unknown or incomplete argument '%s' (see the file header)\n",
                   k.c_str());
      return 2;
    }
    a[k.substr(2)] = argv[++i];
  }
  using cnx::model::DenseKernels;
  std::vector<DenseKernels> kernels;
  std::vector<int> threads;
  std::vector<std::pair<int64_t, int64_t>> configs;
  int reps = 0, warmup = 0;
  bool train = true;
  double drop_path = 0;
  try {
    for (const auto& k : split(a["kernels"], ',')) kernels.push_back(cnx::model::parse_dense_kernels(k, "--kernels"));
    for (const auto& t : split(a["threads"], ',')) threads.push_back(std::stoi(t));
    for (const auto& c : split(a["configs"], ',')) {
      const auto parts = split(c, 'x');
      if (parts.size() != 2) throw std::invalid_argument("--configs: expected SIZExBATCH, got " + c);
      configs.emplace_back(std::stoll(parts[0]), std::stoll(parts[1]));
    }
    reps = std::stoi(a["reps"]);
    warmup = std::stoi(a["warmup"]);
    drop_path = std::stod(a["drop-path"]);
    if (a["mode"] != "train" && a["mode"] != "infer") throw std::invalid_argument("--mode: expected train or infer");
    train = a["mode"] == "train";
    if (a["malloc"] != "keep" && a["malloc"] != "system") {
      throw std::invalid_argument("--malloc: expected keep or system");
    }
    if (kernels.empty() || threads.empty() || configs.empty() || reps < 1 || warmup < 0) {
      throw std::invalid_argument("empty list or reps < 1");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnx-dense-train-bench: %s\n", e.what());
    return 2;
  }

  const bool keep = a["malloc"] == "keep" && cnx::model::keep_freed_tensor_memory();
  std::printf("# %s step, ConvNeXt V2-%s, drop path %.2f, %d rounds (median), %d warmup, malloc %s\n",
              train ? "training (fwd + CE + bwd + AdamW)" : "inference (eval fwd, no grad)", a["variant"].c_str(),
              train ? drop_path : 0.0, reps, warmup, keep ? "keep" : "system");
  std::printf("%-5s %-6s %-8s %-12s %10s %10s %8s %9s %9s %8s %9s %9s\n", "size", "batch", "threads", "kernels",
              "ms/step", "img/s", "ratio", "fwd_ms", "bwd_ms", "opt_ms", "cpu_ms", "cpu_ratio");
  for (const auto& [size, batch] : configs) {
    for (int t : threads) {
      at::set_num_threads(t);
      torch::manual_seed(0);
      auto opts = cnx::model::variant_options(a["variant"]);
      opts.num_classes = size >= 224 ? 1000 : 10;
      opts.drop_path_rate = train ? drop_path : 0.0;
      cnx::model::ConvNeXtV2 net(opts);
      torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-4).weight_decay(0.05));
      const auto images = torch::randn({batch, 3, size, size});
      const auto labels = torch::randint(0, opts.num_classes, {batch}, torch::kLong);
      if (train) {
        net->train();
      } else {
        net->eval();
      }
      using Clock = std::chrono::steady_clock;
      auto since = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
      // Seconds of: the whole step, forward + loss, backward, optimizer; the
      // process's CPU time of the step.
      auto step = [&](DenseKernels k) {
        std::array<double, 5> s{};
        const double c0 = process_cpu_seconds();
        const auto t0 = Clock::now();
        if (train) {
          opt.zero_grad();
          auto logits = cnx::model::dense_forward(*net, images, k);
          auto loss = torch::cross_entropy_loss(logits, labels);
          s[1] = since(t0);
          const auto t1 = Clock::now();
          loss.backward();
          s[2] = since(t1);
          const auto t2 = Clock::now();
          opt.step();
          s[3] = since(t2);
        } else {
          torch::NoGradGuard no_grad;
          auto logits = cnx::model::dense_forward(*net, images, k);
          (void)logits.sum().item<float>();
          s[1] = since(t0);
        }
        s[0] = since(t0);
        s[4] = process_cpu_seconds() - c0;
        return s;
      };
      std::vector<std::array<std::vector<double>, 5>> secs(kernels.size());
      for (int r = 0; r < warmup + reps; ++r) {
        for (size_t i = 0; i < kernels.size(); ++i) {
          const auto s = step(kernels[i]);
          for (size_t j = 0; j < s.size() && r >= warmup; ++j) secs[i][j].push_back(s[j]);
        }
      }
      const double base = median(secs[0][0]), base_cpu = median(secs[0][4]);
      for (size_t i = 0; i < kernels.size(); ++i) {
        const double m = median(secs[i][0]), cpu = median(secs[i][4]);
        std::printf("%-5lld %-6lld %-8d %-12s %10.1f %10.2f %7.2fx %9.1f %9.1f %8.1f %9.1f %8.2fx\n",
                    static_cast<long long>(size), static_cast<long long>(batch), t,
                    cnx::model::dense_kernels_name(kernels[i]), 1000.0 * m, static_cast<double>(batch) / m, base / m,
                    1000.0 * median(secs[i][1]), 1000.0 * median(secs[i][2]), 1000.0 * median(secs[i][3]), 1000.0 * cpu,
                    base_cpu / cpu);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
