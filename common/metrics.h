#pragma once
// cnx::metrics — a small Prometheus client (counters, gauges, histograms with
// labels, text exposition format 0.0.4).
//
// The API is shaped like prometheus-cpp's (Registry, Family<T>::Add(labels),
// Counter::Increment, Build*().Name().Help().Labels().Register(registry)) so a
// user could swap that library in; that is also why the metric methods are
// PascalCase instead of this project's snake_case.
//
//   auto registry = std::make_shared<Registry>();
//   auto& family = BuildCounter().Name("cnx_x_total").Help("...")
//                      .Labels({{"job", "j"}}).Register(*registry);
//   Counter& c = family.Add({{"rank", "0"}});
//   c.Increment();                       // hot path: lock-free
//   std::string text = serialize_text(registry->Collect());
//
// Threading contract:
// * Counter / Gauge / Histogram updates are lock-free (relaxed atomics; a
//   double is updated by a compare-and-swap loop). Safe from any thread.
// * Registry::Add, Family::Add / Remove and every Collect() take a mutex;
//   they are for set-up and scrapes, not for the training step.
// * A reference returned by Add stays valid until that metric (or its family)
//   is removed, or the registry is destroyed. The registry owns everything.
// Errors: invalid metric or label names, conflicting registrations and
// negative counter increments throw cnx::CheckError naming what was wrong.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <vector>

namespace cnx::metrics {

// Label name -> value. Sorted, so a label set has one canonical form.
using Labels = std::map<std::string, std::string>;

enum class MetricType { Counter, Gauge, Histogram };
const char* type_name(MetricType type);  // "counter" | "gauge" | "histogram"

// A snapshot of one time series (or one histogram), as collected for a scrape.
struct ClientMetric {
  struct Label {
    std::string name;
    std::string value;
  };
  struct Bucket {
    uint64_t cumulative_count = 0;
    double upper_bound = 0.0;  // +Inf for the last bucket
  };
  std::vector<Label> label;    // constant labels merged with the series' labels, sorted
  double value = 0.0;          // counter or gauge value
  uint64_t sample_count = 0;   // histogram
  double sample_sum = 0.0;     // histogram
  std::vector<Bucket> bucket;  // histogram, cumulative, ends with +Inf
};

struct MetricFamily {
  std::string name;
  std::string help;
  MetricType type = MetricType::Gauge;
  std::vector<ClientMetric> metric;
};

// Anything that can produce metric families at scrape time (a Registry, a
// ProcessCollector...). Collect() may be called from any thread.
class Collectable {
 public:
  virtual ~Collectable() = default;
  virtual std::vector<MetricFamily> Collect() const = 0;
};

namespace detail {
// A double updated atomically without a lock.
class AtomicDouble {
 public:
  explicit AtomicDouble(double v = 0.0) : bits_(v) {}
  void add(double delta) {
    double cur = bits_.load(std::memory_order_relaxed);
    while (!bits_.compare_exchange_weak(cur, cur + delta, std::memory_order_relaxed)) {
    }
  }
  void store(double v) { bits_.store(v, std::memory_order_relaxed); }
  double load() const { return bits_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> bits_;
};
}  // namespace detail

// Monotonic counter. Increment(v) with v < 0 or NaN throws CheckError.
class Counter {
 public:
  static constexpr MetricType kType = MetricType::Counter;
  Counter() = default;
  void Increment(double v = 1.0);
  double Value() const { return value_.load(); }
  ClientMetric Collect() const;

 private:
  detail::AtomicDouble value_;
};

class Gauge {
 public:
  static constexpr MetricType kType = MetricType::Gauge;
  Gauge() = default;
  explicit Gauge(double initial) : value_(initial) {}
  void Set(double v) { value_.store(v); }
  void Increment(double v = 1.0) { value_.add(v); }
  void Decrement(double v = 1.0) { value_.add(-v); }
  void SetToCurrentTime();  // seconds since the Unix epoch
  double Value() const { return value_.load(); }
  ClientMetric Collect() const;

 private:
  detail::AtomicDouble value_;
};

// Cumulative histogram. Boundaries are the finite, strictly increasing upper
// bounds (le); a +Inf bucket is always appended (a trailing +Inf in the input
// is accepted and dropped). A value v lands in the first bucket with v <= le.
// Collect() derives sample_count from the bucket counts, so `_count` always
// equals the `+Inf` bucket even while other threads observe.
class Histogram {
 public:
  using BucketBoundaries = std::vector<double>;
  static constexpr MetricType kType = MetricType::Histogram;
  explicit Histogram(const BucketBoundaries& boundaries);
  void Observe(double value);
  // Adds bucket_increments[i] observations to bucket i (size = boundaries + 1,
  // the last one being +Inf) and sum_of_values to the sum.
  void ObserveMultiple(const std::vector<double>& bucket_increments, double sum_of_values);
  const BucketBoundaries& boundaries() const { return boundaries_; }
  ClientMetric Collect() const;

 private:
  BucketBoundaries boundaries_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // boundaries_.size() + 1, not cumulative
  detail::AtomicDouble sum_;
};

// start, start*factor, ... (count values). start > 0, factor > 1, count >= 1.
Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count);
// start, start+width, ... (count values). width > 0, count >= 1.
Histogram::BucketBoundaries LinearBuckets(double start, double width, int count);

// All series of one metric name. Add() with a label set that exists returns
// the existing metric (the constructor arguments are then ignored).
template <class T>
class Family : public Collectable {
 public:
  Family(std::string name, std::string help, Labels constant_labels);
  template <class... Args>
  T& Add(const Labels& labels, Args&&... args) {
    return add_impl(labels, [&] { return std::make_unique<T>(std::forward<Args>(args)...); });
  }
  // Removes a metric returned by Add; a pointer not from this family is ignored.
  void Remove(T* metric);
  bool Has(const Labels& labels) const;
  const std::string& GetName() const { return name_; }
  const std::string& GetHelp() const { return help_; }
  const Labels& GetConstantLabels() const { return constant_labels_; }
  std::vector<MetricFamily> Collect() const override;

 private:
  template <class Make>
  T& add_impl(const Labels& labels, Make make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = metrics_.find(labels);
    if (it != metrics_.end()) return *it->second;
    check_labels(labels);
    auto inserted = metrics_.emplace(labels, make());
    return *inserted.first->second;
  }
  void check_labels(const Labels& labels) const;

  const std::string name_;
  const std::string help_;
  const Labels constant_labels_;
  mutable std::mutex mutex_;
  std::map<Labels, std::unique_ptr<T>> metrics_;
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// Owns families; Collect() returns them in registration order.
class Registry : public Collectable {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers a family. Registering the same name again with the same type,
  // help and constant labels returns the existing family; anything else that
  // clashes (other type or help, a histogram's _bucket/_sum/_count) throws.
  template <class T>
  Family<T>& Add(const std::string& name, const std::string& help, const Labels& constant_labels);
  // Removes a family registered here; returns false if it was not.
  template <class T>
  bool Remove(const Family<T>& family);
  std::vector<MetricFamily> Collect() const override;

 private:
  struct Entry {
    std::string name;
    MetricType type;
    std::unique_ptr<Collectable> family;
  };
  mutable std::mutex mutex_;
  std::vector<Entry> families_;
};

extern template Family<Counter>& Registry::Add<Counter>(const std::string&, const std::string&, const Labels&);
extern template Family<Gauge>& Registry::Add<Gauge>(const std::string&, const std::string&, const Labels&);
extern template Family<Histogram>& Registry::Add<Histogram>(const std::string&, const std::string&, const Labels&);
extern template bool Registry::Remove<Counter>(const Family<Counter>&);
extern template bool Registry::Remove<Gauge>(const Family<Gauge>&);
extern template bool Registry::Remove<Histogram>(const Family<Histogram>&);

namespace detail {
template <class T>
class Builder {
 public:
  Builder& Name(const std::string& name) {
    name_ = name;
    return *this;
  }
  Builder& Help(const std::string& help) {
    help_ = help;
    return *this;
  }
  // Constant labels, attached to every series of the family.
  Builder& Labels(const ::cnx::metrics::Labels& labels) {
    labels_ = labels;
    return *this;
  }
  Family<T>& Register(Registry& registry) const { return registry.Add<T>(name_, help_, labels_); }

 private:
  std::string name_;
  std::string help_;
  ::cnx::metrics::Labels labels_;
};
}  // namespace detail

inline detail::Builder<Counter> BuildCounter() {
  return {};
}
inline detail::Builder<Gauge> BuildGauge() {
  return {};
}
inline detail::Builder<Histogram> BuildHistogram() {
  return {};
}

// ---- Text exposition format 0.0.4 ----------------------------------------
inline constexpr const char* kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

// Writes families in the text format: "# HELP", "# TYPE", one line per
// sample; histograms as _bucket{le=...} (cumulative, ending with +Inf), _sum,
// _count. Families without series are skipped.
void serialize_text(std::ostream& os, const std::vector<MetricFamily>& families);
std::string serialize_text(const std::vector<MetricFamily>& families);

// prometheus-cpp's name for the same thing.
class TextSerializer {
 public:
  void Serialize(std::ostream& os, const std::vector<MetricFamily>& families) const { serialize_text(os, families); }
  std::string Serialize(const std::vector<MetricFamily>& families) const { return serialize_text(families); }
};

// Sample value: shortest text that parses back to the same double; "+Inf",
// "-Inf", "NaN".
std::string format_value(double v);
// Label value escaping: backslash, double quote and newline.
std::string escape_label_value(const std::string& v);
// HELP escaping: backslash and newline.
std::string escape_help(const std::string& v);
// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. Label names: [a-zA-Z_][a-zA-Z0-9_]*,
// not starting with "__" (reserved by Prometheus).
bool is_valid_metric_name(const std::string& name);
bool is_valid_label_name(const std::string& name);

}  // namespace cnx::metrics
