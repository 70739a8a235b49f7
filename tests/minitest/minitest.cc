// minitest runner (see gtest/gtest.h).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"

namespace testing {

namespace {

struct Registered {
  std::string suite, name;
  std::function<std::unique_ptr<Test>()> make;
};

struct Registry {
  std::vector<Registered> tests;
  std::map<std::string, std::vector<internal::ParamPattern>> patterns;
  std::vector<std::function<void()>> deferred;
};

Registry& registry() {
  static Registry r;
  return r;
}

// State of the running test; failures may come from any thread.
struct Current {
  std::mutex mu;
  bool failed = false;
  bool skipped = false;
};
Current& current() {
  static Current c;
  return c;
}

struct Trace {
  const char* file;
  int line;
  std::string text;
};
thread_local std::vector<Trace> traces;

std::string g_filter = "*";
bool g_list = false;

// GoogleTest filter: POSITIVE[-NEGATIVE], each ':'-separated globs with * and ?.
bool glob(const char* p, const char* s) {
  if (*p == '\0') return *s == '\0';
  if (*p == '*') return glob(p + 1, s) || (*s != '\0' && glob(p, s + 1));
  if (*s == '\0') return false;
  return (*p == '?' || *p == *s) && glob(p + 1, s + 1);
}
bool any_glob(const std::string& patterns, const std::string& name) {
  size_t start = 0;
  while (start <= patterns.size()) {
    size_t end = patterns.find(':', start);
    if (end == std::string::npos) end = patterns.size();
    const std::string one = patterns.substr(start, end - start);
    if (!one.empty() && glob(one.c_str(), name.c_str())) return true;
    start = end + 1;
  }
  return false;
}
bool selected(const std::string& full) {
  const size_t dash = g_filter.find('-');
  const std::string pos = dash == std::string::npos ? g_filter : g_filter.substr(0, dash);
  const std::string neg = dash == std::string::npos ? "" : g_filter.substr(dash + 1);
  return any_glob(pos.empty() ? "*" : pos, full) && !any_glob(neg, full);
}

}  // namespace

namespace internal {

void register_test(const std::string& suite, const std::string& name, std::function<std::unique_ptr<Test>()> make) {
  registry().tests.push_back({suite, name, std::move(make)});
}

std::vector<ParamPattern>& param_patterns(const std::string& fixture) {
  return registry().patterns[fixture];
}

bool add_param_pattern(const std::string& fixture, const std::string& name,
                       std::function<std::unique_ptr<Test>()> make) {
  param_patterns(fixture).push_back({name, std::move(make)});
  return true;
}

void defer(std::function<void()> expand) {
  registry().deferred.push_back(std::move(expand));
}

void report_failure(const char* file, int line, const std::string& text, bool /*fatal*/) {
  std::string where;
  for (auto it = traces.rbegin(); it != traces.rend(); ++it) {
    where += std::string("\n") + it->file + ":" + std::to_string(it->line) + ": " + it->text;
  }
  std::lock_guard<std::mutex> lock(current().mu);
  current().failed = true;
  std::fprintf(stdout, "%s:%d: Failure\n%s%s%s\n", file, line, text.c_str(),
               where.empty() ? "" : "\nGoogle Test trace:", where.c_str());
  std::fflush(stdout);
}

void report_skip(const char* file, int line, const std::string& text) {
  std::lock_guard<std::mutex> lock(current().mu);
  current().skipped = true;
  std::fprintf(stdout, "%s:%d: Skipped\n%s\n", file, line, text.c_str());
}

void push_trace(const char* file, int line, const std::string& text) {
  traces.push_back({file, line, text});
}
void pop_trace() {
  traces.pop_back();
}

AssertionResult cmp_near(const char* ea, const char* eb, const char* et, double a, double b, double tol) {
  const double diff = std::fabs(a - b);
  if (diff <= tol) return AssertionSuccess();
  return AssertionFailure() << "The difference between " << ea << " and " << eb << " is " << diff << ", which exceeds "
                            << et << ", where\n"
                            << ea << " evaluates to " << a << ",\n"
                            << eb << " evaluates to " << b << ", and\n"
                            << et << " evaluates to " << tol << ".";
}

namespace {
template <class F, class U>
U biased(F v) {
  U bits;
  std::memcpy(&bits, &v, sizeof(v));
  const U sign = U(1) << (sizeof(U) * 8 - 1);
  return (bits & sign) ? ~bits + 1 : bits | sign;  // sign-magnitude -> monotone unsigned
}
template <class F, class U>
bool ulps_equal(F a, F b) {
  if (std::isnan(a) || std::isnan(b)) return false;
  const U x = biased<F, U>(a), y = biased<F, U>(b);
  return (x >= y ? x - y : y - x) <= 4;
}
}  // namespace

AssertionResult cmp_double_eq(const char* ea, const char* eb, double a, double b) {
  if (ulps_equal<double, uint64_t>(a, b)) return AssertionSuccess();
  std::ostringstream os;
  os.precision(17);
  os << "Expected equality of these values:\n  " << ea << "\n    Which is: " << a << "\n  " << eb
     << "\n    Which is: " << b;
  return AssertionFailure() << os.str();
}

AssertionResult cmp_float_eq(const char* ea, const char* eb, float a, float b) {
  if (ulps_equal<float, uint32_t>(a, b)) return AssertionSuccess();
  std::ostringstream os;
  os.precision(9);
  os << "Expected equality of these values:\n  " << ea << "\n    Which is: " << a << "\n  " << eb
     << "\n    Which is: " << b;
  return AssertionFailure() << os.str();
}

AssertionResult cmp_streq(const char* ea, const char* eb, const char* a, const char* b) {
  if ((a == nullptr && b == nullptr) || (a != nullptr && b != nullptr && std::strcmp(a, b) == 0)) {
    return AssertionSuccess();
  }
  return AssertionFailure() << "Expected equality of these values:\n  " << ea << "\n    Which is: " << (a ? a : "NULL")
                            << "\n  " << eb << "\n    Which is: " << (b ? b : "NULL");
}

}  // namespace internal

void InitGoogleTest(int* argc, char** argv) {
  if (const char* f = std::getenv("GTEST_FILTER"); f && *f) g_filter = f;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--gtest_filter=", 0) == 0) {
      g_filter = a.substr(std::strlen("--gtest_filter="));
    } else if (a == "--gtest_list_tests") {
      g_list = true;
    } else if (a.rfind("--gtest_", 0) == 0) {
      std::fprintf(stderr, "minitest: ignoring unsupported flag %s\n", a.c_str());
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
}

int RunAllTests() {
  Registry& reg = registry();
  for (auto& expand : reg.deferred) expand();
  reg.deferred.clear();
  if (g_list) {
    std::string suite;
    for (const auto& t : reg.tests) {
      if (t.suite != suite) std::printf("%s.\n", (suite = t.suite).c_str());
      std::printf("  %s\n", t.name.c_str());
    }
    return 0;
  }
  int passed = 0, failed = 0, skipped = 0;
  std::vector<std::string> failures;
  for (const auto& t : reg.tests) {
    const std::string full = t.suite + "." + t.name;
    if (!selected(full)) continue;
    {
      std::lock_guard<std::mutex> lock(current().mu);
      current().failed = false;
      current().skipped = false;
    }
    std::printf("[ RUN      ] %s\n", full.c_str());
    std::fflush(stdout);
    try {
      std::unique_ptr<Test> test = t.make();
      test->SetUp();
      bool skip = false;
      {
        std::lock_guard<std::mutex> lock(current().mu);
        skip = current().skipped || current().failed;
      }
      if (!skip) test->TestBody();
      test->TearDown();
    } catch (const std::exception& e) {
      internal::report_failure(
          "unknown file", 0,
          std::string("C++ exception with description \"") + e.what() + "\" thrown in the test body.", true);
    } catch (...) {
      internal::report_failure("unknown file", 0, "Unknown C++ exception thrown in the test body.", true);
    }
    std::lock_guard<std::mutex> lock(current().mu);
    if (current().failed) {
      ++failed;
      failures.push_back(full);
      std::printf("[  FAILED  ] %s\n", full.c_str());
    } else if (current().skipped) {
      ++skipped;
      std::printf("[  SKIPPED ] %s\n", full.c_str());
    } else {
      ++passed;
      std::printf("[       OK ] %s\n", full.c_str());
    }
    std::fflush(stdout);
  }
  for (const auto& f : failures) std::printf("[  FAILED  ] %s\n", f.c_str());
  std::printf("minitest: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  std::fflush(stdout);
  return failed > 0 ? 1 : 0;
}

}  // namespace testing
