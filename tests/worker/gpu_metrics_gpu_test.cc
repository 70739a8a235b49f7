// The rank's GPU metrics on a real GPU (label gpu): CUDA's PCI bus id of
// device 0 finds the device in the real NVML (libnvidia-ml.so.1, loaded at
// run time), whose memory and utilisation read in range; LibTorch's caching
// allocator counts a 256 MiB tensor; the collector exports all five
// cnx_worker_gpu_* families with the gpu label. Without a usable CUDA device
// (this CPU build, a machine without a GPU) it skips, unless
// CNX_REQUIRE_GPU=1 (scripts/gpu_check.sh), which makes that a failure.
// tests/metrics/gpu_metrics_test.cc covers the same code over a faked NVML.
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#include "common/gpu_metrics.h"
#include "common/metric_names.h"
#include "worker/gpu_device.h"

namespace cnx::worker {
namespace {

bool require_gpu() {
  const char* v = std::getenv("CNX_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

TEST(GpuMetricsGpu, NvmlAndTheAllocatorSeeTheRanksDevice) {
  if (!at::hasCUDA()) {
    if (require_gpu()) FAIL() << "CNX_REQUIRE_GPU=1 but LibTorch sees no CUDA device";
    GTEST_SKIP() << "no CUDA device";
  }
  const std::optional<std::string> bus = cuda_pci_bus_id(0);
  ASSERT_TRUE(bus.has_value()) << "cudaDeviceGetPCIBusId failed for device 0";
  EXPECT_NE(bus->find(':'), std::string::npos) << *bus;

  std::string why;
  std::shared_ptr<metrics::Nvml> nvml = metrics::Nvml::load(&why);
  ASSERT_NE(nvml, nullptr) << "a GPU machine has the driver's NVML: " << why;
  const auto device = nvml->device(*bus, &why);
  ASSERT_TRUE(device.has_value()) << why;
  const auto memory = nvml->memory(*device);
  ASSERT_TRUE(memory.has_value());
  EXPECT_GT(memory->total, 1ull << 30);
  EXPECT_LE(memory->used, memory->total);

  const auto before = cuda_allocator_bytes(0);
  torch::Tensor t = torch::ones({256 << 20}, torch::TensorOptions().dtype(torch::kUInt8).device(torch::kCUDA, 0));
  torch::cuda::synchronize();
  const auto after = cuda_allocator_bytes(0);
  ASSERT_TRUE(after.has_value());
  EXPECT_GE(after->allocated - (before ? before->allocated : 0.0), double(256 << 20));
  EXPECT_GE(after->reserved, after->allocated);
  // NVML's used memory is the whole device's: it includes what we reserved.
  const auto memory_after = nvml->memory(*device);
  ASSERT_TRUE(memory_after.has_value());
  EXPECT_GE(static_cast<double>(memory_after->used), after->reserved);

  metrics::GpuCollector gpu({{"rank", "0"}}, *bus, nvml, [] { return cuda_allocator_bytes(0); });
  EXPECT_EQ(gpu.sources(), "NVML, caching allocator");
  const metrics::GpuReading r = gpu.read();
  // Utilisation is not supported on a MIG slice; everywhere else it is a ratio.
  if (r.utilization_ratio) {
    EXPECT_GE(*r.utilization_ratio, 0.0);
    EXPECT_LE(*r.utilization_ratio, 1.0);
  }
  const std::string text = metrics::serialize_text(gpu.Collect());
  for (const char* name : {metrics::names::kWorkerGpuMemoryUsedBytes, metrics::names::kWorkerGpuMemoryTotalBytes,
                           metrics::names::kWorkerGpuAllocatedBytes, metrics::names::kWorkerGpuReservedBytes}) {
    EXPECT_NE(text.find(std::string(name) + "{gpu=\"" + *bus + "\",rank=\"0\"} "), std::string::npos) << name << "\n"
                                                                                                      << text;
  }
  EXPECT_GT(t.sum().item<int64_t>(), 0);
}

}  // namespace
}  // namespace cnx::worker
