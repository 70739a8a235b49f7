#include "tests/metrics/prom_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/check.h"

namespace cnx::testing {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  CNX_CHECK(out.good(), "cannot write ", path);
}

std::string make_temp_dir(const char* prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/" + prefix + "XXXXXX";
  CNX_CHECK(mkdtemp(tmpl.data()) != nullptr, "mkdtemp(", tmpl, ") failed: ", std::strerror(errno));
  return tmpl;
}

// fork + exec with stdin/stdout/stderr redirected to files.
pid_t spawn(const std::vector<std::string>& argv, const std::string& stdin_path, const std::string& out_path) {
  CNX_CHECK(!argv.empty(), "spawn: empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  CNX_CHECK(pid >= 0, "fork failed: ", std::strerror(errno));
  if (pid == 0) {
    const int in = open(stdin_path.empty() ? "/dev/null" : stdin_path.c_str(), O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    for (int fd = 3; fd < 1024; ++fd) close(fd);  // no inherited sockets
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

HttpResponse http_get(const std::string& host, int port, const std::string& path, double timeout_s,
                      const std::string& method) {
  const std::string url = "http://" + host + ":" + std::to_string(port) + path;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  CNX_CHECK(fd >= 0, "socket() failed: ", std::strerror(errno));
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_s);
  tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    close(fd);
    CNX_CHECK(false, "http_get ", url, ": host is not an IPv4 address");
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const std::string err = std::strerror(errno);
    close(fd);
    CNX_CHECK(false, "http_get ", url, ": connect failed: ", err);
  }
  const std::string request = method + " " + path + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port) +
                              "\r\nUser-Agent: cnx-test\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      CNX_CHECK(false, "http_get ", url, ": send failed");
    }
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[8192];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      const std::string err = std::strerror(errno);
      close(fd);
      CNX_CHECK(false, "http_get ", url, ": recv failed: ", err, " after ", raw.size(), " bytes");
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);

  const size_t header_end = raw.find("\r\n\r\n");
  CNX_CHECK(header_end != std::string::npos, "http_get ", url, ": no end of headers in ", raw.size(),
            " bytes of response");
  HttpResponse r;
  std::istringstream head(raw.substr(0, header_end));
  std::string status_line;
  std::getline(head, status_line);
  std::istringstream sl(status_line);
  std::string version;
  sl >> version >> r.status;
  CNX_CHECK(version.rfind("HTTP/1.", 0) == 0 && r.status >= 100, "http_get ", url, ": bad status line '", status_line,
            "'");
  for (std::string line; std::getline(head, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(value.begin());
    r.headers[lower(line.substr(0, colon))] = value;
  }
  std::string body = raw.substr(header_end + 4);
  if (lower(r.headers["transfer-encoding"]) == "chunked") {
    std::string decoded;
    size_t pos = 0;
    for (;;) {
      const size_t eol = body.find("\r\n", pos);
      CNX_CHECK(eol != std::string::npos, "http_get ", url, ": truncated chunked body");
      const size_t len = std::stoul(body.substr(pos, eol - pos), nullptr, 16);
      if (len == 0) break;
      decoded += body.substr(eol + 2, len);
      pos = eol + 2 + len + 2;
    }
    body = decoded;
  } else if (r.headers.count("content-length") && method != "HEAD") {
    const size_t len = std::stoul(r.headers["content-length"]);
    CNX_CHECK(body.size() == len, "http_get ", url, ": body has ", body.size(), " bytes, Content-Length says ", len);
  }
  r.body = std::move(body);
  return r;
}

int free_tcp_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  CNX_CHECK(fd >= 0, "socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  CNX_CHECK(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind(127.0.0.1:0) failed");
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

CommandResult run_command(const std::vector<std::string>& argv, const std::string& input) {
  const std::string dir = make_temp_dir("cnx-cmd-");
  const std::string in_path = dir + "/stdin";
  const std::string out_path = dir + "/output";
  write_all(in_path, input);
  const pid_t pid = spawn(argv, in_path, out_path);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = read_all(out_path);
  std::filesystem::remove_all(dir);
  CNX_CHECK(r.exit_code != 127, "could not execute ", argv[0]);
  return r;
}

CommandResult promtool_check_metrics(const std::string& exposition, const std::string& promtool) {
  return run_command({promtool, "check", "metrics"}, exposition);
}

std::string prometheus_yaml(const std::vector<ScrapeJob>& jobs, double scrape_interval_s) {
  std::ostringstream y;
  const int ms = static_cast<int>(scrape_interval_s * 1000.0 + 0.5);
  y << "global:\n  scrape_interval: " << ms << "ms\n  evaluation_interval: " << ms << "ms\n"
    << "  scrape_timeout: " << ms << "ms\n"
    << "scrape_configs:\n";
  for (const auto& j : jobs) {
    y << "  - job_name: \"" << j.job_name << "\"\n"
      << "    honor_labels: " << (j.honor_labels ? "true" : "false") << "\n"
      << "    metrics_path: \"" << j.metrics_path << "\"\n"
      << "    static_configs:\n      - targets: [";
    for (size_t i = 0; i < j.targets.size(); ++i) y << (i ? ", " : "") << '"' << j.targets[i] << '"';
    y << "]\n";
  }
  return y.str();
}

PrometheusServer::PrometheusServer(const std::vector<ScrapeJob>& jobs, double scrape_interval_s,
                                   const std::string& binary, double ready_timeout_s) {
  dir_ = make_temp_dir("cnx-prometheus-");
  write_all(dir_ + "/prometheus.yml", prometheus_yaml(jobs, scrape_interval_s));
  port_ = free_tcp_port();
  pid_ = spawn({binary, "--config.file=" + dir_ + "/prometheus.yml", "--storage.tsdb.path=" + dir_ + "/data",
                "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
               "", dir_ + "/prometheus.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(ready_timeout_s);
  for (;;) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      CNX_CHECK(false, "prometheus (", binary, ") exited during start-up; log:\n", log_tail());
    }
    try {
      if (http_get("127.0.0.1", port_, "/-/ready", 2.0).status == 200) return;
    } catch (const CheckError&) {
      // not listening yet
    }
    CNX_CHECK(std::chrono::steady_clock::now() < deadline, "prometheus not ready on port ", port_, " after ",
              ready_timeout_s, " s; log:\n", log_tail());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

PrometheusServer::~PrometheusServer() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    bool exited = false;
    for (int i = 0; i < 100 && !exited; ++i) {
      exited = waitpid(pid_, &status, WNOHANG) == pid_;
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

nlohmann::json PrometheusServer::query(const std::string& promql) const {
  const std::string path = "/api/v1/query?query=" + url_encode(promql);
  const HttpResponse r = http_get("127.0.0.1", port_, path, 5.0);
  CNX_CHECK(r.status == 200, "prometheus query '", promql, "': HTTP ", r.status, ": ", r.body);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.body);
  } catch (const std::exception& e) {
    CNX_CHECK(false, "prometheus query '", promql, "': bad JSON: ", e.what());
  }
  CNX_CHECK(j.value("status", "") == "success", "prometheus query '", promql, "' failed: ", r.body);
  return j["data"]["result"];
}

nlohmann::json PrometheusServer::wait_for(const std::string& promql, size_t min_series, double timeout_s) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  nlohmann::json last;
  for (;;) {
    last = query(promql);
    if (last.is_array() && last.size() >= min_series) return last;
    CNX_CHECK(std::chrono::steady_clock::now() < deadline, "prometheus: '", promql, "' returned ", last.dump(),
              " (wanted >= ", min_series, " series) after ", timeout_s,
              " s; targets: ", http_get("127.0.0.1", port_, "/api/v1/targets", 5.0).body, "\nlog:\n", log_tail());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

std::string PrometheusServer::log_tail(size_t max_bytes) const {
  const std::string log = read_all(dir_ + "/prometheus.log");
  return log.size() > max_bytes ? log.substr(log.size() - max_bytes) : log;
}

}  // namespace cnx::testing
