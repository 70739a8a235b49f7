#pragma once
// Where a rank trains (config train.device).
#include <c10/core/DeviceType.h>

#include <string>

namespace cnx::worker {

// "cpu" -> kCPU; "cuda" -> kCUDA, or std::invalid_argument naming the key
// when no CUDA device is usable; "auto" -> kCUDA when one is usable, else
// kCPU. The rank's device index is then its communicator's (local rank
// modulo the visible devices).
c10::DeviceType train_device_type(const std::string& setting, bool cuda_usable);

}  // namespace cnx::worker
