// Regression: MetricsServer must start in a process that links LibTorch.
//
// Debian's civetweb gives its threads a fixed 100 KiB stack; LibTorch pulls in
// libraries whose static TLS alone exceeds that, so pthread_create failed and
// mg_start2 reported "Cannot create first worker thread" (see the comment on
// pthread_attr_setstacksize in common/metrics_server.cc). This binary links
// ${TORCH_LIBRARIES} and uses a tensor, so those libraries are really loaded.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "common/metrics.h"
#include "common/metrics_server.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::metrics {
namespace {

TEST(MetricsServerWithTorch, StartsAndServesMetrics) {
  // The process has LibTorch's static TLS; civetweb's requested 100 KiB
  // would not hold it.
  ASSERT_GT(detail::loaded_static_tls_bytes(), size_t{100} * 1024)
      << "this test no longer reproduces the original failure condition";

  const at::Tensor t = at::arange(4, at::kFloat).sum();
  auto registry = std::make_shared<Registry>();
  BuildGauge()
      .Name("cnx_test_tensor_total_value")
      .Help("Sum of arange(4) computed by LibTorch.")
      .Register(*registry)
      .Add({})
      .Set(t.item<float>());

  MetricsServer server("127.0.0.1", 0, 4);
  ASSERT_GT(server.port(), 0);
  server.RegisterCollectable(registry);
  for (int i = 0; i < 3; ++i) {
    const auto r = cnx::testing::http_get("127.0.0.1", server.port(), "/metrics");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body,
              "# HELP cnx_test_tensor_total_value Sum of arange(4) computed by LibTorch.\n# TYPE "
              "cnx_test_tensor_total_value gauge\n"
              "cnx_test_tensor_total_value 6\n");
    const auto check = cnx::testing::promtool_check_metrics(r.body);
    EXPECT_EQ(check.exit_code, 0) << check.output;
  }
  EXPECT_EQ(cnx::testing::http_get("127.0.0.1", server.port(), "/healthz").status, 200);
}

TEST(MetricsServerWithTorch, StackSizingIsScopedToCivetwebStart) {
  // Outside MetricsServer's start, pthread_attr_setstacksize is libc's.
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 102400), 0);
  size_t got = 0;
  ASSERT_EQ(pthread_attr_getstacksize(&attr, &got), 0);
  EXPECT_EQ(got, size_t{102400});
  pthread_attr_destroy(&attr);
  // The size civetweb's threads get holds its request plus the TLS.
  EXPECT_GE(detail::civetweb_thread_stack_size(102400), 102400 + detail::loaded_static_tls_bytes());
}

}  // namespace
}  // namespace cnx::metrics
