// Cases for minitest's self-test (tests/minitest/CMakeLists.txt): Pass*
// and */Params* must pass (one skipped), every Fail.* must be counted as a
// failure.
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace {

enum class Colour { kRed, kBlue };

TEST(Pass, Comparisons) {
  EXPECT_EQ(2 + 2, 4);
  EXPECT_NE(1, 2);
  EXPECT_LT(1, 2);
  EXPECT_LE(2, 2);
  EXPECT_GT(3.0, 2.5);
  EXPECT_GE(3, 3);
  EXPECT_NEAR(1.0, 1.05, 0.1);
  EXPECT_DOUBLE_EQ(0.1 + 0.2, 0.3);
  EXPECT_FLOAT_EQ(0.1f + 0.2f, 0.3f);
  EXPECT_STREQ("abc", std::string("abc").c_str());
  EXPECT_TRUE(true);
  EXPECT_FALSE(false);
  EXPECT_EQ(std::vector<int>({1, 2}), std::vector<int>({1, 2})) << "vectors compare";
  EXPECT_EQ(Colour::kRed, Colour::kRed);
  EXPECT_EQ(std::string("x"), "x");
  EXPECT_TRUE(::testing::AssertionSuccess());
}

TEST(Pass, Exceptions) {
  EXPECT_THROW(throw std::invalid_argument("x"), std::invalid_argument);
  EXPECT_THROW(throw std::invalid_argument("x"), std::exception);
  EXPECT_NO_THROW({
    int x = 1;
    (void)x;
  });
  EXPECT_ANY_THROW(throw 3);
  ASSERT_THROW(throw std::runtime_error("y"), std::runtime_error);
}

TEST(Pass, AssertContinuesOnSuccess) {
  int reached = 0;
  ASSERT_EQ(1, 1);
  ASSERT_TRUE(true) << "never printed";
  ++reached;
  EXPECT_EQ(reached, 1);
}

TEST(Pass, Skip) {
  GTEST_SKIP() << "skipped on purpose";
  FAIL() << "a skipped test must not run on";
}

TEST(Pass, Trace) {
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_GE(i, 0);
  }
}

class PassFixture : public ::testing::Test {
 protected:
  void SetUp() override { value_ = 42; }
  int value_ = 0;
};

TEST_F(PassFixture, SetUpRan) {
  EXPECT_EQ(value_, 42);
}

class Params : public ::testing::TestWithParam<std::tuple<int, double>> {};

TEST_P(Params, ValuesFromTheGrid) {
  const auto [a, b] = GetParam();
  EXPECT_TRUE(a >= 1 && a <= 3) << a;
  EXPECT_TRUE(b == 0.5 || b == 1.5) << b;
}

TEST_P(Params, EachCombinationOnce) {
  static std::set<std::tuple<int, double>> seen;
  EXPECT_TRUE(seen.insert(GetParam()).second);
}

INSTANTIATE_TEST_SUITE_P(Grid, Params, ::testing::Combine(::testing::Values(1, 2, 3), ::testing::Values(0.5, 1.5)));

class ParamsNamed : public ::testing::TestWithParam<std::string> {};
TEST_P(ParamsNamed, NameIsTheValue) {
  EXPECT_TRUE(GetParam() == "x" || GetParam() == "y");
}
INSTANTIATE_TEST_SUITE_P(Words, ParamsNamed, ::testing::Values(std::string("x"), std::string("y")),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

class ParamsIn : public ::testing::TestWithParam<int> {};
TEST_P(ParamsIn, FromAVector) {
  EXPECT_GE(GetParam(), 4);
}
INSTANTIATE_TEST_SUITE_P(Vec, ParamsIn, ::testing::ValuesIn(std::vector<int>{4, 5, 6}));

class ParamsBool : public ::testing::TestWithParam<bool> {};
TEST_P(ParamsBool, Both) {
  static int calls = 0;
  EXPECT_EQ(GetParam(), calls++ == 1);
}
INSTANTIATE_TEST_SUITE_P(Flags, ParamsBool, ::testing::Bool());

TEST(Fail, ExpectEq) {
  EXPECT_EQ(1, 2) << "deliberate";
}
TEST(Fail, ExpectTrue) {
  EXPECT_TRUE(1 == 2);
}
TEST(Fail, AssertStops) {
  ASSERT_EQ(1, 2);
  std::abort();  // an ASSERT that does not return would kill the run here
}
TEST(Fail, ThrowsNothing) {
  EXPECT_THROW((void)0, std::runtime_error);
}
TEST(Fail, ThrowsAnother) {
  EXPECT_THROW(throw std::logic_error("z"), std::runtime_error);
}
TEST(Fail, NoThrow) {
  EXPECT_NO_THROW(throw std::runtime_error("w"));
}
TEST(Fail, Near) {
  EXPECT_NEAR(1.0, 1.2, 0.1);
}
TEST(Fail, DoubleEq) {
  EXPECT_DOUBLE_EQ(1.0, 1.0 + 1e-12);
}
TEST(Fail, Uncaught) {
  throw std::runtime_error("escaped the body");
}
TEST(Fail, FromAnotherThread) {
  std::thread t([] { EXPECT_EQ(3, 4); });
  t.join();
}
TEST(Fail, AssertionResult) {
  EXPECT_TRUE(::testing::AssertionFailure() << "because");
}
TEST(Fail, FailMacro) {
  FAIL() << "always";
}

}  // namespace
