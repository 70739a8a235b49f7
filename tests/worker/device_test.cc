// train.device resolution (label unit).
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "worker/device.h"

namespace cnx::worker {
namespace {

TEST(TrainDevice, AutoTakesTheGpuOnlyWhenUsable) {
  EXPECT_EQ(train_device_type("auto", true), c10::DeviceType::CUDA);
  EXPECT_EQ(train_device_type("auto", false), c10::DeviceType::CPU);
  EXPECT_EQ(train_device_type("cpu", true), c10::DeviceType::CPU);
  EXPECT_EQ(train_device_type("cuda", true), c10::DeviceType::CUDA);
}

TEST(TrainDevice, CudaWithoutAGpuNamesTheKey) {
  try {
    train_device_type("cuda", false);
    ADD_FAILURE() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("train.device: 'cuda' but no CUDA device"), std::string::npos) << e.what();
  }
  EXPECT_THROW(train_device_type("tpu", true), std::invalid_argument);
}

}  // namespace
}  // namespace cnx::worker
