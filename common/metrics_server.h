#pragma once
// MetricsServer: serves a set of Collectables over HTTP (civetweb).
//
//   GET /metrics  -> 200, Content-Type kTextContentType, the text exposition
//                    of every registered collectable (registration order);
//                    500 with the error if a collector throws.
//   GET /healthz  -> 200 "ok", or 503 with the reason from the health callback
//                    (a callback that throws is reported as 503 with its message).
//   anything else -> 404.
//
// Threading: requests are served on civetweb's own threads (num_threads of
// them); RegisterCollectable / RemoveCollectable / set_health_check may be
// called from any thread at any time. The destructor stops the server and
// waits for in-flight requests. Collectables are held weakly: one that has
// been destroyed is skipped at scrape time.
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/metrics.h"

struct mg_context;
struct mg_connection;

namespace cnx::metrics {

namespace detail {
// Sum of the PT_TLS segments (rounded to their alignment) of the modules
// loaded now: the static TLS glibc puts on every thread's stack.
size_t loaded_static_tls_bytes();
// The stack size civetweb's threads get for a request of `requested` bytes
// (see common/metrics_server.cc: Debian's civetweb asks for 100 KiB).
size_t civetweb_thread_stack_size(size_t requested);
}  // namespace detail

struct HealthStatus {
  bool ok = true;
  std::string reason;  // shown in the 503 body when !ok
};

class MetricsServer {
 public:
  // Listens on host:port. host is an IPv4 address ("127.0.0.1", "0.0.0.0");
  // port 0 picks a free port (see port()). Throws cnx::CheckError naming the
  // address if it cannot listen there.
  MetricsServer(const std::string& host, int port, int num_threads = 4);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }  // the bound port
  const std::string& host() const { return host_; }
  std::string address() const;  // "host:port"

  void RegisterCollectable(const std::weak_ptr<Collectable>& collectable);
  void RemoveCollectable(const std::weak_ptr<Collectable>& collectable);
  // nullptr restores the default (always healthy).
  void set_health_check(std::function<HealthStatus()> check);
  // Runs `hook` at the start of every scrape, before collecting, on the
  // serving thread: the place to refresh gauges derived from time (e.g.
  // CoordinatorMetrics::refresh_commit_age). An exception fails the scrape (500).
  void add_scrape_hook(std::function<void()> hook);

  // The body /metrics would return now (used by the handler; handy in tests).
  std::string scrape() const;
  HealthStatus health() const;

 private:
  static int handle_metrics(mg_connection* conn, void* self);
  static int handle_healthz(mg_connection* conn, void* self);

  std::string host_;
  int port_ = 0;
  mg_context* ctx_ = nullptr;
  mutable std::mutex mutex_;
  std::vector<std::weak_ptr<Collectable>> collectables_;
  std::function<HealthStatus()> health_check_;
  std::vector<std::function<void()>> scrape_hooks_;
};

}  // namespace cnx::metrics
