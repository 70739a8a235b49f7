#pragma once
// Test support for everything Prometheus: a tiny HTTP/1.1 client over plain
// sockets, a free-port finder, `promtool check metrics`, and a real Prometheus
// server (the Debian package) that scrapes given targets on loopback and
// answers instant queries. Used by tests/metrics and, for the scrape of real
// workers and the coordinator, tests/e2e.
//
// Nothing here is thread-safe; use from the test's main thread. Failures
// (cannot connect, prometheus exits, bad JSON) throw cnx::CheckError with the
// URL, the command or Prometheus's log tail in the message.
#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cnx::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// GET (or HEAD) http://host:port<path>; host is an IPv4 address.
HttpResponse http_get(const std::string& host, int port, const std::string& path, double timeout_s = 5.0,
                      const std::string& method = "GET");

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_tcp_port();

// Percent-encodes a query-string value.
std::string url_encode(const std::string& s);

struct CommandResult {
  int exit_code = -1;  // -1 if it did not exit normally
  std::string output;  // stdout + stderr
};
// Runs argv[0] (a path) with stdin from `input`; waits for it.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& input = {});

// `promtool check metrics` on exposition text. exit_code 0 and no output
// means clean; lint warnings make promtool exit non-zero.
CommandResult promtool_check_metrics(const std::string& exposition, const std::string& promtool = "/usr/bin/promtool");

struct ScrapeJob {
  std::string job_name;
  std::vector<std::string> targets;  // "host:port"
  bool honor_labels = false;         // none needed: our labels (cnx_job, host, ...) are not target labels
  std::string metrics_path = "/metrics";
};

// The prometheus.yml text for these jobs (global scrape/evaluation interval).
std::string prometheus_yaml(const std::vector<ScrapeJob>& jobs, double scrape_interval_s = 1.0);

class PrometheusServer {
 public:
  // Writes prometheus.yml into a fresh temp dir, starts `binary` on
  // 127.0.0.1:<free port> with its TSDB there, and waits (up to
  // ready_timeout_s) for /-/ready.
  explicit PrometheusServer(const std::vector<ScrapeJob>& jobs, double scrape_interval_s = 1.0,
                            const std::string& binary = "/usr/bin/prometheus", double ready_timeout_s = 30.0);
  ~PrometheusServer();  // SIGTERM, wait, remove the temp dir
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // /api/v1/query: the "data.result" array (vector results).
  nlohmann::json query(const std::string& promql) const;
  // Polls query(promql) every 0.5 s until it returns >= min_series series;
  // returns them, or throws after timeout_s with the last answer and the log.
  nlohmann::json wait_for(const std::string& promql, size_t min_series, double timeout_s = 30.0) const;
  std::string log_tail(size_t max_bytes = 4000) const;

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace cnx::testing
