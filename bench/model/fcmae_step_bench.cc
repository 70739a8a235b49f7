// cnx-fcmae-step-bench: images per second of one FCMAE training step
// (forward, loss, backward, AdamW) on one device, as a plain program (no
// Google Benchmark: the GPU machine has none). scripts/gpu_check.sh runs it
// for each configuration next to the dense-masked timm baseline of
// scripts/gpu_bench_timm.py, and compares them as ratios.
//
//   cnx-fcmae-step-bench [--device cuda|cpu] [--variant atto] [--size 224]
//       [--batch 64] [--mask 0.6] [--encoder sparse|dense_masked]
//       [--kernels auto|generic] [--precision fp32|bf16] [--warmup 3]
//       [--steps 10] [--max-seconds 30]
//
// Prints one JSON object on stdout. Exit 0; 1 with {"error": ...} in the
// object when the configuration fails (e.g. a dtype the kernels reject);
// 2 for bad arguments.
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

#include "common/torch_compat.h"
#include "model/fcmae.h"
#include "sparse_ops/backend.h"

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

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"device", "cuda"},  {"variant", "atto"},   {"size", "224"},
                                          {"batch", "64"},     {"mask", "0.6"},       {"encoder", "sparse"},
                                          {"kernels", "auto"}, {"precision", "fp32"}, {"warmup", "3"},
                                          {"steps", "10"},     {"max-seconds", "30"}};
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc || !a.count(k.substr(2))) {
      std::fprintf(stderr, "cnx-fcmae-step-bench: unknown or incomplete argument '%s' (see the file header)\n",
                   k.c_str());
      return 2;
    }
    a[k.substr(2)] = argv[++i];
  }
  std::ostringstream head;
  head << "{\"impl\": \"cnx-" << a["encoder"] << "-" << a["kernels"] << "\", \"variant\": \"" << a["variant"]
       << "\", \"device\": \"" << a["device"] << "\", \"precision\": \"" << a["precision"]
       << "\", \"batch\": " << a["batch"] << ", \"size\": " << a["size"] << ", \"mask\": " << a["mask"];
  try {
    const torch::Device device(a["device"]);
    const int64_t batch = std::stoll(a["batch"]), size = std::stoll(a["size"]);
    const int warmup = std::stoi(a["warmup"]), steps = std::stoi(a["steps"]);
    const double max_seconds = std::stod(a["max-seconds"]);
    const bool bf16 = a["precision"] == "bf16";
    if (!bf16 && a["precision"] != "fp32") throw std::invalid_argument("--precision: expected fp32 or bf16");
    cnx::sparse_ops::set_kernel_mode(cnx::sparse_ops::parse_kernel_mode(a["kernels"], "--kernels"));

    torch::manual_seed(0);
    auto options = cnx::model::fcmae_options(a["variant"]);
    const double mask_ratio = std::stod(a["mask"]);
    options.encoder_type = a["encoder"];
    cnx::model::Fcmae model(options);
    model->to(device);
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1.5e-4).betas({0.9, 0.95}));
    const auto images = torch::randn({batch, 3, size, size}).to(device);
    const auto mask = cnx::model::generate_mask(batch, size / 32, size / 32, mask_ratio, 1).to(device);

    double loss = 0.0;
    auto run_step = [&] {
      opt.zero_grad();
      if (bf16) set_bf16_autocast(device.type(), true);
      auto out = model->forward(images, mask);
      if (bf16) set_bf16_autocast(device.type(), false);
      out.loss.backward();
      opt.step();
      loss = out.loss.item<double>();  // also waits for the step
    };
    auto sync = [&] {
      if (device.is_cuda()) torch::cuda::synchronize();
    };
    for (int i = 0; i < warmup; ++i) run_step();
    sync();
    const auto start = std::chrono::steady_clock::now();
    int done = 0;
    double elapsed = 0.0;
    while (done < steps) {
      run_step();
      ++done;
      sync();
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (elapsed > max_seconds) break;
    }
    std::printf("%s, \"steps\": %d, \"seconds\": %.4f, \"ms_per_step\": %.3f, \"img_per_s\": %.2f, \"loss\": %.6f}\n",
                head.str().c_str(), done, elapsed, 1000.0 * elapsed / done, static_cast<double>(batch) * done / elapsed,
                loss);
    return 0;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (msg.size() > 600) msg = msg.substr(0, 600) + "...";
    std::printf("%s, \"error\": \"%s\"}\n", head.str().c_str(), json_escape(msg).c_str());
    return 1;
  }
}
