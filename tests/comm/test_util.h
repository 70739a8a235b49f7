#pragma once
// Helpers of the comm tests: the message of an expected CommError, a
// substring expectation, and the MPI communicator of an mpirun test.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "comm/error.h"

namespace cnx::comm::testing {

// The message of the CommError `fn` throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

}  // namespace cnx::comm::testing

#define EXPECT_HAS(text, needle) EXPECT_NE(std::string(text).find(needle), std::string::npos) << (text)
