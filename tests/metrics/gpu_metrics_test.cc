// GpuCollector and the NVML glue (common/gpu_metrics.h) without a GPU: a
// missing libnvidia-ml gives no GPU series and no error; over faked NVML entry
// points, the device is looked up by the PCI bus id it was given, values come
// out in base units (bytes, ratio 0..1) with the rank's labels plus gpu,
// promtool accepts the exposition, and a value NVML cannot read at a scrape
// (utilisation on a MIG slice) is left out of that scrape only.
// tests/worker/gpu_metrics_gpu_test.cc checks the real NVML and CUDA on a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>

#include "common/check.h"
#include "common/gpu_metrics.h"
#include "common/metric_names.h"
#include "common/metrics_catalogue.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::metrics {
namespace {

// ---- a fake NVML: one device at kBus ----------------------------------------
constexpr const char* kBus = "00000000:1B:00.0";
struct FakeNvml {
  int init_rc = 0;
  int inits = 0, shutdowns = 0;
  std::string looked_up;
  int memory_rc = 0, utilization_rc = 0;
  unsigned long long total = 80ull << 30, used = 3ull << 30;
  unsigned int gpu_percent = 37;
};
FakeNvml fake;
int device_tag = 0;  // the fake device handle points here

int fake_init() {
  ++fake.inits;
  return fake.init_rc;
}
int fake_shutdown() {
  ++fake.shutdowns;
  return 0;
}
int fake_by_bus(const char* bus, NvmlDevice* d) {
  fake.looked_up = bus;
  if (std::strcmp(bus, kBus) != 0) return 6;  // NVML_ERROR_NOT_FOUND
  *d = &device_tag;
  return 0;
}
int fake_memory(NvmlDevice d, NvmlMemory* m) {
  if (d != &device_tag) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  if (fake.memory_rc != 0) return fake.memory_rc;
  m->total = fake.total;
  m->used = fake.used;
  m->free = fake.total - fake.used;
  return 0;
}
int fake_utilization(NvmlDevice d, NvmlUtilization* u) {
  if (d != &device_tag) return 2;
  if (fake.utilization_rc != 0) return fake.utilization_rc;
  u->gpu = fake.gpu_percent;
  u->memory = 12;
  return 0;
}
const char* fake_error_string(int rc) {
  switch (rc) {
    case 3:
      return "Not Supported";
    case 6:
      return "Not Found";
    case 9:
      return "Driver Not Loaded";
    default:
      return "Unknown Error";
  }
}
NvmlApi fake_api() {
  return {fake_init, fake_shutdown, fake_by_bus, fake_memory, fake_utilization, fake_error_string};
}

const Labels kRank = {{names::kJobLabel, "j"}, {names::kHostLabel, "h0"}, {"rank", "3"}, {"attempt", "0"}};

std::set<std::string> family_names(const std::vector<MetricFamily>& families) {
  std::set<std::string> out;
  for (const auto& f : families) out.insert(f.name);
  return out;
}

class GpuMetrics : public ::testing::Test {
 protected:
  void SetUp() override { fake = FakeNvml{}; }
};

TEST_F(GpuMetrics, NoNvmlLibraryMeansNoNvmlAndAReason) {
  std::string why;
  EXPECT_EQ(Nvml::load(&why, "libcnx-no-such-nvml.so.1"), nullptr);
  EXPECT_NE(why.find("cannot load libcnx-no-such-nvml.so.1"), std::string::npos) << why;
  // A library without NVML's symbols (libc is loaded in every process).
  why.clear();
  EXPECT_EQ(Nvml::load(&why, "libc.so.6"), nullptr);
  EXPECT_EQ(why, "libc.so.6 has no nvmlInit_v2");
}

TEST_F(GpuMetrics, TheRealLibraryLoadsOrSaysWhy) {
  // This machine may or may not have a driver: either NVML initialises, or
  // load() returns null with a reason; it never throws.
  std::string why;
  std::shared_ptr<Nvml> nvml;
  ASSERT_NO_THROW(nvml = Nvml::load(&why));
  if (!nvml) {
    EXPECT_FALSE(why.empty());
  }
}

TEST_F(GpuMetrics, WithoutNvmlOrAllocatorThereAreNoSeries) {
  GpuCollector gpu(kRank, kBus, nullptr, nullptr, "cannot load libnvidia-ml.so.1");
  EXPECT_TRUE(gpu.Collect().empty());
  EXPECT_EQ(gpu.sources(), "nothing (no NVML: cannot load libnvidia-ml.so.1)");
  EXPECT_THROW(GpuCollector(kRank, "", nullptr, nullptr), CheckError);
}

TEST_F(GpuMetrics, AllocatorOnlyGivesTheAllocatorSeries) {
  GpuCollector gpu(kRank, kBus, nullptr, [] { return std::optional<AllocatorBytes>(AllocatorBytes{1024, 4096}); });
  EXPECT_EQ(family_names(gpu.Collect()),
            (std::set<std::string>{names::kWorkerGpuAllocatedBytes, names::kWorkerGpuReservedBytes}));
  EXPECT_EQ(gpu.sources(), "caching allocator (no NVML: not loaded)");
  // An allocator with nothing to say (not initialised yet) gives no series.
  GpuCollector idle(kRank, kBus, nullptr, [] { return std::optional<AllocatorBytes>(); });
  EXPECT_TRUE(idle.Collect().empty());
}

TEST_F(GpuMetrics, NvmlInitFailureIsAReasonNotAnError) {
  fake.init_rc = 9;
  std::string why;
  EXPECT_EQ(Nvml::open(fake_api(), &why), nullptr);
  EXPECT_EQ(why, "nvmlInit failed: Driver Not Loaded (9)");
  EXPECT_EQ(fake.shutdowns, 0);  // nothing to shut down after a failed init
}

TEST_F(GpuMetrics, ReadsTheDeviceWithThisBusIdInBaseUnits) {
  std::string why;
  auto nvml = Nvml::open(fake_api(), &why);
  ASSERT_NE(nvml, nullptr) << why;
  EXPECT_EQ(fake.inits, 1);
  {
    GpuCollector gpu(kRank, kBus, nvml, [] { return std::optional<AllocatorBytes>(AllocatorBytes{5e8, 7e8}); });
    EXPECT_EQ(fake.looked_up, kBus);
    EXPECT_EQ(gpu.sources(), "NVML, caching allocator");
    const GpuReading r = gpu.read();
    EXPECT_EQ(r.memory_used_bytes, 3.0 * (1ull << 30));
    EXPECT_EQ(r.memory_total_bytes, 80.0 * (1ull << 30));
    EXPECT_DOUBLE_EQ(*r.utilization_ratio, 0.37);
    EXPECT_EQ(r.allocated_bytes, 5e8);
    EXPECT_EQ(r.reserved_bytes, 7e8);

    // Every family is a catalogue gauge whose labels are the rank's plus gpu.
    // They are all of the catalogue's cnx_worker_gpu_* families (the
    // catalogue test in server_test.cc leaves these to this test).
    const auto families = gpu.Collect();
    std::set<std::string> catalogue_gpu;
    for (const auto& spec : metric_catalogue()) {
      if (spec.name.rfind("cnx_worker_gpu_", 0) == 0) catalogue_gpu.insert(spec.name);
    }
    EXPECT_EQ(family_names(families), catalogue_gpu);
    ASSERT_EQ(families.size(), 5u);
    for (const auto& f : families) {
      const MetricSpec* spec = find_metric(f.name);
      ASSERT_NE(spec, nullptr) << f.name;
      EXPECT_EQ(f.type, MetricType::Gauge);
      EXPECT_EQ(f.help, spec->help);
      ASSERT_EQ(f.metric.size(), 1u);
      std::vector<std::string> label_names;
      for (const auto& l : f.metric[0].label) label_names.push_back(l.name);
      EXPECT_EQ(label_names, spec->labels) << f.name;
    }
    const std::string text = serialize_text(families);
    EXPECT_NE(text.find("cnx_worker_gpu_utilization_ratio{attempt=\"0\",cnx_job=\"j\",gpu=\"00000000:1B:00.0\","
                        "host=\"h0\",rank=\"3\"} 0.37\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("cnx_worker_gpu_memory_used_bytes{"), std::string::npos);
    const auto check = cnx::testing::promtool_check_metrics(text);
    EXPECT_EQ(check.exit_code, 0) << check.output << "\n" << text;

    // Utilisation not supported (a MIG slice), memory still there; a memory
    // read error drops the memory series of that scrape only.
    fake.utilization_rc = 3;
    EXPECT_FALSE(gpu.read().utilization_ratio.has_value());
    EXPECT_EQ(family_names(gpu.Collect()).count(names::kWorkerGpuUtilizationRatio), 0u);
    fake.memory_rc = 999;
    EXPECT_EQ(family_names(gpu.Collect()),
              (std::set<std::string>{names::kWorkerGpuAllocatedBytes, names::kWorkerGpuReservedBytes}));
    fake = FakeNvml{};
    fake.gpu_percent = 101;  // out of range: not a ratio
    EXPECT_FALSE(gpu.read().utilization_ratio.has_value());
    fake.gpu_percent = 100;
    EXPECT_EQ(gpu.read().utilization_ratio, 1.0);
  }
  nvml.reset();
  EXPECT_EQ(fake.shutdowns, 1);  // the last user shuts NVML down
}

TEST_F(GpuMetrics, ABusIdNvmlDoesNotKnowLeavesNvmlOut) {
  std::string why;
  auto nvml = Nvml::open(fake_api(), &why);
  ASSERT_NE(nvml, nullptr) << why;
  GpuCollector gpu(kRank, "0000:AA:00.0", nvml, [] { return std::optional<AllocatorBytes>(AllocatorBytes{1, 2}); });
  EXPECT_EQ(fake.looked_up, "0000:AA:00.0");
  EXPECT_EQ(gpu.sources(), "caching allocator (no NVML: NVML has no device at PCI bus id 0000:AA:00.0: Not Found (6))");
  EXPECT_EQ(family_names(gpu.Collect()),
            (std::set<std::string>{names::kWorkerGpuAllocatedBytes, names::kWorkerGpuReservedBytes}));
}

}  // namespace
}  // namespace cnx::metrics
