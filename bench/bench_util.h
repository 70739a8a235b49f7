// Small helpers the benchmarks share: process CPU time and the median.
#pragma once

#include <time.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace cnx::bench {

// CPU seconds of the whole process, all threads (CLOCK_PROCESS_CPUTIME_ID).
// On a shared machine, the work a timed region did without the time it
// waited for a core: with one thread, steadier than wall time.
inline double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The median (the mean of the two middle values for an even count); NaN for
// no values.
inline double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

}  // namespace cnx::bench
