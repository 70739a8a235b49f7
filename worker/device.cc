#include "worker/device.h"

#include <stdexcept>

namespace cnx::worker {

c10::DeviceType train_device_type(const std::string& setting, bool cuda_usable) {
  if (setting == "cpu") return c10::DeviceType::CPU;
  if (setting == "auto") return cuda_usable ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  if (setting == "cuda") {
    if (!cuda_usable) {
      throw std::invalid_argument(
          "train.device: 'cuda' but no CUDA device is usable (LibTorch without CUDA, or no GPU visible); use "
          "auto or cpu");
    }
    return c10::DeviceType::CUDA;
  }
  throw std::invalid_argument("train.device: expected auto, cpu or cuda, got '" + setting + "'");
}

}  // namespace cnx::worker
