// Sparse ops on CUDA (label gpu): every op, forward and backward, on the CUDA
// kernels and on the generic path on CUDA, against the CPU kernels; channel
// counts of atto's stages (40) and beyond three channel tiles (96);
// bitwise determinism; side streams and the device guard; float16/bfloat16.
//
// Without a usable CUDA device the tests are skipped, unless CNX_REQUIRE_GPU=1
// is set (scripts/gpu_check.sh sets it): then they fail.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "sparse_ops/backend.h"
#include "sparse_ops/conv_cells.h"
#include "sparse_ops/densify.h"
#include "sparse_ops/dwconv.h"
#include "sparse_ops/grn.h"
#include "sparse_ops/layout.h"
#include "tests/sparse_ops/test_util.h"

namespace cnx::sparse_ops {
namespace {

using testing::random_mask;
using testing::seeded_randn;

bool gpu_required() {
  const char* v = std::getenv("CNX_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

#define CNX_NEED_CUDA()                                                                   \
  do {                                                                                    \
    if (!at::hasCUDA()) {                                                                 \
      if (gpu_required()) FAIL() << "CNX_REQUIRE_GPU=1 but LibTorch sees no CUDA device"; \
      GTEST_SKIP() << "no CUDA device";                                                   \
    }                                                                                     \
  } while (0)

TEST(SparseOpsCuda, BuildHasTheCudaKernels) {
  CNX_NEED_CUDA();
  EXPECT_TRUE(has_cuda_kernels()) << "built without CNX_SPARSE_CUDA_KERNELS: CUDA tensors take the generic path";
  ScopedKernelMode mode(KernelMode::kAuto);
  EXPECT_EQ(kernel_path(at::zeros({1}, at::device(at::kCUDA).dtype(at::kFloat))),
            has_cuda_kernels() ? KernelPath::kCuda : KernelPath::kGeneric);
}

// One op under test: builds its output from leaves on `device`.
using OpFn = std::function<at::Tensor(const std::vector<at::Tensor>&, at::Device)>;

// Output and input gradients of sum(op(inputs) * r) with inputs on `device`
// in `mode`; everything returned on the CPU.
std::vector<at::Tensor> run_op(const OpFn& op, const std::vector<at::Tensor>& inputs, at::Device device,
                               KernelMode mode) {
  ScopedKernelMode scoped(mode);
  std::vector<at::Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(t.detach().to(device).requires_grad_(true));
  auto out = op(leaves, device);
  auto r = seeded_randn(out.sizes(), 77, out.scalar_type()).to(device);
  (out * r).sum().backward();
  std::vector<at::Tensor> result{out.detach().cpu()};
  for (const auto& l : leaves) result.push_back(l.grad().cpu());
  return result;
}

void expect_cuda_matches_cpu(const OpFn& op, const std::vector<at::Tensor>& inputs, const std::string& what) {
  const auto dt = inputs[0].scalar_type();
  const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
  auto cpu = run_op(op, inputs, at::kCPU, KernelMode::kAuto);
  auto cuda = run_op(op, inputs, at::kCUDA, KernelMode::kAuto);
  auto generic = run_op(op, inputs, at::kCUDA, KernelMode::kGeneric);
  for (size_t q = 0; q < cpu.size(); ++q) {
    const std::string name = what + (q == 0 ? " output" : " gradient " + std::to_string(q));
    CNX_EXPECT_CLOSE(cuda[q], cpu[q], tol, name + " (CUDA kernels vs CPU)");
    CNX_EXPECT_CLOSE(generic[q], cpu[q], tol, name + " (generic on CUDA vs CPU)");
  }
}

class EveryOp : public ::testing::TestWithParam<std::tuple<int64_t, at::ScalarType>> {};

TEST_P(EveryOp, CudaAndGenericOnCudaMatchCpu) {
  CNX_NEED_CUDA();
  const auto [c, dt] = GetParam();
  auto mask = random_mask(3, 3, 4, 0.5, 5);
  mask[1].fill_(1);  // an empty sample
  // Fine layout 48 x 64 (~3000 sites: several weight-gradient chunks), coarse 24 x 32.
  auto fine_c = layout_from_patch_mask(mask, 3, 4, 16);
  auto coarse_c = layout_from_patch_mask(mask, 3, 4, 8);
  auto fine_g = layout_from_patch_mask(mask, 3, 4, 16, at::kCUDA);
  auto coarse_g = layout_from_patch_mask(mask, 3, 4, 8, at::kCUDA);
  auto fine = [&](at::Device d) -> const SparseLayout& { return d.is_cuda() ? fine_g : fine_c; };
  auto coarse = [&](at::Device d) -> const SparseLayout& { return d.is_cuda() ? coarse_g : coarse_c; };
  const int64_t m = fine_c.num_sites;
  const std::string tag = "C=" + std::to_string(c) + " " + c10::toString(dt);

  expect_cuda_matches_cpu(
      [&](const std::vector<at::Tensor>& in, at::Device d) {
        return sparse_depthwise_conv(in[0], neighbour_map(fine(d), 7), in[1], in[2]);
      },
      {seeded_randn({m, c}, 1, dt), seeded_randn({c, 1, 7, 7}, 2, dt), seeded_randn({c}, 3, dt)}, "dwconv " + tag);
  expect_cuda_matches_cpu(
      [&](const std::vector<at::Tensor>& in, at::Device d) { return sparse_grn(in[0], fine(d).offsets, in[1], in[2]); },
      {seeded_randn({m, c}, 4, dt), seeded_randn({1, 1, 1, c}, 5, dt), seeded_randn({1, 1, 1, c}, 6, dt)},
      "grn " + tag);
  expect_cuda_matches_cpu(
      [&](const std::vector<at::Tensor>& in, at::Device d) {
        return sparse_downsample_conv(in[0], cell_map(fine(d), coarse(d), 2), in[1], in[2]);
      },
      {seeded_randn({m, c}, 7, dt), seeded_randn({c + 8, c, 2, 2}, 8, dt) * 0.2, seeded_randn({c + 8}, 9, dt)},
      "downsample " + tag);
  expect_cuda_matches_cpu(
      [&](const std::vector<at::Tensor>& in, at::Device d) {
        return densify(sparse_stem_conv(in[0], coarse(d), in[1], in[2]), coarse(d));
      },
      {seeded_randn({3, 3, 96, 128}, 10, dt), seeded_randn({c, 3, 4, 4}, 11, dt), seeded_randn({c}, 12, dt)},
      "stem + densify " + tag);
}

INSTANTIATE_TEST_SUITE_P(Channels, EveryOp,
                         ::testing::Combine(::testing::Values<int64_t>(40, 96),
                                            ::testing::Values(at::kFloat, at::kDouble)));

// stem -> dwconv -> GRN -> downsample -> densify, forward and backward,
// without biases on the cell convs; returns the output and every gradient.
struct Chain {
  std::vector<at::Tensor> params;  // stem_w, dw_w, dw_b, gamma, beta, ds_w
  at::Tensor image;

  Chain(int64_t c, at::ScalarType dt) {
    image = seeded_randn({3, 3, 96, 128}, 1, dt);
    params = {seeded_randn({c, 3, 4, 4}, 2, dt) * 0.3,
              seeded_randn({c, 1, 7, 7}, 3, dt) * 0.2,
              seeded_randn({c}, 4, dt),
              seeded_randn({1, 1, 1, c}, 5, dt) * 0.5,
              seeded_randn({1, 1, 1, c}, 6, dt) * 0.5,
              seeded_randn({2 * c, c, 2, 2}, 7, dt) * 0.2};
  }

  // act: dtype of the activations (parameters stay in their dtype).
  std::vector<at::Tensor> run(at::Device device, at::ScalarType act) const {
    auto mask = random_mask(3, 3, 4, 0.5, 5);
    auto fine = layout_from_patch_mask(mask, 3, 4, 8, device);
    auto coarse = layout_from_patch_mask(mask, 3, 4, 4, device);
    std::vector<at::Tensor> p;
    for (const auto& t : params) p.push_back(t.detach().to(device).requires_grad_(true));
    auto img = image.to(device).to(act).requires_grad_(true);
    auto x = sparse_stem_conv(img, fine, p[0], at::Tensor());
    x = sparse_depthwise_conv(x, neighbour_map(fine, 7), p[1], p[2]);
    x = sparse_grn(x, fine.offsets, p[3], p[4]);
    x = sparse_downsample_conv(x, cell_map(fine, coarse, 2), p[5], at::Tensor());
    auto d = densify(x, coarse);
    d.to(at::kFloat).square().sum().backward();
    std::vector<at::Tensor> out{d.detach().to(at::kFloat).cpu(), img.grad().to(at::kFloat).cpu()};
    for (const auto& t : p) out.push_back(t.grad().cpu());
    return out;
  }
};

TEST(SparseOpsCuda, ChainIsBitwiseDeterministic) {
  CNX_NEED_CUDA();
  ScopedKernelMode mode(KernelMode::kAuto);
  for (int64_t c : {40, 96}) {
    Chain chain(c, at::kFloat);
    auto a = chain.run(at::kCUDA, at::kFloat);
    auto b = chain.run(at::kCUDA, at::kFloat);
    for (size_t q = 0; q < a.size(); ++q) {
      EXPECT_TRUE(a[q].equal(b[q])) << "C=" << c << " result " << q << " differs between two identical runs";
    }
  }
}

TEST(SparseOpsCuda, SideStreamGivesTheSameResult) {
  CNX_NEED_CUDA();
  ScopedKernelMode mode(KernelMode::kAuto);
  Chain chain(40, at::kFloat);
  auto ref = chain.run(at::kCUDA, at::kFloat);
  std::vector<at::Tensor> side;
  {
    auto stream = c10::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard guard(stream);
    side = chain.run(at::kCUDA, at::kFloat);
    stream.synchronize();
  }
  // Our kernels are deterministic on any stream; cuBLAS only promises that per
  // stream, hence a tolerance rather than bitwise equality.
  for (size_t q = 0; q < ref.size(); ++q) CNX_EXPECT_CLOSE(side[q], ref[q], 1e-6, "result " + std::to_string(q));
}

// Tensors on cuda:1 while cuda:0 is current: the entry points must launch on
// the tensors' device. Needs two GPUs.
TEST(SparseOpsCuda, TensorsOnAnotherDeviceThanTheCurrentOne) {
  CNX_NEED_CUDA();
  if (c10::cuda::device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, found " << c10::cuda::device_count();
  ScopedKernelMode mode(KernelMode::kAuto);
  Chain chain(40, at::kFloat);
  auto ref = chain.run(at::Device(at::kCUDA, 0), at::kFloat);
  c10::cuda::CUDAGuard current(0);
  auto other = chain.run(at::Device(at::kCUDA, 1), at::kFloat);
  for (size_t q = 0; q < ref.size(); ++q) CNX_EXPECT_CLOSE(other[q], ref[q], 1e-6, "result " + std::to_string(q));
}

TEST(SparseOpsCuda, ReducedPrecisionActivations) {
  CNX_NEED_CUDA();
  Chain chain(40, at::kFloat);
  auto ref = chain.run(at::kCPU, at::kFloat);
  for (auto act : {at::kHalf, at::kBFloat16}) {
    auto got = chain.run(at::kCUDA, act);
    const double tol = act == at::kHalf ? 1e-2 : 4e-2;
    for (size_t q = 0; q < ref.size(); ++q) {
      CNX_EXPECT_CLOSE(got[q], ref[q], tol, std::string(c10::toString(act)) + " result " + std::to_string(q));
    }
  }
}

TEST(SparseOpsCuda, EmptyLayoutsAndZeroChannels) {
  CNX_NEED_CUDA();
  ScopedKernelMode mode(KernelMode::kAuto);
  auto opts = at::device(at::kCUDA).dtype(at::kFloat);
  // No visible site at all.
  auto empty = layout_from_patch_mask(at::ones({2, 4}), 2, 2, 2, at::kCUDA);
  auto x = at::zeros({0, 40}, opts).requires_grad_(true);
  auto w = at::randn({40, 1, 7, 7}, opts).requires_grad_(true);
  auto b = at::randn({40}, opts).requires_grad_(true);
  auto y = sparse_depthwise_conv(x, neighbour_map(empty, 7), w, b);
  densify(y, empty).sum().backward();
  EXPECT_EQ(w.grad().abs().sum().item<float>(), 0.f);
  // Sites but zero channels: the weight-gradient kernel must not launch an empty grid.
  auto lay = layout_from_patch_mask(at::zeros({2, 4}), 2, 2, 2, at::kCUDA);
  auto x0 = at::zeros({lay.num_sites, 0}, opts).requires_grad_(true);
  auto w0 = at::zeros({0, 1, 7, 7}, opts).requires_grad_(true);
  auto y0 = sparse_depthwise_conv(x0, neighbour_map(lay, 7), w0, at::Tensor());
  y0.sum().backward();
  EXPECT_EQ(w0.grad().numel(), 0);
  EXPECT_EQ(x0.grad().sizes(), x0.sizes());
}

}  // namespace
}  // namespace cnx::sparse_ops
