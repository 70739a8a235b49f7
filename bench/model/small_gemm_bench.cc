// cnx-small-gemm-bench: the FCMAE step's pointwise-Linear GEMMs (stage 0:
// K or N = C = 40 for atto) through each GEMM library this build found,
// against OpenBLAS (through LibTorch, as the model calls it), in one run.
//
//   cnx-small-gemm-bench [--variant atto] [--batch 32] [--size 224]
//       [--mask 0.6] [--stages 0,1] [--threads 1] [--rounds 7] [--clock wall|cpu]
//
// Per stage s (rows M = batch x visible patches x cells per patch at stage s,
// C = the stage's width) the six GEMMs of a block's MLP, forward and
// backward:
//   fc1.fwd+gelu  gelu(X W1^T + b1)   (M x C)(C x 4C), GELU + bias fused where
//                                     the library allows (oneDNN post-op;
//                                     libxsmm: per 64-row block while hot)
//   fc2.fwd       H W2^T + b2         (M x 4C)(4C x C)
//   fc2.dgrad     dZ W2               (M x C)(C x 4C)
//   fc2.wgrad     dZ^T H              (C x M)(M x 4C)
//   fc1.dgrad     dY W1               (M x 4C)(4C x C)
//   fc1.wgrad     dY^T X              (4C x M)(M x C)
// Libraries: openblas (at::addmm/at::mm + at::gelu), cnx (the project's
// AVX-512 kernels, model/cnx_gemm.h, on AVX-512 CPUs), onednn-matmul (matmul
// primitive, strided memory descriptors, no reorders), onednn-sgemm
// (dnnl_sgemm), libxsmm (1.17 JIT kernels on 64-row blocks, threads over
// blocks with at::parallel_for; the weight gradients reduce per-thread
// partials), blis (bli_sgemm with row/column strides; loaded with dlopen
// RTLD_LOCAL so its BLAS symbols cannot replace OpenBLAS's in this process).
// Each library is optional (CMake defines CNX_HAVE_DNNL / CNX_HAVE_LIBXSMM /
// CNX_HAVE_BLIS when it finds one).
//
// Timing: rounds interleave the libraries (one call each per round), the
// median per library is reported, with GFLOP/s and the ratio to OpenBLAS.
// Every library's result is checked against OpenBLAS's (max abs difference
// relative to the largest |value|), printed as "err".
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/blas_info.h"
#include "common/cpu_features.h"
#include "model/cnx_gemm.h"
#include "model/options.h"

#ifdef CNX_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif
#ifdef CNX_HAVE_LIBXSMM
#include <libxsmm.h>
#endif

using cnx::bench::median;
using cnx::bench::process_cpu_seconds;

namespace {

using Tensor = torch::Tensor;

// Wall seconds, or (--clock cpu) this process's CPU seconds divided by the
// thread count: on a machine shared with other jobs the CPU time a call
// used is steadier than its wall time.
bool g_cpu_clock = false;
int g_threads = 1;
double now_seconds() {
  if (!g_cpu_clock) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  return process_cpu_seconds() / g_threads;
}

// The stage's tensors: activations X (M x C), hidden H (M x 4C), output
// gradients dZ (M x C) and dY (M x 4C), weights W1 (4C x C), W2 (C x 4C).
struct Stage {
  int64_t m, c;
  Tensor x, h, dz, dy, w1, b1, w2, b2;
};

Stage make_stage(int64_t m, int64_t c) {
  Stage s{m, c, {}, {}, {}, {}, {}, {}, {}, {}};
  s.x = torch::randn({m, c});
  s.h = torch::randn({m, 4 * c});
  s.dz = torch::randn({m, c});
  s.dy = torch::randn({m, 4 * c});
  s.w1 = torch::randn({4 * c, c}) * 0.1;
  s.b1 = torch::randn({4 * c}) * 0.1;
  s.w2 = torch::randn({c, 4 * c}) * 0.1;
  s.b2 = torch::randn({c}) * 0.1;
  return s;
}

// One library's six calls for a stage, each writing into `out[op]`.
using Impl = std::function<void(const Stage&, const std::string& op, Tensor& out)>;

const std::vector<std::string> kOps = {"fc1.fwd+gelu", "fc2.fwd", "fc2.dgrad", "fc2.wgrad", "fc1.dgrad", "fc1.wgrad"};

void openblas_impl(const Stage& s, const std::string& op, Tensor& out) {
  if (op == "fc1.fwd+gelu") {
    at::addmm_out(out, s.b1, s.x, s.w1.t());
    at::gelu_(out);
  } else if (op == "fc2.fwd") {
    at::addmm_out(out, s.b2, s.h, s.w2.t());
  } else if (op == "fc2.dgrad") {
    at::mm_out(out, s.dz, s.w2);
  } else if (op == "fc2.wgrad") {
    at::mm_out(out, s.dz.t(), s.h);
  } else if (op == "fc1.dgrad") {
    at::mm_out(out, s.dy, s.w1);
  } else {
    at::mm_out(out, s.dy.t(), s.x);
  }
}

std::vector<int64_t> out_shape(const Stage& s, const std::string& op) {
  const int64_t m = s.m, c = s.c;
  if (op == "fc1.fwd+gelu") return {m, 4 * c};
  if (op == "fc2.fwd") return {m, c};
  if (op == "fc2.dgrad") return {m, 4 * c};
  if (op == "fc2.wgrad") return {c, 4 * c};
  if (op == "fc1.dgrad") return {m, c};
  return {4 * c, c};
}
// FLOPs of op (2 x m x k x n).
double flops(const Stage& s, const std::string& op) {
  (void)op;
  const double m = s.m, c = s.c;
  return 2.0 * m * c * 4 * c;  // every one of the six is M x C x 4C
}

// Row-major GEMM description: C(m x n) = A(m x k) B(k x n) with element
// strides (row, col) for each, plus an optional bias over columns and GELU.
struct Gemm {
  int64_t m, n, k;
  const float* a;
  int64_t rsa, csa;
  const float* b;
  int64_t rsb, csb;
  float* c;
  int64_t rsc, csc;
  const float* bias = nullptr;
  bool gelu = false;
};

Gemm describe(const Stage& s, const std::string& op, Tensor& out) {
  auto p = [](const Tensor& t) { return t.data_ptr<float>(); };
  const int64_t m = s.m, c = s.c, c4 = 4 * c;
  float* o = out.data_ptr<float>();
  if (op == "fc1.fwd+gelu") return {m, c4, c, p(s.x), c, 1, p(s.w1), 1, c, o, c4, 1, p(s.b1), true};
  if (op == "fc2.fwd") return {m, c, c4, p(s.h), c4, 1, p(s.w2), 1, c4, o, c, 1, p(s.b2), false};
  if (op == "fc2.dgrad") return {m, c4, c, p(s.dz), c, 1, p(s.w2), c4, 1, o, c4, 1};
  if (op == "fc2.wgrad") return {c, c4, m, p(s.dz), 1, c, p(s.h), c4, 1, o, c4, 1};
  if (op == "fc1.dgrad") return {m, c, c4, p(s.dy), c4, 1, p(s.w1), c, 1, o, c, 1};
  return {c4, c, m, p(s.dy), 1, c4, p(s.x), c, 1, o, c, 1};
}

// The project's AVX-512 kernels (model/cnx_gemm.h), writing into `out`.
void cnx_impl(const Stage& s, const std::string& op, Tensor& out) {
  using namespace cnx::model;
  if (op == "fc1.fwd+gelu") {
    cnx_linear_forward(s.x, s.w1, s.b1, true, nullptr, out);
  } else if (op == "fc2.fwd") {
    cnx_linear_forward(s.h, s.w2, s.b2, false, nullptr, out);
  } else if (op == "fc2.dgrad") {
    cnx_linear_dgrad(s.dz, s.w2, out);
  } else if (op == "fc2.wgrad") {
    cnx_linear_wgrad(s.dz, s.h, nullptr, out);
  } else if (op == "fc1.dgrad") {
    cnx_linear_dgrad(s.dy, s.w1, out);
  } else {
    cnx_linear_wgrad(s.dy, s.x, nullptr, out);
  }
}

// The training forward of fc1: the pre-activation stored beside the GELU
// output from the same pass (what the step runs); the rest as cnx.
void cnx_train_impl(const Stage& s, const std::string& op, Tensor& out) {
  if (op != "fc1.fwd+gelu") return cnx_impl(s, op, out);
  static Tensor pre;
  cnx::model::cnx_linear_forward(s.x, s.w1, s.b1, true, &pre, out);
}

#ifdef CNX_HAVE_DNNL
struct OnednnMatmul {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<std::string, std::pair<dnnl::matmul, dnnl::matmul::primitive_desc>> cache;

  void run(const Stage& s, const std::string& op, Tensor& out) {
    Gemm g = describe(s, op, out);
    using md = dnnl::memory::desc;
    using dt = dnnl::memory::data_type;
    const md a_md({g.m, g.k}, dt::f32, {g.rsa, g.csa});
    const md b_md({g.k, g.n}, dt::f32, {g.rsb, g.csb});
    const md c_md({g.m, g.n}, dt::f32, {g.rsc, g.csc});
    const md bias_md({1, g.n}, dt::f32, {g.n, 1});
    const std::string key = op + "/" + std::to_string(s.m) + "/" + std::to_string(s.c);
    auto it = cache.find(key);
    if (it == cache.end()) {
      dnnl::primitive_attr attr;
      if (g.gelu) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      auto desc = g.bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md) : dnnl::matmul::desc(a_md, b_md, c_md);
      dnnl::matmul::primitive_desc pd(desc, attr, eng);
      it = cache.emplace(key, std::make_pair(dnnl::matmul(pd), pd)).first;
    }
    std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, dnnl::memory(a_md, eng, const_cast<float*>(g.a))},
                                                  {DNNL_ARG_WEIGHTS, dnnl::memory(b_md, eng, const_cast<float*>(g.b))},
                                                  {DNNL_ARG_DST, dnnl::memory(c_md, eng, g.c)}};
    if (g.bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, eng, const_cast<float*>(g.bias)));
    it->second.first.execute(strm, args);
    strm.wait();
  }
};

void onednn_sgemm(const Stage& s, const std::string& op, Tensor& out) {
  Gemm g = describe(s, op, out);
  // dnnl_sgemm is row-major: op(A) is A when its rows are contiguous.
  const bool ta = g.csa != 1, tb = g.csb != 1;
  const int64_t lda = ta ? g.csa : g.rsa, ldb = tb ? g.csb : g.rsb;
  if (g.bias) {
    for (int64_t i = 0; i < g.m; ++i) std::copy(g.bias, g.bias + g.n, g.c + i * g.rsc);
  }
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', g.m, g.n, g.k, 1.f, g.a, lda, g.b, ldb, g.bias ? 1.f : 0.f, g.c, g.rsc);
  if (g.gelu) at::gelu_(out);
}
#endif

#ifdef CNX_HAVE_LIBXSMM
// Column-major JIT kernels (no transpose flags: a strided operand is copied
// into a small contiguous buffer first, inside the timed call). A row-major
// C (rows x n) block is the column-major (n x rows) C^T = B^T A^T.
struct Libxsmm {
  static constexpr int64_t kBlock = 64;
  std::map<std::string, libxsmm_smmfunction> kernels;
  std::vector<float> wt;  // B^T contiguous when B is strided

  libxsmm_smmfunction kernel(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float beta) {
    const std::string key = std::to_string(m) + "," + std::to_string(n) + "," + std::to_string(k) + "," +
                            std::to_string(lda) + "," + std::to_string(ldb) + "," + std::to_string(ldc) + "," +
                            std::to_string(beta);
    auto it = kernels.find(key);
    if (it != kernels.end()) return it->second;
    const libxsmm_blasint M = m, N = n, K = k, LDA = lda, LDB = ldb, LDC = ldc;
    const float alpha = 1.f;
    const int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_PREFETCH_NONE;
    libxsmm_smmfunction f = libxsmm_smmdispatch(M, N, K, &LDA, &LDB, &LDC, &alpha, &beta, &flags, &prefetch);
    if (!f) throw std::runtime_error("libxsmm: no JIT kernel for " + key);
    kernels[key] = f;
    return f;
  }

  void run(const Stage& s, const std::string& op, Tensor& out) {
    Gemm g = describe(s, op, out);
    if (op == "fc2.wgrad" || op == "fc1.wgrad") return wgrad(g, out);
    // B^T (n x k) column-major is B row-major when csb == 1 (ld = rsb);
    // otherwise (a Linear's weight, B = W^T) copy it so.
    const float* bt = g.b;
    int64_t ldb = g.rsb;
    if (g.csb != 1) {
      wt.resize(g.k * g.n);
      for (int64_t t = 0; t < g.k; ++t)
        for (int64_t j = 0; j < g.n; ++j) wt[t * g.n + j] = g.b[t * g.rsb + j * g.csb];
      bt = wt.data();
      ldb = g.n;
    }
    const float beta = g.bias ? 1.f : 0.f;  // C pre-loaded with the bias
    const int64_t blocks = (g.m + kBlock - 1) / kBlock;
    const int64_t tail = g.m - (blocks - 1) * kBlock;
    libxsmm_smmfunction full = kernel(g.n, kBlock, g.k, ldb, g.rsa, g.rsc, beta);
    libxsmm_smmfunction last = kernel(g.n, tail, g.k, ldb, g.rsa, g.rsc, beta);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * kBlock, rows = std::min(kBlock, g.m - r0);
        float* cblk = g.c + r0 * g.rsc;
        if (g.bias) {
          for (int64_t i = 0; i < rows; ++i) std::copy(g.bias, g.bias + g.n, cblk + i * g.rsc);
        }
        (rows == kBlock ? full : last)(bt, g.a + r0 * g.rsa, cblk);
        if (g.gelu) {
          Tensor blk = out.narrow(0, r0, rows);  // still in L1/L2
          at::gelu_(blk);
        }
      }
    });
  }

  // C (m x n, small) = A (m x K) B (K x n), K = the rows of the activations:
  // A is stored transposed (A(i,t) at i + t*csa: column-major m x K, ld csa),
  // B row-major. Column-major Cc (m x n) = A B over K blocks, B's block copied
  // column-major; per-thread partials, then summed and transposed into C.
  void wgrad(const Gemm& g, Tensor& out) {
    const int64_t K = g.k, blocks = (K + kBlock - 1) / kBlock;
    const int threads = at::get_num_threads();
    std::vector<std::vector<float>> part(threads, std::vector<float>(g.m * g.n, 0.f));
    const int64_t per = (blocks + threads - 1) / threads;
    const int64_t tail = K - (blocks - 1) * kBlock;
    libxsmm_smmfunction full = kernel(g.m, g.n, kBlock, g.csa, kBlock, g.m, 1.f);
    libxsmm_smmfunction last = kernel(g.m, g.n, tail, g.csa, tail, g.m, 1.f);
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> bbuf(kBlock * g.n);
      for (int64_t t = t0; t < t1; ++t) {
        float* acc = part[t].data();
        for (int64_t b = t * per; b < std::min(blocks, (t + 1) * per); ++b) {
          const int64_t k0 = b * kBlock, kb = std::min(kBlock, K - k0);
          for (int64_t r = 0; r < kb; ++r) {
            const float* row = g.b + (k0 + r) * g.rsb;
            for (int64_t j = 0; j < g.n; ++j) bbuf[r + j * kb] = row[j];
          }
          (kb == kBlock ? full : last)(g.a + k0 * g.csa, bbuf.data(), acc);
        }
      }
    });
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) {
        float v = 0.f;
        for (const auto& p : part) v += p[i + j * g.m];
        o[i * g.n + j] = v;
      }
    }
  }
};
#endif

#ifdef CNX_HAVE_BLIS
struct Blis {
  using Sgemm = void (*)(int, int, int64_t, int64_t, int64_t, const float*, const float*, int64_t, int64_t,
                         const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t);
  Sgemm sgemm = nullptr;
  std::string version;
  bool load(int threads) {
    void* h = dlopen(CNX_BLIS_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!h) return false;
    sgemm = reinterpret_cast<Sgemm>(dlsym(h, "bli_sgemm"));
    auto set_threads = reinterpret_cast<void (*)(int64_t)>(dlsym(h, "bli_thread_set_num_threads"));
    auto ver = reinterpret_cast<const char* (*)()>(dlsym(h, "bli_info_get_version_str"));
    if (!sgemm || !set_threads) return false;
    set_threads(threads);
    version = ver ? ver() : "?";
    return true;
  }
  void run(const Stage& s, const std::string& op, Tensor& out) {
    Gemm g = describe(s, op, out);
    const float one = 1.f, zero = 0.f;
    if (g.bias) {
      for (int64_t i = 0; i < g.m; ++i) std::copy(g.bias, g.bias + g.n, g.c + i * g.rsc);
    }
    // trans_t BLIS_NO_TRANSPOSE = 0; the strides carry the layout.
    sgemm(0, 0, g.m, g.n, g.k, &one, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.bias ? &one : &zero, g.c, g.rsc, g.csc);
    if (g.gelu) at::gelu_(out);
  }
};
#endif

}  // namespace

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-small-gemm-bench", argc, argv);
  std::map<std::string, std::string> a = {{"variant", "atto"}, {"batch", "32"},  {"size", "224"}, {"mask", "0.6"},
                                          {"stages", "0,1"},   {"threads", "1"}, {"rounds", "7"}, {"clock", "wall"}};
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc || !a.count(k.substr(2))) {
      std::fprintf(stderr, "cnx-small-gemm-bench: unknown or incomplete argument '%s' (see the file header)\n",
                   k.c_str());
      return 2;
    }
    a[k.substr(2)] = argv[++i];
  }
  const int threads = std::stoi(a["threads"]), rounds = std::stoi(a["rounds"]);
  const int64_t batch = std::stoll(a["batch"]), size = std::stoll(a["size"]);
  at::set_num_threads(threads);
  g_threads = std::max(threads, 1);
  if (a["clock"] != "wall" && a["clock"] != "cpu") {
    std::fprintf(stderr, "cnx-small-gemm-bench: --clock: expected wall or cpu, got '%s'\n", a["clock"].c_str());
    return 2;
  }
  g_cpu_clock = a["clock"] == "cpu";
  const auto opts = cnx::model::variant_options(a["variant"]);
  const int64_t patches = (size / 32) * (size / 32);
  const int64_t visible = static_cast<int64_t>(patches * (1.0 - std::stod(a["mask"])));

  std::vector<std::pair<std::string, Impl>> libs = {{"openblas", openblas_impl}};
  if (cnx::model::cnx_gemm_supported()) {
    libs.push_back({"cnx", cnx_impl});
    libs.push_back({"cnx-train", cnx_train_impl});
  }
#ifdef CNX_HAVE_DNNL
  static OnednnMatmul dnnl_mm;
  libs.push_back({"onednn-matmul", [](const Stage& s, const std::string& op, Tensor& o) { dnnl_mm.run(s, op, o); }});
  libs.push_back({"onednn-sgemm", onednn_sgemm});
#endif
#ifdef CNX_HAVE_LIBXSMM
  libxsmm_init();
  static Libxsmm xsmm;
  libs.push_back({"libxsmm", [](const Stage& s, const std::string& op, Tensor& o) { xsmm.run(s, op, o); }});
#endif
#ifdef CNX_HAVE_BLIS
  static Blis blis;
  if (blis.load(threads)) {
    libs.push_back({"blis", [](const Stage& s, const std::string& op, Tensor& o) { blis.run(s, op, o); }});
  } else {
    std::fprintf(stderr, "cnx-small-gemm-bench: %s not loadable; BLIS skipped\n", CNX_BLIS_LIBRARY);
  }
#endif
  const auto blas = cnx::blas::query_blas();
  const auto cpu = cnx::cpu::detect_cpu();
  std::printf(
      "# CPU %s (family %d model %d, %s); %d thread(s); OpenBLAS = %s %s kernels %s; theoretical peak %.0f "
      "GFLOP/s\n",
      cpu.brand.c_str(), cpu.family, cpu.model, cnx::cpu::describe_simd(cpu).c_str(), threads, blas.library.c_str(),
      blas.version.c_str(), blas.core.c_str(), cnx::cpu::fp32_peak(cpu, threads).gflops);
  std::printf("# %s, batch %lld, %lldpx, %lld of %lld patches visible; median of %d interleaved rounds, %s clock\n",
              a["variant"].c_str(), static_cast<long long>(batch), static_cast<long long>(size),
              static_cast<long long>(visible), static_cast<long long>(patches), rounds,
              g_cpu_clock ? "CPU-time / threads" : "wall");
  std::printf("%-6s %-13s %-22s", "stage", "op", "shape (MxKxN)");
  for (const auto& l : libs) std::printf(" %14s", l.first.c_str());
  std::printf("   (GFLOP/s; xN = vs openblas; err = max|diff|/max|ref|)\n");

  std::stringstream stage_list(a["stages"]);
  std::string item;
  while (std::getline(stage_list, item, ',')) {
    const int st = std::stoi(item);
    const int64_t cells = (8 >> st) * (8 >> st);
    const int64_t m = batch * visible * cells, c = opts.dims.at(st);
    torch::manual_seed(st);
    const Stage s = make_stage(m, c);
    std::vector<double> stage_ms(libs.size(), 0.0);
    for (const auto& op : kOps) {
      std::vector<Tensor> outs;
      for (size_t l = 0; l < libs.size(); ++l) outs.push_back(torch::empty(out_shape(s, op)));
      std::vector<std::vector<double>> secs(libs.size());
      std::vector<std::string> errors(libs.size());
      for (size_t l = 0; l < libs.size(); ++l) {
        try {
          libs[l].second(s, op, outs[l]);  // warm-up (JIT, primitive creation)
        } catch (const std::exception& e) {
          errors[l] = e.what();
        }
      }
      for (int r = 0; r < rounds; ++r) {
        for (size_t l = 0; l < libs.size(); ++l) {
          if (!errors[l].empty()) continue;
          const double t0 = now_seconds();
          libs[l].second(s, op, outs[l]);
          secs[l].push_back(now_seconds() - t0);
        }
      }
      const double f = flops(s, op);
      const int64_t k = (op == "fc2.wgrad" || op == "fc1.wgrad")      ? m
                        : (op == "fc1.fwd+gelu" || op == "fc2.dgrad") ? c
                                                                      : 4 * c;
      const auto shape = out_shape(s, op);
      char sh[64];
      std::snprintf(sh, sizeof sh, "%lldx%lldx%lld", static_cast<long long>(shape[0]), static_cast<long long>(k),
                    static_cast<long long>(shape[1]));
      std::printf("%-6d %-13s %-22s", st, op.c_str(), sh);
      const double base = secs[0].empty() ? 0 : median(secs[0]);
      const double ref_max = outs[0].abs().max().item<double>();
      std::string err_line;
      for (size_t l = 0; l < libs.size(); ++l) {
        if (!errors[l].empty()) {
          std::printf(" %14s", "n/a");
          err_line += " " + libs[l].first + ": " + errors[l] + ";";
          continue;
        }
        const double t = median(secs[l]);
        stage_ms[l] += 1e3 * t;
        char cell[32];
        std::snprintf(cell, sizeof cell, "%.1f x%.2f", f / t * 1e-9, base / t);
        std::printf(" %14s", cell);
        const double err = (outs[l] - outs[0]).abs().max().item<double>() / std::max(ref_max, 1e-30);
        char e[64];
        std::snprintf(e, sizeof e, " %s %.1e", libs[l].first.c_str(), err);
        if (l > 0) err_line += e;
        if (err > 1e-4) err_line += " (MISMATCH)";
      }
      std::printf("   err:%s\n", err_line.c_str());
    }
    std::printf("%-6d %-13s %-22s", st, "all six (ms)", "");
    for (size_t l = 0; l < libs.size(); ++l) {
      char cell[32];
      std::snprintf(cell, sizeof cell, "%.1f x%.2f", stage_ms[l], stage_ms[0] / std::max(stage_ms[l], 1e-9));
      std::printf(" %14s", cell);
    }
    std::printf("\n");
  }
  return 0;
}
