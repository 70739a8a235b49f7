#pragma once
// The rank's CUDA device as the metrics see it (common/gpu_metrics.h): its
// PCI bus id (how NVML finds it) and what LibTorch's caching allocator holds
// on it. gpu_device_cuda.cc in CUDA builds (CNX_WITH_CUDA), gpu_device_none.cc
// otherwise (no device: nullopt).
#include <optional>
#include <string>

#include "common/gpu_metrics.h"

namespace cnx::worker {

// "0000:1B:00.0" for CUDA device `index`; nullopt without CUDA or when the
// runtime fails (no such device, no driver).
std::optional<std::string> cuda_pci_bus_id(int index);
// The caching allocator's allocated and reserved bytes on device `index`
// (aggregate over its pools); nullopt without CUDA.
std::optional<metrics::AllocatorBytes> cuda_allocator_bytes(int index);

}  // namespace cnx::worker
