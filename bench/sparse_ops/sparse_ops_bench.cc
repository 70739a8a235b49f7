// FCMAE-atto, 224x224, batch 32, mask ratio 0.6, 2 threads: sparse encoder
// vs the dense-masked encoder (channels-last, LibTorch's fastest CPU form),
// measured in the same iteration so that machine noise hits both alike.
//
// Counters: dense_ms / sparse_ms per fwd+bwd, ratio = sparse/dense time,
// peak_*_MB = peak bytes held by the c10 CPU allocator during fwd+bwd above
// what was held before (weights, grads, inputs), mem_ratio = sparse/dense.
// oneDNN's and OpenBLAS's private scratch buffers bypass the c10 allocator
// and are not counted (this favours the dense path, which uses oneDNN convs).
// sparse_full_ms: the sparse encoder with nothing masked (dense work through
// this project's kernels); ratio_vs_full shows how time scales with the
// visible fraction (0.4 is the FLOP floor).
// BM_OpBreakdown times each sparse op and its dense-masked counterpart.
#include <benchmark/benchmark.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>

#include "common/blas_info.h"
#include "model/fcmae.h"
#include "model/fcmae_encoder.h"
#include "sparse_ops/backend.h"
#include "sparse_ops/conv_cells.h"
#include "sparse_ops/dwconv.h"
#include "sparse_ops/grn.h"

namespace {

// --- peak memory via a wrapping c10 CPU allocator ----------------------------

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};

// Blocks carry their size in a 64-byte header; data == context as
// Allocator::raw_allocate requires.
constexpr size_t kHeader = 64;

void tracked_delete(void* data) {
  if (data == nullptr) return;
  char* base = static_cast<char*>(data) - kHeader;
  g_current.fetch_sub(*reinterpret_cast<int64_t*>(base));
  std::free(base);
}

class TrackingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* base = nullptr;
    if (posix_memalign(&base, kHeader, n + kHeader) != 0) throw std::bad_alloc();
    *static_cast<int64_t*>(base) = static_cast<int64_t>(n);
    void* data = static_cast<char*>(base) + kHeader;
    const int64_t now = g_current.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t peak = g_peak.load();
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
    return {data, data, &tracked_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &tracked_delete; }
  // Pure virtual in LibTorch 2.x, absent in 1.13 (hence no `override`).
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
};

void reset_peak() {
  g_peak.store(g_current.load());
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// --- setup -------------------------------------------------------------------------

constexpr int64_t kBatch = 32, kSize = 224;
constexpr double kRatio = 0.6;

struct Setup {
  cnx::model::Fcmae model{nullptr};
  torch::Tensor images, mask, no_mask, latent_grad;
};

Setup& setup() {
  static Setup s = [] {
    Setup st;
    torch::manual_seed(0);
    st.model = cnx::model::Fcmae(cnx::model::fcmae_options("atto"));
    st.images = torch::randn({kBatch, 3, kSize, kSize});
    st.mask = cnx::model::generate_mask(kBatch, kSize / 32, kSize / 32, kRatio, 1);
    st.no_mask = torch::zeros_like(st.mask);
    st.latent_grad = torch::randn({kBatch, 320, kSize / 32, kSize / 32});
    return st;
  }();
  return s;
}

struct Measure {
  double ms = 0;
  double peak_mb = 0;
};

// type "sparse_full": the sparse encoder on an all-visible mask, i.e. the
// dense amount of work done by this project's kernels (ideal ratio 0.4).
Measure encoder_step(const std::string& type) {
  auto& s = setup();
  const bool full = type == "sparse_full";
  s.model->set_encoder_type(full ? "sparse" : type);
  s.model->zero_grad(/*set_to_none=*/true);
  reset_peak();
  const int64_t before = g_current.load();
  const double t0 = now_ms();
  auto latent = s.model->forward_encoder(s.images, full ? s.no_mask : s.mask);
  (latent * s.latent_grad).sum().backward();
  const double t1 = now_ms();
  return {t1 - t0, static_cast<double>(g_peak.load() - before) / (1 << 20)};
}

Measure train_step(const std::string& type) {
  auto& s = setup();
  s.model->set_encoder_type(type);
  s.model->zero_grad(true);
  reset_peak();
  const int64_t before = g_current.load();
  const double t0 = now_ms();
  auto out = s.model->forward(s.images, s.mask);
  out.loss.backward();
  const double t1 = now_ms();
  return {t1 - t0, static_cast<double>(g_peak.load() - before) / (1 << 20)};
}

void report(benchmark::State& state, const std::string& what, Measure (*fn)(const std::string&)) {
  double ds = 0, ss = 0, dm = 0, sm = 0, fs = 0;
  int64_t n = 0;
  const bool with_full = what == "encoder";
  fn("sparse");  // warm up both paths (oneDNN primitive caches, allocator)
  fn("dense_masked");
  for (auto _ : state) {
    const auto d = fn("dense_masked");
    const auto sp = fn("sparse");
    if (with_full) fs += fn("sparse_full").ms;
    ds += d.ms;
    ss += sp.ms;
    dm = std::max(dm, d.peak_mb);
    sm = std::max(sm, sp.peak_mb);
    ++n;
    state.SetIterationTime((d.ms + sp.ms) / 1000.0);
  }
  state.counters["dense_ms"] = ds / n;
  state.counters["sparse_ms"] = ss / n;
  state.counters["ratio"] = ss / ds;
  state.counters["peak_dense_MB"] = dm;
  state.counters["peak_sparse_MB"] = sm;
  state.counters["mem_ratio"] = sm / dm;
  if (with_full) {
    state.counters["sparse_full_ms"] = fs / n;
    state.counters["ratio_vs_full"] = ss / fs;
  }
  if (what == "train") {
    state.counters["dense_img_per_s"] = kBatch * 1000.0 * n / ds;
    state.counters["sparse_img_per_s"] = kBatch * 1000.0 * n / ss;
  }
}

void BM_FcmaeAttoEncoderFwdBwd(benchmark::State& state) {
  report(state, "encoder", &encoder_step);
}
void BM_FcmaeAttoTrainStep(benchmark::State& state) {
  report(state, "train", &train_step);
}

// The sparse training step on the generic (ATen-only) kernels against the
// same step on the CPU kernels, interleaved in one run.
void BM_FcmaeAttoTrainStepGenericVsKernels(benchmark::State& state) {
  using cnx::sparse_ops::KernelMode;
  using cnx::sparse_ops::ScopedKernelMode;
  const auto generic_step = [] {
    ScopedKernelMode mode(KernelMode::kGeneric);
    return train_step("sparse");
  };
  const auto kernels_step = [] {
    ScopedKernelMode mode(KernelMode::kAuto);
    return train_step("sparse");
  };
  generic_step();  // warm up both paths
  kernels_step();
  double gs = 0, ks = 0;
  int64_t n = 0;
  for (auto _ : state) {
    const double k = kernels_step().ms;
    const double g = generic_step().ms;
    ks += k;
    gs += g;
    ++n;
    state.SetIterationTime((k + g) / 1000.0);
  }
  state.counters["kernels_ms"] = ks / n;
  state.counters["generic_ms"] = gs / n;
  state.counters["generic_vs_kernels"] = gs / ks;
}

// --- per-op breakdown (stage-0 shapes of the benchmark batch) -----------------------

template <class F>
double time_ms(F&& f, int reps) {
  f();
  const double t0 = now_ms();
  for (int i = 0; i < reps; ++i) f();
  return (now_ms() - t0) / reps;
}

void BM_OpBreakdown(benchmark::State& state) {
  auto& s = setup();
  auto net = s.model->encoder_model();
  const int64_t kernel = 7;
  auto geo = cnx::model::build_geometry(s.mask, kSize / 32, kSize / 32, 4, 4, kernel, torch::kCPU);
  std::map<std::string, double> ms;
  for (auto _ : state) {
    ms["geometry"] += time_ms([&] { cnx::model::build_geometry(s.mask, 7, 7, 4, 4, kernel, torch::kCPU); }, 2);
    for (int64_t st = 0; st < 4; ++st) {
      const auto& lay = geo.stages[st].layout;
      const int64_t c = net->options().dims[st];
      auto blk = net->block(st, 0);
      const std::string sfx = "_s" + std::to_string(st);
      auto xs = torch::randn({lay.num_sites, c}).requires_grad_(true);
      auto xd = torch::randn({kBatch, c, lay.height, lay.width})
                    .contiguous(at::MemoryFormat::ChannelsLast)
                    .requires_grad_(true);
      auto vis = lay.dense_to_site.ge(0).to(torch::kFloat).view({kBatch, 1, lay.height, lay.width});
      ms["dwconv_sparse" + sfx] += time_ms(
          [&] {
            auto y = cnx::sparse_ops::sparse_depthwise_conv(xs, geo.stages[st].neighbours, blk->dwconv->weight,
                                                            blk->dwconv->bias);
            y.sum().backward();
          },
          2);
      ms["dwconv_dense" + sfx] += time_ms(
          [&] {
            auto y = blk->dwconv->forward((xd * vis).contiguous(at::MemoryFormat::ChannelsLast)) * vis;
            y.sum().backward();
          },
          2);
      auto hs = torch::randn({lay.num_sites, 4 * c}).requires_grad_(true);
      ms["mlp_sparse" + sfx] += time_ms(
          [&] {
            auto y = at::layer_norm(xs, {c}, blk->norm->weight, blk->norm->bias, 1e-6);
            y = at::gelu(at::linear(y, blk->pwconv1->weight, blk->pwconv1->bias));
            y = cnx::sparse_ops::sparse_grn(y, lay.offsets, blk->grn->gamma, blk->grn->beta);
            at::linear(y, blk->pwconv2->weight, blk->pwconv2->bias).sum().backward();
          },
          2);
      ms["mlp_dense" + sfx] += time_ms(
          [&] {
            auto y = blk->norm->forward(xd.permute({0, 2, 3, 1}));
            y = at::gelu(blk->pwconv1->forward(y));
            auto gx =
                at::linalg_vector_norm(y * vis.permute({0, 2, 3, 1}), 2, at::IntArrayRef{1, 2}, true, c10::nullopt);
            y = cnx::model::grn_apply(y, gx, blk->grn->gamma, blk->grn->beta);
            blk->pwconv2->forward(y).sum().backward();
          },
          2);
    }
  }
  for (const auto& [k, v] : ms) state.counters[k] = v / state.iterations();
}

}  // namespace

BENCHMARK(BM_FcmaeAttoEncoderFwdBwd)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_FcmaeAttoTrainStep)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_FcmaeAttoTrainStepGenericVsKernels)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_OpBreakdown)->Unit(benchmark::kMillisecond)->Iterations(1);

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("sparse_ops_bench", argc, argv);
  static TrackingAllocator tracker;
  c10::SetCPUAllocator(&tracker, /*priority=*/100);
  const char* threads = std::getenv("CNX_BENCH_THREADS");
  torch::set_num_threads(threads != nullptr ? std::atoi(threads) : 2);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
