#include "common/metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "common/check.h"

namespace cnx::metrics {

const char* type_name(MetricType type) {
  switch (type) {
    case MetricType::Counter:
      return "counter";
    case MetricType::Gauge:
      return "gauge";
    case MetricType::Histogram:
      return "histogram";
  }
  return "untyped";
}

// ---- Names and escaping ----------------------------------------------------

bool is_valid_metric_name(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool is_valid_label_name(const std::string& name) {
  if (name.empty() || name.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_help(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  // Integral values below 2^53 print without exponent or fraction.
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    if (v == 0.0 && std::signbit(v)) return "-0";
    return buf;
  }
  // Shortest precision that round-trips.
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

namespace {

std::string describe(const Labels& labels) {
  std::string s = "{";
  for (const auto& [k, v] : labels) {
    if (s.size() > 1) s += ",";
    s += k + "=\"" + escape_label_value(v) + "\"";
  }
  return s + "}";
}

void check_label_names(const std::string& family, const Labels& labels, const char* what) {
  for (const auto& kv : labels) {
    CNX_CHECK(is_valid_label_name(kv.first), "metric '", family, "': invalid ", what, " label name '", kv.first,
              "' (expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with \"__\")");
  }
}

std::vector<ClientMetric::Label> merge_labels(const Labels& constant, const Labels& own) {
  Labels all = constant;
  all.insert(own.begin(), own.end());
  std::vector<ClientMetric::Label> out;
  out.reserve(all.size());
  for (const auto& [k, v] : all) out.push_back({k, v});
  return out;
}

}  // namespace

// ---- Metrics -----------------------------------------------------------------

void Counter::Increment(double v) {
  CNX_CHECK(v >= 0.0, "Counter::Increment: increment must be >= 0, got ", v);
  value_.add(v);
}

ClientMetric Counter::Collect() const {
  ClientMetric m;
  m.value = Value();
  return m;
}

void Gauge::SetToCurrentTime() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  Set(std::chrono::duration<double>(now).count());
}

ClientMetric Gauge::Collect() const {
  ClientMetric m;
  m.value = Value();
  return m;
}

Histogram::Histogram(const BucketBoundaries& boundaries) : boundaries_(boundaries) {
  if (!boundaries_.empty() && std::isinf(boundaries_.back()) && boundaries_.back() > 0) {
    boundaries_.pop_back();
  }
  for (size_t i = 0; i < boundaries_.size(); ++i) {
    CNX_CHECK(std::isfinite(boundaries_[i]), "Histogram: bucket boundary ", i, " is ", boundaries_[i],
              " (boundaries must be finite; +Inf is implicit)");
    CNX_CHECK(i == 0 || boundaries_[i - 1] < boundaries_[i], "Histogram: bucket boundaries must be strictly ",
              "increasing, but boundary ", i, " (", boundaries_[i], ") <= boundary ", i - 1, " (", boundaries_[i - 1],
              ")");
  }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(boundaries_.size() + 1);
  for (size_t i = 0; i <= boundaries_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // NaN compares false everywhere and lands in +Inf (as in the Go client).
  const size_t idx =
      std::isnan(value)
          ? boundaries_.size()
          : static_cast<size_t>(std::lower_bound(boundaries_.begin(), boundaries_.end(), value) - boundaries_.begin());
  counts_[idx].fetch_add(1, std::memory_order_relaxed);
  sum_.add(value);
}

void Histogram::ObserveMultiple(const std::vector<double>& bucket_increments, double sum_of_values) {
  CNX_CHECK(bucket_increments.size() == boundaries_.size() + 1, "Histogram::ObserveMultiple: expected ",
            boundaries_.size() + 1, " bucket increments (boundaries + Inf), got ", bucket_increments.size());
  for (size_t i = 0; i < bucket_increments.size(); ++i) {
    CNX_CHECK(bucket_increments[i] >= 0 && std::floor(bucket_increments[i]) == bucket_increments[i],
              "Histogram::ObserveMultiple: bucket increment ", i, " must be a non-negative integer, got ",
              bucket_increments[i]);
  }
  for (size_t i = 0; i < bucket_increments.size(); ++i) {
    counts_[i].fetch_add(static_cast<uint64_t>(bucket_increments[i]), std::memory_order_relaxed);
  }
  sum_.add(sum_of_values);
}

ClientMetric Histogram::Collect() const {
  ClientMetric m;
  uint64_t cumulative = 0;
  m.bucket.reserve(boundaries_.size() + 1);
  for (size_t i = 0; i <= boundaries_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    const double le = i < boundaries_.size() ? boundaries_[i] : std::numeric_limits<double>::infinity();
    m.bucket.push_back({cumulative, le});
  }
  m.sample_count = cumulative;
  m.sample_sum = sum_.load();
  return m;
}

Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count) {
  CNX_CHECK(start > 0 && factor > 1 && count >= 1, "ExponentialBuckets: need start > 0, factor > 1, count >= 1; got ",
            start, ", ", factor, ", ", count);
  Histogram::BucketBoundaries b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

Histogram::BucketBoundaries LinearBuckets(double start, double width, int count) {
  CNX_CHECK(width > 0 && count >= 1, "LinearBuckets: need width > 0, count >= 1; got ", width, ", ", count);
  Histogram::BucketBoundaries b;
  for (int i = 0; i < count; ++i) b.push_back(start + width * i);
  return b;
}

// ---- Family --------------------------------------------------------------------

template <class T>
Family<T>::Family(std::string name, std::string help, Labels constant_labels)
    : name_(std::move(name)), help_(std::move(help)), constant_labels_(std::move(constant_labels)) {
  CNX_CHECK(is_valid_metric_name(name_), "invalid metric name '", name_, "' (expected [a-zA-Z_:][a-zA-Z0-9_:]*)");
  check_label_names(name_, constant_labels_, "constant");
  if (T::kType == MetricType::Histogram) {
    CNX_CHECK(constant_labels_.count("le") == 0, "histogram '", name_, "': label name 'le' is reserved");
  }
}

template <class T>
void Family<T>::check_labels(const Labels& labels) const {
  check_label_names(name_, labels, "series");
  for (const auto& kv : labels) {
    CNX_CHECK(constant_labels_.count(kv.first) == 0, "metric '", name_, "': series label '", kv.first,
              "' repeats a constant label of the family (in ", describe(labels), ")");
    CNX_CHECK(!(T::kType == MetricType::Histogram && kv.first == "le"), "histogram '", name_,
              "': label name 'le' is reserved");
  }
}

template <class T>
void Family<T>::Remove(T* metric) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = metrics_.begin(); it != metrics_.end(); ++it) {
    if (it->second.get() == metric) {
      metrics_.erase(it);
      return;
    }
  }
}

template <class T>
bool Family<T>::Has(const Labels& labels) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return metrics_.count(labels) > 0;
}

template <class T>
std::vector<MetricFamily> Family<T>::Collect() const {
  MetricFamily f;
  f.name = name_;
  f.help = help_;
  f.type = T::kType;
  std::lock_guard<std::mutex> lock(mutex_);
  if (metrics_.empty()) return {};
  f.metric.reserve(metrics_.size());
  for (const auto& [labels, metric] : metrics_) {
    ClientMetric m = metric->Collect();
    m.label = merge_labels(constant_labels_, labels);
    f.metric.push_back(std::move(m));
  }
  return {std::move(f)};
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry ------------------------------------------------------------------

namespace {
// The sample names a family of this type writes.
std::vector<std::string> sample_names(const std::string& name, MetricType type) {
  if (type == MetricType::Histogram) return {name + "_bucket", name + "_sum", name + "_count"};
  return {name};
}
}  // namespace

template <class T>
Family<T>& Registry::Add(const std::string& name, const std::string& help, const Labels& constant_labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& e : families_) {
    if (e.name == name) {
      CNX_CHECK(e.type == T::kType, "metric '", name, "' is already registered as a ", type_name(e.type),
                ", cannot register it as a ", type_name(T::kType));
      auto* existing = static_cast<Family<T>*>(e.family.get());
      CNX_CHECK(existing->GetHelp() == help && existing->GetConstantLabels() == constant_labels, "metric '", name,
                "' is already registered with other help text or constant labels");
      return *existing;
    }
    for (const auto& mine : sample_names(name, T::kType)) {
      for (const auto& theirs : sample_names(e.name, e.type)) {
        CNX_CHECK(mine != theirs, "metric '", name, "' (", type_name(T::kType), ") clashes with the ",
                  type_name(e.type), " '", e.name, "': both write samples named '", mine, "'");
      }
    }
  }
  auto family = std::make_unique<Family<T>>(name, help, constant_labels);
  Family<T>& ref = *family;
  families_.push_back({name, T::kType, std::move(family)});
  return ref;
}

template <class T>
bool Registry::Remove(const Family<T>& family) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = families_.begin(); it != families_.end(); ++it) {
    if (it->family.get() == &family) {
      families_.erase(it);
      return true;
    }
  }
  return false;
}

std::vector<MetricFamily> Registry::Collect() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<MetricFamily> out;
  for (const auto& e : families_) {
    for (auto& f : e.family->Collect()) out.push_back(std::move(f));
  }
  return out;
}

template Family<Counter>& Registry::Add<Counter>(const std::string&, const std::string&, const Labels&);
template Family<Gauge>& Registry::Add<Gauge>(const std::string&, const std::string&, const Labels&);
template Family<Histogram>& Registry::Add<Histogram>(const std::string&, const std::string&, const Labels&);
template bool Registry::Remove<Counter>(const Family<Counter>&);
template bool Registry::Remove<Gauge>(const Family<Gauge>&);
template bool Registry::Remove<Histogram>(const Family<Histogram>&);

// ---- Text format ---------------------------------------------------------------

namespace {

void write_labels(std::ostream& os, const std::vector<ClientMetric::Label>& labels, const char* extra_name = nullptr,
                  const std::string& extra_value = {}) {
  if (labels.empty() && extra_name == nullptr) return;
  os << '{';
  bool first = true;
  for (const auto& l : labels) {
    if (!first) os << ',';
    first = false;
    os << l.name << "=\"" << escape_label_value(l.value) << '"';
  }
  if (extra_name != nullptr) {
    if (!first) os << ',';
    os << extra_name << "=\"" << escape_label_value(extra_value) << '"';
  }
  os << '}';
}

}  // namespace

void serialize_text(std::ostream& os, const std::vector<MetricFamily>& families) {
  for (const auto& f : families) {
    if (f.metric.empty()) continue;
    os << "# HELP " << f.name << ' ' << escape_help(f.help) << '\n';
    os << "# TYPE " << f.name << ' ' << type_name(f.type) << '\n';
    for (const auto& m : f.metric) {
      if (f.type == MetricType::Histogram) {
        for (const auto& b : m.bucket) {
          os << f.name << "_bucket";
          write_labels(os, m.label, "le", format_value(b.upper_bound));
          os << ' ' << b.cumulative_count << '\n';
        }
        os << f.name << "_sum";
        write_labels(os, m.label);
        os << ' ' << format_value(m.sample_sum) << '\n';
        os << f.name << "_count";
        write_labels(os, m.label);
        os << ' ' << m.sample_count << '\n';
      } else {
        os << f.name;
        write_labels(os, m.label);
        os << ' ' << format_value(m.value) << '\n';
      }
    }
  }
}

std::string serialize_text(const std::vector<MetricFamily>& families) {
  std::ostringstream os;
  serialize_text(os, families);
  return os.str();
}

}  // namespace cnx::metrics
