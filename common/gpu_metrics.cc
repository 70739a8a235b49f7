#include "common/gpu_metrics.h"

#include <dlfcn.h>

#include <utility>

#include "common/check.h"
#include "common/metric_names.h"
#include "common/metrics_catalogue.h"

namespace cnx::metrics {

namespace {

// dlsym with the symbol's C type; nullptr when missing.
template <class Fn>
bool bind(void* handle, const char* symbol, Fn* out, std::string* missing) {
  *out = reinterpret_cast<Fn>(::dlsym(handle, symbol));
  if (*out == nullptr && missing->empty()) *missing = symbol;
  return *out != nullptr;
}

}  // namespace

std::shared_ptr<Nvml> Nvml::load(std::string* why, const std::string& library) {
  void* handle = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* e = ::dlerror();
    *why = "cannot load " + library + (e ? std::string(": ") + e : std::string());
    return nullptr;
  }
  NvmlApi api{};
  std::string missing;
  bind(handle, "nvmlInit_v2", &api.init, &missing);
  bind(handle, "nvmlShutdown", &api.shutdown, &missing);
  bind(handle, "nvmlDeviceGetHandleByPciBusId_v2", &api.device_by_pci_bus_id, &missing);
  bind(handle, "nvmlDeviceGetMemoryInfo", &api.memory_info, &missing);
  bind(handle, "nvmlDeviceGetUtilizationRates", &api.utilization, &missing);
  bind(handle, "nvmlErrorString", &api.error_string, &missing);
  if (!missing.empty()) {
    ::dlclose(handle);
    *why = library + " has no " + missing;
    return nullptr;
  }
  return open(api, why, handle);
}

std::shared_ptr<Nvml> Nvml::open(const NvmlApi& api, std::string* why, void* handle) {
  CNX_CHECK(
      api.init && api.shutdown && api.device_by_pci_bus_id && api.memory_info && api.utilization && api.error_string,
      "Nvml::open: an NVML entry point is null");
  std::shared_ptr<Nvml> nvml(new Nvml(api, handle));
  if (const int rc = api.init(); rc != 0) {
    *why = "nvmlInit failed: " + nvml->error(rc);
    nvml->api_.shutdown = nullptr;  // nothing to shut down
    return nullptr;
  }
  return nvml;
}

Nvml::~Nvml() {
  if (api_.shutdown != nullptr) api_.shutdown();
  if (handle_ != nullptr) ::dlclose(handle_);
}

std::string Nvml::error(int code) const {
  const char* s = api_.error_string(code);
  return (s != nullptr ? std::string(s) : std::string("error")) + " (" + std::to_string(code) + ")";
}

std::optional<NvmlDevice> Nvml::device(const std::string& pci_bus_id, std::string* why) const {
  NvmlDevice d = nullptr;
  if (const int rc = api_.device_by_pci_bus_id(pci_bus_id.c_str(), &d); rc != 0) {
    *why = "NVML has no device at PCI bus id " + pci_bus_id + ": " + error(rc);
    return std::nullopt;
  }
  return d;
}

std::optional<NvmlMemory> Nvml::memory(NvmlDevice device) const {
  NvmlMemory m{};
  if (api_.memory_info(device, &m) != 0) return std::nullopt;
  return m;
}

std::optional<double> Nvml::utilization(NvmlDevice device) const {
  NvmlUtilization u{};
  if (api_.utilization(device, &u) != 0 || u.gpu > 100) return std::nullopt;
  return u.gpu / 100.0;
}

GpuCollector::GpuCollector(Labels labels, const std::string& pci_bus_id, std::shared_ptr<Nvml> nvml,
                           AllocatorFn allocator, std::string no_nvml_why)
    : labels_(std::move(labels)),
      nvml_(std::move(nvml)),
      no_nvml_why_(std::move(no_nvml_why)),
      allocator_(std::move(allocator)) {
  CNX_CHECK(!pci_bus_id.empty(), "GpuCollector: empty PCI bus id");
  labels_["gpu"] = pci_bus_id;
  if (nvml_) {
    device_ = nvml_->device(pci_bus_id, &no_nvml_why_);
    if (!device_) nvml_.reset();
  }
}

GpuReading GpuCollector::read() const {
  GpuReading r;
  if (nvml_ && device_) {
    if (const auto m = nvml_->memory(*device_)) {
      r.memory_used_bytes = static_cast<double>(m->used);
      r.memory_total_bytes = static_cast<double>(m->total);
    }
    r.utilization_ratio = nvml_->utilization(*device_);
  }
  if (allocator_) {
    if (const auto a = allocator_()) {
      r.allocated_bytes = a->allocated;
      r.reserved_bytes = a->reserved;
    }
  }
  return r;
}

std::string GpuCollector::sources() const {
  std::string s = nvml_ ? "NVML" : "";
  if (allocator_) s += std::string(s.empty() ? "" : ", ") + "caching allocator";
  if (s.empty()) s = "nothing";
  if (!nvml_) s += " (no NVML: " + (no_nvml_why_.empty() ? std::string("not loaded") : no_nvml_why_) + ")";
  return s;
}

std::vector<MetricFamily> GpuCollector::Collect() const {
  const GpuReading r = read();
  std::vector<ClientMetric::Label> labels;
  for (const auto& [k, v] : labels_) labels.push_back({k, v});
  std::vector<MetricFamily> out;
  auto gauge = [&](const char* name, const std::optional<double>& value) {
    if (!value) return;
    const MetricSpec* spec = find_metric(name);
    CNX_CHECK(spec != nullptr && spec->type == MetricType::Gauge, "GpuCollector: '", name,
              "' is not a gauge of the catalogue");
    MetricFamily f{name, spec->help, MetricType::Gauge, {}};
    ClientMetric m;
    m.label = labels;
    m.value = *value;
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  };
  namespace n = names;
  gauge(n::kWorkerGpuMemoryUsedBytes, r.memory_used_bytes);
  gauge(n::kWorkerGpuMemoryTotalBytes, r.memory_total_bytes);
  gauge(n::kWorkerGpuUtilizationRatio, r.utilization_ratio);
  gauge(n::kWorkerGpuAllocatedBytes, r.allocated_bytes);
  gauge(n::kWorkerGpuReservedBytes, r.reserved_bytes);
  return out;
}

}  // namespace cnx::metrics
