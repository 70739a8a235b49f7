#pragma once
// ProcessCollector: the standard process_* metrics of this process, read from
// /proc at scrape time (Linux):
//   process_cpu_seconds_total       counter  user + system CPU time
//   process_resident_memory_bytes   gauge    resident set size
//   process_virtual_memory_bytes    gauge    virtual memory size
//   process_start_time_seconds      gauge    start time, seconds since the Unix epoch
//   process_open_fds                gauge    open file descriptors
//   process_max_fds                 gauge    RLIMIT_NOFILE soft limit
// Constant labels (e.g. job/rank/attempt) are attached to every sample.
// Collect() is thread-safe (it holds no state besides the labels).
#include <string>
#include <vector>

#include "common/metrics.h"

namespace cnx::metrics {

class ProcessCollector : public Collectable {
 public:
  explicit ProcessCollector(Labels constant_labels = {}, std::string proc_dir = "/proc/self");
  std::vector<MetricFamily> Collect() const override;

 private:
  Labels constant_labels_;
  std::string proc_dir_;
};

// The fields ProcessCollector reports; a failure to read /proc throws
// cnx::CheckError naming the file.
struct ProcessStats {
  double cpu_seconds = 0;
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double start_time_seconds = 0;
  double open_fds = 0;
  double max_fds = 0;
};
ProcessStats read_process_stats(const std::string& proc_dir = "/proc/self");

}  // namespace cnx::metrics
