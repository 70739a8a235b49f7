#pragma once
// Shared helpers for tests/model: fixture paths, temp files, tensor comparison.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>  // getpid

#include <cstdlib>
#include <filesystem>
#include <string>

namespace cnx::model::testing {

inline std::string fixture_path(const std::string& name) {
  const char* src = std::getenv("CNX_SOURCE_DIR");
  const std::string root = src ? src : ".";
  return root + "/tests/model/fixtures/" + name;
}

// A fresh directory under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("cnx_model_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

// |actual - expected| <= rtol * max|expected| + tiny, element-wise; prints the
// worst element on failure.
inline ::testing::AssertionResult close_rel(const at::Tensor& actual, const at::Tensor& expected, double rtol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " vs expected " << expected.sizes();
  }
  auto a = actual.detach().to(at::kDouble);
  auto e = expected.detach().to(at::kDouble);
  const double scale = e.abs().max().item<double>();
  const auto diff = (a - e).abs();
  const double worst = diff.max().item<double>();
  if (worst <= rtol * scale + 1e-12) return ::testing::AssertionSuccess();
  const int64_t idx = diff.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure() << "max |diff| " << worst << " > " << rtol << " * max|expected| " << scale
                                       << " at flat index " << idx << ": actual " << a.flatten()[idx].item<double>()
                                       << " expected " << e.flatten()[idx].item<double>();
}

}  // namespace cnx::model::testing
