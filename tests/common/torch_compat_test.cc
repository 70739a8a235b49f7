// common/torch_compat.h on the LibTorch this build uses: the autocast guard
// turns CPU autocast on (bfloat16 matrix products), restores the previous
// state, and nests.
#include "common/torch_compat.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace cnx::compat {
namespace {

TEST(TorchCompat, VersionMacroMatchesTheHeaders) {
  EXPECT_TRUE(CNX_TORCH_VERSION_AT_LEAST(1, 13));
  EXPECT_TRUE(CNX_TORCH_VERSION_AT_LEAST(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR));
  EXPECT_FALSE(CNX_TORCH_VERSION_AT_LEAST(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR + 1));
  EXPECT_FALSE(CNX_TORCH_VERSION_AT_LEAST(TORCH_VERSION_MAJOR + 1, 0));
}

TEST(TorchCompat, CpuAutocastGuardCastsAndRestores) {
  auto a = at::randn({8, 8});
  auto b = at::randn({8, 8});
  ASSERT_FALSE(autocast_enabled(at::kCPU));
  const auto before = autocast_dtype(at::kCPU);
  {
    AutocastGuard guard(at::kCPU, at::kBFloat16);
    EXPECT_TRUE(autocast_enabled(at::kCPU));
    EXPECT_EQ(autocast_dtype(at::kCPU), at::kBFloat16);
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    {
      AutocastGuard off(at::kCPU, at::kBFloat16, /*enabled=*/false);
      EXPECT_FALSE(autocast_enabled(at::kCPU));
      EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
    }
    EXPECT_TRUE(autocast_enabled(at::kCPU));
  }
  EXPECT_FALSE(autocast_enabled(at::kCPU));
  EXPECT_EQ(autocast_dtype(at::kCPU), before);
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
}

}  // namespace
}  // namespace cnx::compat
