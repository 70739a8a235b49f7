#pragma once
// GPU memory and utilisation of a rank's device, read at scrape time:
//   cnx_worker_gpu_memory_used_bytes      NVML: device memory in use (every process on the GPU)
//   cnx_worker_gpu_memory_total_bytes     NVML: device memory
//   cnx_worker_gpu_utilization_ratio      NVML: share of the last sample period a kernel ran (0..1)
//   cnx_worker_gpu_allocated_bytes        LibTorch's caching allocator: bytes in this rank's tensors
//   cnx_worker_gpu_reserved_bytes         LibTorch's caching allocator: bytes it holds from the driver
// Labels: the rank's (cnx_job, host, rank, attempt) plus gpu (the device's
// PCI bus id, as the CUDA runtime prints it).
//
// NVML (libnvidia-ml.so.1, shipped with the NVIDIA driver) is loaded at run
// time with dlopen: nothing links against it, so the CPU build and a GPU
// machine without NVML (a container without the driver's utility libraries)
// work; without it only the allocator's series exist. The device is found
// by PCI bus id, which CUDA and NVML agree on whatever CUDA_VISIBLE_DEVICES
// and CUDA_DEVICE_ORDER say (their device indices need not agree).
//
// Usage (worker/cli.cc, CUDA builds: worker/gpu_device.h supplies the bus id
// and the allocator's numbers):
//   std::string why;
//   std::shared_ptr<Nvml> nvml = Nvml::load(&why);          // nullptr + why without NVML
//   auto gpu = std::make_shared<GpuCollector>(labels, bus_id, nvml, allocator_fn);
//   server.RegisterCollectable(gpu);
// A value that cannot be read at a scrape (NVML error, utilisation not
// supported on a MIG slice) is left out of that scrape; nothing throws.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/metrics.h"

namespace cnx::metrics {

// NVML's C ABI, as far as it is used here (declared here: the CUDA toolkit
// has no nvml.h, and the CPU build has no toolkit). Return codes: 0 success.
struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct NvmlUtilization {  // nvmlUtilization_t
  unsigned int gpu;       // percent of time a kernel ran over the last sample period
  unsigned int memory;    // percent of time device memory was read or written
};
using NvmlDevice = void*;  // nvmlDevice_t (an opaque pointer)
struct NvmlApi {
  int (*init)();                                          // nvmlInit_v2
  int (*shutdown)();                                      // nvmlShutdown
  int (*device_by_pci_bus_id)(const char*, NvmlDevice*);  // nvmlDeviceGetHandleByPciBusId_v2
  int (*memory_info)(NvmlDevice, NvmlMemory*);            // nvmlDeviceGetMemoryInfo
  int (*utilization)(NvmlDevice, NvmlUtilization*);       // nvmlDeviceGetUtilizationRates
  const char* (*error_string)(int);                       // nvmlErrorString
};

// An initialised NVML (nvmlInit on creation, nvmlShutdown on destruction).
// Thread-safe (NVML is).
class Nvml {
 public:
  inline static const char* const kLibrary = "libnvidia-ml.so.1";
  // dlopen(library) and nvmlInit; nullptr with *why set when the library or
  // one of its symbols is missing or nvmlInit fails.
  static std::shared_ptr<Nvml> load(std::string* why, const std::string& library = kLibrary);
  // The same over given entry points (tests fake them); `handle` is dlclose'd
  // on destruction when not null.
  static std::shared_ptr<Nvml> open(const NvmlApi& api, std::string* why, void* handle = nullptr);
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  // The device with this PCI bus id ("0000:1B:00.0"), or nullopt with *why.
  std::optional<NvmlDevice> device(const std::string& pci_bus_id, std::string* why) const;
  std::optional<NvmlMemory> memory(NvmlDevice device) const;
  // gpu utilisation as a ratio 0..1.
  std::optional<double> utilization(NvmlDevice device) const;

 private:
  Nvml(const NvmlApi& api, void* handle) : api_(api), handle_(handle) {}
  std::string error(int code) const;
  NvmlApi api_;
  void* handle_;
};

// What LibTorch's CUDA caching allocator holds on the rank's device.
struct AllocatorBytes {
  double allocated = 0;
  double reserved = 0;
};

// One reading of the rank's GPU; a value that could not be read is nullopt.
struct GpuReading {
  std::optional<double> memory_used_bytes;
  std::optional<double> memory_total_bytes;
  std::optional<double> utilization_ratio;
  std::optional<double> allocated_bytes;
  std::optional<double> reserved_bytes;
};

class GpuCollector : public Collectable {
 public:
  using AllocatorFn = std::function<std::optional<AllocatorBytes>()>;
  // labels: the rank's; pci_bus_id: its device (the gpu label); nvml may be
  // null (no NVML series; no_nvml_why: the reason, for sources()); allocator
  // may be empty (no allocator series).
  // A bus id NVML does not know leaves NVML out (sources() says why).
  GpuCollector(Labels labels, const std::string& pci_bus_id, std::shared_ptr<Nvml> nvml, AllocatorFn allocator,
               std::string no_nvml_why = "");
  GpuReading read() const;
  // Which sources answer and why NVML does not, for the log: "NVML, caching
  // allocator" / "caching allocator (no NVML: <why>)".
  std::string sources() const;
  std::vector<MetricFamily> Collect() const override;

 private:
  Labels labels_;
  std::shared_ptr<Nvml> nvml_;
  std::optional<NvmlDevice> device_;
  std::string no_nvml_why_;
  AllocatorFn allocator_;
};

}  // namespace cnx::metrics
