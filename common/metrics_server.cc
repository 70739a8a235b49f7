#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <civetweb.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "common/check.h"

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
  ctx_ = mg_start2(&init, &error);
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
