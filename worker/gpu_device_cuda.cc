// gpu_device.h in CUDA builds: the CUDA runtime's PCI bus id and LibTorch's
// caching allocator statistics (the ones torch.cuda.memory_allocated() and
// memory_reserved() report).
#include "worker/gpu_device.h"

#include <c10/core/Allocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

namespace cnx::worker {

std::optional<std::string> cuda_pci_bus_id(int index) {
  char bus[64] = {};
  if (cudaDeviceGetPCIBusId(bus, static_cast<int>(sizeof(bus)), index) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error the call left behind
    return std::nullopt;
  }
  return std::string(bus);
}

std::optional<metrics::AllocatorBytes> cuda_allocator_bytes(int index) {
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return metrics::AllocatorBytes{static_cast<double>(stats.allocated_bytes[all].current),
                                   static_cast<double>(stats.reserved_bytes[all].current)};
  } catch (const std::exception&) {
    return std::nullopt;  // no such device, or the allocator is not initialised
  }
}

}  // namespace cnx::worker
