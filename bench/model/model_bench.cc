// Dense ConvNeXt V2 pieces against their baselines, measured in one run:
//   LayerNorm channels-first: our fused layer_norm on an NHWC view vs the
//     reference's explicit mean/var formula (BM_LayerNormCF/{0 ours,1 ref}).
//   Atto forward at 224: NCHW-contiguous input vs channels-last input
//     (BM_AttoForward/{0 nchw,1 channels_last}).
// Threads: torch::set_num_threads(2) for every case.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "model/convnextv2.h"
#include "model/layers.h"

namespace {

using namespace cnx::model;

void BM_LayerNormCF(benchmark::State& state) {
  torch::set_num_threads(2);
  torch::NoGradGuard g;
  const int64_t c = 80;
  LayerNorm ln(c, DataFormat::kChannelsFirst);
  auto x = torch::randn({32, c, 56, 56});
  for (auto _ : state) {
    torch::Tensor y;
    if (state.range(0) == 0) {
      y = ln->forward(x).contiguous();
    } else {
      auto u = x.mean({1}, true);
      auto s = (x - u).pow(2).mean({1}, true);
      y = ln->weight.view({1, c, 1, 1}) * ((x - u) / torch::sqrt(s + 1e-6)) + ln->bias.view({1, c, 1, 1});
    }
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetLabel(state.range(0) == 0 ? "ours(fused)" : "reference formula");
}
BENCHMARK(BM_LayerNormCF)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_AttoForward(benchmark::State& state) {
  torch::set_num_threads(2);
  torch::NoGradGuard g;
  ConvNeXtV2 model(variant_options("atto"));
  model->eval();
  auto x = torch::randn({8, 3, 224, 224});
  if (state.range(0) == 1) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (auto _ : state) benchmark::DoNotOptimize(model->forward(x).data_ptr());
  state.SetItemsProcessed(state.iterations() * 8);
  state.SetLabel(state.range(0) == 0 ? "nchw" : "channels_last");
}
BENCHMARK(BM_AttoForward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
