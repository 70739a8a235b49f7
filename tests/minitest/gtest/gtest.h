#pragma once
// minitest: the project's own small test harness with the subset of the
// GoogleTest API our core tests use. CMake builds the core tests against it
// when GoogleTest is not installed (a pip-PyTorch GPU machine has none); with
// GoogleTest present the real one is used.
//
// Supported: TEST, TEST_F, TEST_P + INSTANTIATE_TEST_SUITE_P (Values,
// ValuesIn, Bool, Combine, optional name generator taking TestParamInfo),
// EXPECT_/ASSERT_ {TRUE, FALSE, EQ, NE, LT, LE, GT, GE, NEAR, DOUBLE_EQ,
// FLOAT_EQ, STREQ, THROW, NO_THROW, ANY_THROW}, FAIL, ADD_FAILURE, SUCCEED,
// GTEST_SKIP, SCOPED_TRACE, AssertionResult, streaming a message into any
// of them, InitGoogleTest, RUN_ALL_TESTS, --gtest_filter (and GTEST_FILTER),
// --gtest_list_tests. Failures may be recorded from any thread.
//
// Output: one "[ RUN ]" / "[ OK ]" / "[ FAILED ]" / "[ SKIPPED ]" line per
// test as GoogleTest prints them, then "N passed, M failed, K skipped";
// RUN_ALL_TESTS returns 1 when a test failed, else 0.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace testing {

// ---------------------------------------------------------------------------
// Messages and values
// ---------------------------------------------------------------------------
namespace internal {

template <class T, class = void>
struct Streamable : std::false_type {};
template <class T>
struct Streamable<T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>>
    : std::true_type {};

template <class T, class = void>
struct Iterable : std::false_type {};
template <class T>
struct Iterable<
    T, std::void_t<decltype(std::begin(std::declval<const T&>())), decltype(std::end(std::declval<const T&>()))>>
    : std::true_type {};

template <class T>
void print_value(std::ostream& os, const T& v);

template <class Tuple, size_t... I>
void print_tuple(std::ostream& os, const Tuple& t, std::index_sequence<I...>) {
  os << "(";
  ((os << (I == 0 ? "" : ", "), print_value(os, std::get<I>(t))), ...);
  os << ")";
}

template <class T>
struct IsTuple : std::false_type {};
template <class... Ts>
struct IsTuple<std::tuple<Ts...>> : std::true_type {};

template <class T>
void print_value(std::ostream& os, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "true" : "false");
  } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
    os << "nullptr";
  } else if constexpr (std::is_enum_v<T> && !Streamable<T>::value) {
    os << static_cast<long long>(v);
  } else if constexpr (Streamable<T>::value) {
    os << v;
  } else if constexpr (IsTuple<T>::value) {
    print_tuple(os, v, std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (Iterable<T>::value) {
    os << "{";
    bool first = true;
    for (const auto& e : v) {
      os << (first ? "" : ", ");
      print_value(os, e);
      first = false;
    }
    os << "}";
  } else {
    os << "<" << sizeof(T) << "-byte object>";
  }
}

template <class T>
std::string to_text(const T& v) {
  std::ostringstream os;
  print_value(os, v);
  return os.str();
}

}  // namespace internal

// Text streamed into an assertion (EXPECT_EQ(a, b) << "context").
class Message {
 public:
  Message() : os_(std::make_shared<std::ostringstream>()) {}
  template <class T>
  Message& operator<<(const T& v) {
    internal::print_value(*os_, v);
    return *this;
  }
  Message& operator<<(std::ostream& (*manip)(std::ostream&)) {
    manip(*os_);
    return *this;
  }
  std::string str() const { return os_->str(); }

 private:
  std::shared_ptr<std::ostringstream> os_;
};

class AssertionResult {
 public:
  explicit AssertionResult(bool success) : success_(success), message_(std::make_shared<std::string>()) {}
  explicit operator bool() const { return success_; }
  template <class T>
  AssertionResult& operator<<(const T& v) {
    *message_ += internal::to_text(v);
    return *this;
  }
  const char* message() const { return message_->c_str(); }
  const char* failure_message() const { return message(); }

 private:
  bool success_;
  std::shared_ptr<std::string> message_;
};

inline AssertionResult AssertionSuccess() {
  return AssertionResult(true);
}
inline AssertionResult AssertionFailure() {
  return AssertionResult(false);
}

// ---------------------------------------------------------------------------
// Tests and registration
// ---------------------------------------------------------------------------
class Test {
 public:
  virtual ~Test() = default;
  virtual void SetUp() {}
  virtual void TearDown() {}
  virtual void TestBody() = 0;
};

template <class T>
class WithParamInterface {
 public:
  using ParamType = T;
  virtual ~WithParamInterface() = default;
  static const T& GetParam() { return *slot(); }
  // The value of the running instance (set by the harness before SetUp).
  static const T*& slot() {
    static const T* current = nullptr;
    return current;
  }
};

template <class T>
class TestWithParam : public Test, public WithParamInterface<T> {};

template <class T>
struct TestParamInfo {
  TestParamInfo(const T& p, size_t i) : param(p), index(i) {}
  T param;
  size_t index;
};

void InitGoogleTest(int* argc, char** argv);
int RunAllTests();

namespace internal {

void register_test(const std::string& suite, const std::string& name, std::function<std::unique_ptr<Test>()> make);

// TEST_P bodies waiting for an INSTANTIATE_TEST_SUITE_P of their fixture.
struct ParamPattern {
  std::string name;
  std::function<std::unique_ptr<Test>()> make;
};
std::vector<ParamPattern>& param_patterns(const std::string& fixture);
// Runs `expand` once every static registration is done (RUN_ALL_TESTS).
void defer(std::function<void()> expand);

bool add_param_pattern(const std::string& fixture, const std::string& name,
                       std::function<std::unique_ptr<Test>()> make);

// Failure reporting (any thread).
void report_failure(const char* file, int line, const std::string& text, bool fatal);
void report_skip(const char* file, int line, const std::string& text);
void push_trace(const char* file, int line, const std::string& text);
void pop_trace();

class AssertHelper {
 public:
  AssertHelper(const char* file, int line, std::string summary, bool fatal)
      : file_(file), line_(line), summary_(std::move(summary)), fatal_(fatal) {}
  void operator=(const Message& m) const {
    const std::string extra = m.str();
    report_failure(file_, line_, extra.empty() ? summary_ : summary_ + "\n" + extra, fatal_);
  }

 private:
  const char* file_;
  int line_;
  std::string summary_;
  bool fatal_;
};

class SkipHelper {
 public:
  SkipHelper(const char* file, int line) : file_(file), line_(line) {}
  void operator=(const Message& m) const { report_skip(file_, line_, m.str()); }

 private:
  const char* file_;
  int line_;
};

class ScopedTrace {
 public:
  template <class T>
  ScopedTrace(const char* file, int line, const T& what) {
    push_trace(file, line, to_text(what));
  }
  ~ScopedTrace() { pop_trace(); }
  ScopedTrace(const ScopedTrace&) = delete;
  ScopedTrace& operator=(const ScopedTrace&) = delete;
};

// Comparisons ---------------------------------------------------------------
template <class A, class B>
AssertionResult compare(bool ok, const char* op, const char* ea, const char* eb, const A& a, const B& b) {
  if (ok) return AssertionSuccess();
  return AssertionFailure() << "Expected: (" << ea << ") " << op << " (" << eb << "), actual: " << to_text(a) << " vs "
                            << to_text(b);
}

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
template <class A, class B>
AssertionResult cmp_eq(const char* ea, const char* eb, const A& a, const B& b) {
  if (a == b) return AssertionSuccess();
  return AssertionFailure() << "Expected equality of these values:\n  " << ea << "\n    Which is: " << to_text(a)
                            << "\n  " << eb << "\n    Which is: " << to_text(b);
}
template <class A, class B>
AssertionResult cmp_ne(const char* ea, const char* eb, const A& a, const B& b) {
  return compare(a != b, "!=", ea, eb, a, b);
}
template <class A, class B>
AssertionResult cmp_lt(const char* ea, const char* eb, const A& a, const B& b) {
  return compare(a < b, "<", ea, eb, a, b);
}
template <class A, class B>
AssertionResult cmp_le(const char* ea, const char* eb, const A& a, const B& b) {
  return compare(a <= b, "<=", ea, eb, a, b);
}
template <class A, class B>
AssertionResult cmp_gt(const char* ea, const char* eb, const A& a, const B& b) {
  return compare(a > b, ">", ea, eb, a, b);
}
template <class A, class B>
AssertionResult cmp_ge(const char* ea, const char* eb, const A& a, const B& b) {
  return compare(a >= b, ">=", ea, eb, a, b);
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

AssertionResult cmp_near(const char* ea, const char* eb, const char* et, double a, double b, double tol);
// Within 4 units in the last place (GoogleTest's DOUBLE_EQ / FLOAT_EQ).
AssertionResult cmp_double_eq(const char* ea, const char* eb, double a, double b);
AssertionResult cmp_float_eq(const char* ea, const char* eb, float a, float b);
AssertionResult cmp_streq(const char* ea, const char* eb, const char* a, const char* b);

inline AssertionResult as_result(const AssertionResult& r) {
  return r;
}
template <class T>
AssertionResult as_result(const T& v) {
  return AssertionResult(static_cast<bool>(v));
}
inline AssertionResult check_bool(const AssertionResult& r, const char* text, bool expected) {
  if (static_cast<bool>(r) == expected) return AssertionSuccess();
  AssertionResult out = AssertionFailure();
  out << "Value of: " << text << "\n  Actual: " << (expected ? "false" : "true")
      << "\nExpected: " << (expected ? "true" : "false");
  if (*r.message()) out << "\n" << r.message();
  return out;
}

// Outcome of running a statement for EXPECT_THROW and friends.
struct ThrowOutcome {
  int kind = 0;  // 0 nothing thrown, 1 the expected type, 2 another exception
  std::string what;
};

template <class E>
ThrowOutcome classify(std::exception_ptr thrown) {
  try {
    std::rethrow_exception(thrown);
  } catch (const E&) {
    return {1, ""};
  } catch (...) {
  }
  try {
    std::rethrow_exception(thrown);
  } catch (const std::exception& e) {
    return {2, e.what()};
  } catch (...) {
  }
  return {2, "an exception not derived from std::exception"};
}

// Parameter generators ------------------------------------------------------
template <class... Ts>
class ValueList {
 public:
  explicit ValueList(Ts... v) : values_(std::move(v)...) {}
  template <class T>
  std::vector<T> as() const {
    std::vector<T> out;
    std::apply([&](const auto&... v) { (out.push_back(static_cast<T>(v)), ...); }, values_);
    return out;
  }

 private:
  std::tuple<Ts...> values_;
};

template <class E>
class ValueVector {
 public:
  explicit ValueVector(std::vector<E> v) : values_(std::move(v)) {}
  template <class T>
  std::vector<T> as() const {
    return std::vector<T>(values_.begin(), values_.end());
  }

 private:
  std::vector<E> values_;
};

template <class... Gs>
class CartesianProduct {
 public:
  explicit CartesianProduct(Gs... g) : gens_(std::move(g)...) {}
  template <class Tuple>
  std::vector<Tuple> as() const {
    return expand<Tuple>(std::make_index_sequence<sizeof...(Gs)>{});
  }

 private:
  template <class Tuple, size_t... I>
  std::vector<Tuple> expand(std::index_sequence<I...>) const {
    auto lists = std::make_tuple(std::get<I>(gens_).template as<std::tuple_element_t<I, Tuple>>()...);
    std::vector<Tuple> out{Tuple{}};
    // Leftmost generator varies slowest, as in GoogleTest.
    (
        [&] {
          std::vector<Tuple> next;
          for (const Tuple& prefix : out) {
            for (const auto& v : std::get<I>(lists)) {
              Tuple t = prefix;
              std::get<I>(t) = v;
              next.push_back(t);
            }
          }
          out = std::move(next);
        }(),
        ...);
    return out;
  }
  std::tuple<Gs...> gens_;
};

template <class Fixture, class Gen, class Namer>
bool instantiate(const char* prefix, const char* fixture, const Gen& gen, Namer namer) {
  using P = typename Fixture::ParamType;
  const std::vector<P> list = gen.template as<P>();
  auto values = std::make_shared<std::deque<P>>(list.begin(), list.end());  // stable addresses, also for bool
  const std::string suite = std::string(prefix) + "/" + fixture;
  const std::string fixture_name = fixture;
  defer([values, suite, fixture_name, namer] {
    for (const ParamPattern& pattern : param_patterns(fixture_name)) {
      for (size_t i = 0; i < values->size(); ++i) {
        const P* value = &(*values)[i];
        auto make = pattern.make;
        register_test(suite, pattern.name + "/" + namer(TestParamInfo<P>((*values)[i], i)), [values, value, make] {
          Fixture::slot() = value;
          return make();
        });
      }
    }
  });
  return true;
}

template <class Fixture, class Gen>
bool instantiate(const char* prefix, const char* fixture, const Gen& gen) {
  using P = typename Fixture::ParamType;
  return instantiate<Fixture>(prefix, fixture, gen,
                              [](const TestParamInfo<P>& info) { return std::to_string(info.index); });
}

}  // namespace internal

template <class... Ts>
internal::ValueList<Ts...> Values(Ts... v) {
  return internal::ValueList<Ts...>(std::move(v)...);
}
template <class C>
auto ValuesIn(const C& c) {
  using E = std::decay_t<decltype(*std::begin(c))>;
  return internal::ValueVector<E>(std::vector<E>(std::begin(c), std::end(c)));
}
inline internal::ValueList<bool, bool> Bool() {
  return internal::ValueList<bool, bool>(false, true);
}
template <class... Gs>
internal::CartesianProduct<Gs...> Combine(Gs... g) {
  return internal::CartesianProduct<Gs...>(std::move(g)...);
}

}  // namespace testing

// ---------------------------------------------------------------------------
// Macros
// ---------------------------------------------------------------------------
#define CNX_MT_CAT_(a, b) a##b
#define CNX_MT_CAT(a, b) CNX_MT_CAT_(a, b)
#define CNX_MT_CLASS_(suite, name) CNX_MT_CAT(CNX_MT_CAT(suite, _), CNX_MT_CAT(name, _Test))

#define CNX_MT_TEST_(suite, name, parent, register_expr)                                        \
  class CNX_MT_CLASS_(suite, name) : public parent {                                            \
   public:                                                                                      \
    void TestBody() override;                                                                   \
  };                                                                                            \
  static const bool CNX_MT_CAT(cnx_mt_registered_, CNX_MT_CLASS_(suite, name)) = register_expr; \
  void CNX_MT_CLASS_(suite, name)::TestBody()

#define TEST(suite, name)                                                                                            \
  CNX_MT_TEST_(suite, name, ::testing::Test,                                                                         \
               (::testing::internal::register_test(                                                                  \
                    #suite, #name, [] { return std::unique_ptr<::testing::Test>(new CNX_MT_CLASS_(suite, name)); }), \
                true))
#define TEST_F(fixture, name)                                                                                   \
  CNX_MT_TEST_(                                                                                                 \
      fixture, name, fixture,                                                                                   \
      (::testing::internal::register_test(                                                                      \
           #fixture, #name, [] { return std::unique_ptr<::testing::Test>(new CNX_MT_CLASS_(fixture, name)); }), \
       true))
#define TEST_P(fixture, name)                                                                       \
  CNX_MT_TEST_(fixture, name, fixture, ::testing::internal::add_param_pattern(#fixture, #name, [] { \
                 return std::unique_ptr<::testing::Test>(new CNX_MT_CLASS_(fixture, name));         \
               }))
#define INSTANTIATE_TEST_SUITE_P(prefix, fixture, ...)                              \
  static const bool CNX_MT_CAT(cnx_mt_instantiated_, CNX_MT_CAT(prefix, fixture)) = \
      ::testing::internal::instantiate<fixture>(#prefix, #fixture, __VA_ARGS__)

#define RUN_ALL_TESTS() ::testing::RunAllTests()

// Assertion core: `on_failure` receives the failure text.
#define CNX_MT_BLOCKER_ \
  switch (0)            \
  case 0:               \
  default:
#define CNX_MT_FATAL_(text) \
  return ::testing::internal::AssertHelper(__FILE__, __LINE__, text, true) = ::testing::Message()
#define CNX_MT_NONFATAL_(text) ::testing::internal::AssertHelper(__FILE__, __LINE__, text, false) = ::testing::Message()
#define CNX_MT_CHECK_(result, on_failure)                       \
  CNX_MT_BLOCKER_                                               \
  if (const ::testing::AssertionResult cnx_mt_ar_ = (result)) { \
  } else                                                        \
    on_failure(cnx_mt_ar_.failure_message())

#define EXPECT_TRUE(c) \
  CNX_MT_CHECK_(::testing::internal::check_bool(::testing::internal::as_result(c), #c, true), CNX_MT_NONFATAL_)
#define EXPECT_FALSE(c) \
  CNX_MT_CHECK_(::testing::internal::check_bool(::testing::internal::as_result(c), #c, false), CNX_MT_NONFATAL_)
#define ASSERT_TRUE(c) \
  CNX_MT_CHECK_(::testing::internal::check_bool(::testing::internal::as_result(c), #c, true), CNX_MT_FATAL_)
#define ASSERT_FALSE(c) \
  CNX_MT_CHECK_(::testing::internal::check_bool(::testing::internal::as_result(c), #c, false), CNX_MT_FATAL_)

#define CNX_MT_CMP_(fn, a, b, on_failure) CNX_MT_CHECK_(::testing::internal::fn(#a, #b, a, b), on_failure)
#define EXPECT_EQ(a, b) CNX_MT_CMP_(cmp_eq, a, b, CNX_MT_NONFATAL_)
#define EXPECT_NE(a, b) CNX_MT_CMP_(cmp_ne, a, b, CNX_MT_NONFATAL_)
#define EXPECT_LT(a, b) CNX_MT_CMP_(cmp_lt, a, b, CNX_MT_NONFATAL_)
#define EXPECT_LE(a, b) CNX_MT_CMP_(cmp_le, a, b, CNX_MT_NONFATAL_)
#define EXPECT_GT(a, b) CNX_MT_CMP_(cmp_gt, a, b, CNX_MT_NONFATAL_)
#define EXPECT_GE(a, b) CNX_MT_CMP_(cmp_ge, a, b, CNX_MT_NONFATAL_)
#define EXPECT_DOUBLE_EQ(a, b) CNX_MT_CMP_(cmp_double_eq, a, b, CNX_MT_NONFATAL_)
#define EXPECT_FLOAT_EQ(a, b) CNX_MT_CMP_(cmp_float_eq, a, b, CNX_MT_NONFATAL_)
#define EXPECT_STREQ(a, b) CNX_MT_CMP_(cmp_streq, a, b, CNX_MT_NONFATAL_)
#define ASSERT_EQ(a, b) CNX_MT_CMP_(cmp_eq, a, b, CNX_MT_FATAL_)
#define ASSERT_NE(a, b) CNX_MT_CMP_(cmp_ne, a, b, CNX_MT_FATAL_)
#define ASSERT_LT(a, b) CNX_MT_CMP_(cmp_lt, a, b, CNX_MT_FATAL_)
#define ASSERT_LE(a, b) CNX_MT_CMP_(cmp_le, a, b, CNX_MT_FATAL_)
#define ASSERT_GT(a, b) CNX_MT_CMP_(cmp_gt, a, b, CNX_MT_FATAL_)
#define ASSERT_GE(a, b) CNX_MT_CMP_(cmp_ge, a, b, CNX_MT_FATAL_)
#define ASSERT_DOUBLE_EQ(a, b) CNX_MT_CMP_(cmp_double_eq, a, b, CNX_MT_FATAL_)
#define ASSERT_FLOAT_EQ(a, b) CNX_MT_CMP_(cmp_float_eq, a, b, CNX_MT_FATAL_)
#define ASSERT_STREQ(a, b) CNX_MT_CMP_(cmp_streq, a, b, CNX_MT_FATAL_)
#define EXPECT_NEAR(a, b, tol) CNX_MT_CHECK_(::testing::internal::cmp_near(#a, #b, #tol, a, b, tol), CNX_MT_NONFATAL_)
#define ASSERT_NEAR(a, b, tol) CNX_MT_CHECK_(::testing::internal::cmp_near(#a, #b, #tol, a, b, tol), CNX_MT_FATAL_)

// kind: 0 nothing thrown, 1 the expected type, 2 another exception.
#define CNX_MT_RUN_(stmt, expected)                                             \
  [&]() -> ::testing::internal::ThrowOutcome {                                  \
    try {                                                                       \
      stmt;                                                                     \
    } catch (...) {                                                             \
      return ::testing::internal::classify<expected>(std::current_exception()); \
    }                                                                           \
    return {0, ""};                                                             \
  }()
#define CNX_MT_THROW_(stmt, expected, on_failure)                                                             \
  CNX_MT_BLOCKER_                                                                                             \
  if (const ::testing::internal::ThrowOutcome cnx_mt_o_ = CNX_MT_RUN_(stmt, expected); cnx_mt_o_.kind == 1) { \
  } else                                                                                                      \
    on_failure(std::string("Expected: " #stmt " throws an exception of type " #expected ".\n  Actual: ") +    \
               (cnx_mt_o_.kind == 0 ? std::string("it throws nothing.") : "it throws another: " + cnx_mt_o_.what))
#define CNX_MT_NO_THROW_(stmt, on_failure)                                                                      \
  CNX_MT_BLOCKER_                                                                                               \
  if (const ::testing::internal::ThrowOutcome cnx_mt_o_ = CNX_MT_RUN_(stmt, ::testing::internal::ThrowOutcome); \
      cnx_mt_o_.kind == 0) {                                                                                    \
  } else                                                                                                        \
    on_failure(std::string("Expected: " #stmt " doesn't throw an exception.\n  Actual: it throws: ") + cnx_mt_o_.what)
#define CNX_MT_ANY_THROW_(stmt, on_failure)                                                                     \
  CNX_MT_BLOCKER_                                                                                               \
  if (const ::testing::internal::ThrowOutcome cnx_mt_o_ = CNX_MT_RUN_(stmt, ::testing::internal::ThrowOutcome); \
      cnx_mt_o_.kind != 0) {                                                                                    \
  } else                                                                                                        \
    on_failure("Expected: " #stmt " throws an exception.\n  Actual: it doesn't.")
#define EXPECT_THROW(stmt, ex) CNX_MT_THROW_(stmt, ex, CNX_MT_NONFATAL_)
#define ASSERT_THROW(stmt, ex) CNX_MT_THROW_(stmt, ex, CNX_MT_FATAL_)
#define EXPECT_NO_THROW(stmt) CNX_MT_NO_THROW_(stmt, CNX_MT_NONFATAL_)
#define ASSERT_NO_THROW(stmt) CNX_MT_NO_THROW_(stmt, CNX_MT_FATAL_)
#define EXPECT_ANY_THROW(stmt) CNX_MT_ANY_THROW_(stmt, CNX_MT_NONFATAL_)
#define ASSERT_ANY_THROW(stmt) CNX_MT_ANY_THROW_(stmt, CNX_MT_FATAL_)

#define FAIL() CNX_MT_FATAL_("Failed")
#define ADD_FAILURE() CNX_MT_NONFATAL_("Failed")
#define SUCCEED() ::testing::Message()
#define GTEST_SKIP() return ::testing::internal::SkipHelper(__FILE__, __LINE__) = ::testing::Message()
#define SCOPED_TRACE(what) \
  const ::testing::internal::ScopedTrace CNX_MT_CAT(cnx_mt_trace_, __LINE__)(__FILE__, __LINE__, (what))
