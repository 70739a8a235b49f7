#include "common/check.h"

#include <gtest/gtest.h>

TEST(Check, PassesSilently) {
  EXPECT_NO_THROW(CNX_CHECK(1 + 1 == 2, "math"));
}

TEST(Check, ThrowsWithFileLineAndMessage) {
  try {
    int rank = 3;
    CNX_CHECK(rank < 2, "rank ", rank, " out of range");
    FAIL() << "expected a throw";
  } catch (const cnx::CheckError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("check_test.cc:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 3 out of range"), std::string::npos) << msg;
  }
}

TEST(Check, WithoutMessageShowsCondition) {
  try {
    CNX_CHECK(2 < 1);
    FAIL() << "expected a throw";
  } catch (const cnx::CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("2 < 1"), std::string::npos) << e.what();
  }
}
