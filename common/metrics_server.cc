#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>

#include "common/check.h"

// Thread stacks for civetweb.
//
// Debian's libcivetweb is built with USE_STACK_SIZE=102400: every thread it
// starts (master and workers, all inside mg_start2) gets an explicit 100 KiB
// stack via pthread_attr_setstacksize. glibc carves the static TLS of every
// initially loaded module out of that stack and pthread_create fails with
// EINVAL when it does not fit. A process that links LibTorch (1.13 on Debian)
// loads ~290 libraries whose static TLS adds up to more than 100 KiB
// (libopenblas alone 60 KiB, libglog 30 KiB, libtorch_cpu 10 KiB), so
// mg_start2 failed with "Cannot create first worker thread". No civetweb
// option changes that size, and pthread_setattr_default_np does not apply to
// an explicitly sized attribute.
//
// So this file defines pthread_attr_setstacksize: the executable's definition
// takes precedence over libc's for libcivetweb's call. It forwards unchanged
// except on a thread that is inside MetricsServer's mg_start2 call (flag
// below), where the requested size is raised to
//   max(requested, kMinCivetwebStack) + static TLS of the loaded modules + margin,
// i.e. civetweb's threads keep at least the stack civetweb asked for on top of
// the TLS. Every other caller in the process is unaffected.
namespace cnx::metrics::detail {

thread_local bool g_sizing_civetweb_threads = false;

namespace {

constexpr size_t kMinCivetwebStack = 256 * 1024;
constexpr size_t kTlsMargin = 64 * 1024;  // glibc's static TLS surplus, alignment, guard

int add_tls_size(dl_phdr_info* info, size_t, void* data) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_TLS) continue;
    const size_t align = ph.p_align > 0 ? ph.p_align : 1;
    *static_cast<size_t*>(data) += (ph.p_memsz + align - 1) / align * align;
  }
  return 0;
}

}  // namespace

size_t loaded_static_tls_bytes() {
  size_t total = 0;
  dl_iterate_phdr(&add_tls_size, &total);
  return total;
}

size_t civetweb_thread_stack_size(size_t requested) {
  return std::max(requested, kMinCivetwebStack) + loaded_static_tls_bytes() + kTlsMargin;
}

}  // namespace cnx::metrics::detail

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stacksize) noexcept {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static std::atomic<Fn> real{nullptr};
  Fn fn = real.load(std::memory_order_acquire);
  if (fn == nullptr) {
    fn = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
    if (fn == nullptr) return ENOSYS;
    real.store(fn, std::memory_order_release);
  }
  if (cnx::metrics::detail::g_sizing_civetweb_threads) {
    stacksize = cnx::metrics::detail::civetweb_thread_stack_size(stacksize);
  }
  return fn(attr, stacksize);
}

namespace cnx::metrics {

namespace {

// civetweb's global initialisation, done once per process.
void init_civetweb_once() {
  static const bool done = [] {
    mg_init_library(0);
    return true;
  }();
  (void)done;
}

void send(mg_connection* conn, int status, const char* content_type, const std::string& body) {
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", content_type, -1);
  mg_response_header_add(conn, "Content-Length", std::to_string(body.size()).c_str(), -1);
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_send(conn);
  const mg_request_info* info = mg_get_request_info(conn);
  if (info != nullptr && info->request_method != nullptr && std::strcmp(info->request_method, "HEAD") == 0) return;
  mg_write(conn, body.data(), body.size());
}

bool method_allowed(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const char* m = info != nullptr ? info->request_method : nullptr;
  if (m != nullptr && (std::strcmp(m, "GET") == 0 || std::strcmp(m, "HEAD") == 0)) return true;
  send(conn, 405, "text/plain; charset=utf-8", "method not allowed\n");
  return false;
}

}  // namespace

MetricsServer::MetricsServer(const std::string& host, int port, int num_threads) : host_(host) {
  in_addr addr{};
  CNX_CHECK(inet_pton(AF_INET, host.c_str(), &addr) == 1, "MetricsServer: listen host '", host,
            "' is not an IPv4 address (use e.g. 127.0.0.1 or 0.0.0.0)");
  CNX_CHECK(port >= 0 && port <= 65535, "MetricsServer: port ", port, " out of range [0, 65535]");
  CNX_CHECK(num_threads >= 1, "MetricsServer: num_threads must be >= 1, got ", num_threads);
  init_civetweb_once();

  const std::string ports = host + ":" + std::to_string(port);
  const std::string threads = std::to_string(num_threads);
  const char* options[] = {"listening_ports", ports.c_str(),       "num_threads", threads.c_str(), "request_timeout_ms",
                           "10000",           "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  mg_init_data init{&callbacks, this, options};
  char error_text[256] = {0};
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof(error_text)};
  detail::g_sizing_civetweb_threads = true;
  ctx_ = mg_start2(&init, &error);
  detail::g_sizing_civetweb_threads = false;
  CNX_CHECK(ctx_ != nullptr, "MetricsServer: cannot listen on ", ports, ": ", error_text,
            " (port in use or not permitted?)");

  mg_server_port bound[4];
  const int n = mg_get_server_ports(ctx_, 4, bound);
  if (n < 1) {
    mg_stop(ctx_);
    ctx_ = nullptr;
    CNX_CHECK(false, "MetricsServer: started on ", ports, " but could not read back the bound port");
  }
  port_ = bound[0].port;
  mg_set_request_handler(ctx_, "/metrics$", &MetricsServer::handle_metrics, this);
  mg_set_request_handler(ctx_, "/healthz$", &MetricsServer::handle_healthz, this);
}

MetricsServer::~MetricsServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

std::string MetricsServer::address() const {
  return host_ + ":" + std::to_string(port_);
}

void MetricsServer::RegisterCollectable(const std::weak_ptr<Collectable>& collectable) {
  std::lock_guard<std::mutex> lock(mutex_);
  collectables_.push_back(collectable);
}

void MetricsServer::RemoveCollectable(const std::weak_ptr<Collectable>& collectable) {
  std::lock_guard<std::mutex> lock(mutex_);
  collectables_.erase(std::remove_if(collectables_.begin(), collectables_.end(),
                                     [&](const std::weak_ptr<Collectable>& c) {
                                       return !c.owner_before(collectable) && !collectable.owner_before(c);
                                     }),
                      collectables_.end());
}

void MetricsServer::set_health_check(std::function<HealthStatus()> check) {
  std::lock_guard<std::mutex> lock(mutex_);
  health_check_ = std::move(check);
}

void MetricsServer::add_scrape_hook(std::function<void()> hook) {
  CNX_CHECK(hook != nullptr, "MetricsServer::add_scrape_hook: empty hook");
  std::lock_guard<std::mutex> lock(mutex_);
  scrape_hooks_.push_back(std::move(hook));
}

std::string MetricsServer::scrape() const {
  std::vector<std::shared_ptr<Collectable>> live;
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& w : collectables_) {
      if (auto c = w.lock()) live.push_back(std::move(c));
    }
    hooks = scrape_hooks_;
  }
  for (const auto& hook : hooks) hook();
  std::vector<MetricFamily> families;
  for (const auto& c : live) {
    for (auto& f : c->Collect()) families.push_back(std::move(f));
  }
  return serialize_text(families);
}

HealthStatus MetricsServer::health() const {
  std::function<HealthStatus()> check;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    check = health_check_;
  }
  if (!check) return {};
  try {
    return check();
  } catch (const std::exception& e) {
    return {false, std::string("health check threw: ") + e.what()};
  }
}

int MetricsServer::handle_metrics(mg_connection* conn, void* self) {
  if (!method_allowed(conn)) return 405;
  try {
    send(conn, 200, kTextContentType, static_cast<MetricsServer*>(self)->scrape());
    return 200;
  } catch (const std::exception& e) {
    send(conn, 500, "text/plain; charset=utf-8", std::string("collecting metrics failed: ") + e.what() + "\n");
    return 500;
  }
}

int MetricsServer::handle_healthz(mg_connection* conn, void* self) {
  if (!method_allowed(conn)) return 405;
  const HealthStatus s = static_cast<MetricsServer*>(self)->health();
  if (s.ok) {
    send(conn, 200, "text/plain; charset=utf-8", "ok\n");
    return 200;
  }
  send(conn, 503, "text/plain; charset=utf-8", (s.reason.empty() ? "unhealthy" : s.reason) + "\n");
  return 503;
}

}  // namespace cnx::metrics
