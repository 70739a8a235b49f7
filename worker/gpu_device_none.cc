// gpu_device.h in builds without CUDA: no rank trains on a GPU.
#include "worker/gpu_device.h"

namespace cnx::worker {

std::optional<std::string> cuda_pci_bus_id(int /*index*/) {
  return std::nullopt;
}

std::optional<metrics::AllocatorBytes> cuda_allocator_bytes(int /*index*/) {
  return std::nullopt;
}

}  // namespace cnx::worker
