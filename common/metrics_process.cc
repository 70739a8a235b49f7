#include "common/metrics_process.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/check.h"

namespace cnx::metrics {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  CNX_CHECK(in.good(), "process metrics: cannot read ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double boot_time_seconds() {
  std::istringstream in(read_file("/proc/stat"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  }
  CNX_CHECK(false, "process metrics: no 'btime' line in /proc/stat");
  return 0;
}

double count_fds(const std::string& proc_dir) {
  const std::string dir = proc_dir + "/fd";
  DIR* d = opendir(dir.c_str());
  CNX_CHECK(d != nullptr, "process metrics: cannot list ", dir);
  // When listing our own fds, the descriptor opendir holds is not counted.
  const bool self = proc_dir == "/proc/self" || proc_dir == "/proc/" + std::to_string(getpid());
  const std::string own = std::to_string(dirfd(d));
  double n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.' || (self && own == e->d_name)) continue;
    n += 1;
  }
  closedir(d);
  return n;
}

double max_open_files(const std::string& limits_path) {
  std::istringstream in(read_file(limits_path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream fields(line.substr(14));
      std::string soft;
      fields >> soft;
      if (soft == "unlimited") return -1;
      return std::stod(soft);
    }
  }
  CNX_CHECK(false, "process metrics: no 'Max open files' line in ", limits_path);
  return 0;
}

}  // namespace

ProcessStats read_process_stats(const std::string& proc_dir) {
  const std::string stat_path = proc_dir + "/stat";
  const std::string stat = read_file(stat_path);
  // The command name is in parentheses and may itself contain ')' or spaces.
  const size_t close = stat.rfind(')');
  CNX_CHECK(close != std::string::npos, "process metrics: malformed ", stat_path);
  std::istringstream fields(stat.substr(close + 1));
  std::vector<std::string> f;
  for (std::string tok; fields >> tok;) f.push_back(tok);
  // f[0] is field 3 (state) of proc(5): utime=14, stime=15, starttime=22, vsize=23, rss=24.
  CNX_CHECK(f.size() >= 22, "process metrics: ", stat_path, " has ", f.size() + 2, " fields, expected >= 24");
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  ProcessStats s;
  s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
  s.start_time_seconds = boot_time_seconds() + std::stod(f[19]) / ticks;
  s.virtual_bytes = std::stod(f[20]);
  s.resident_bytes = std::stod(f[21]) * page;
  s.open_fds = count_fds(proc_dir);
  s.max_fds = max_open_files(proc_dir + "/limits");
  return s;
}

ProcessCollector::ProcessCollector(Labels constant_labels, std::string proc_dir)
    : constant_labels_(std::move(constant_labels)), proc_dir_(std::move(proc_dir)) {
  for (const auto& kv : constant_labels_) {
    CNX_CHECK(is_valid_label_name(kv.first), "ProcessCollector: invalid label name '", kv.first, "'");
  }
}

std::vector<MetricFamily> ProcessCollector::Collect() const {
  const ProcessStats s = read_process_stats(proc_dir_);
  std::vector<ClientMetric::Label> labels;
  for (const auto& [k, v] : constant_labels_) labels.push_back({k, v});
  auto family = [&](const char* name, const char* help, MetricType type, double value) {
    MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    ClientMetric m;
    m.label = labels;
    m.value = value;
    f.metric.push_back(std::move(m));
    return f;
  };
  std::vector<MetricFamily> out;
  out.push_back(family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                       MetricType::Counter, s.cpu_seconds));
  out.push_back(
      family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge, s.resident_bytes));
  out.push_back(
      family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge, s.virtual_bytes));
  out.push_back(family("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                       MetricType::Gauge, s.start_time_seconds));
  out.push_back(family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, s.open_fds));
  if (s.max_fds >= 0) {
    out.push_back(family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge, s.max_fds));
  }
  return out;
}

}  // namespace cnx::metrics
