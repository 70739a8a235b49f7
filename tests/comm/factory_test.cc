// make_communicator() errors that need no MPI process (label unit).
#include <gtest/gtest.h>

#include <algorithm>

#include "comm/communicator.h"

namespace cnx::comm {
namespace {

std::string error_of(const std::string& backend) {
  try {
    make_communicator(CommOptions{backend, -1});
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

TEST(CommFactory, UnknownBackendIsNamed) {
  const std::string e = error_of("gloo");
  EXPECT_NE(e.find("'gloo' is unknown"), std::string::npos) << e;
  EXPECT_NE(e.find("auto, mpi, nccl"), std::string::npos) << e;
}

TEST(CommFactory, AvailableBackendsMatchTheBuild) {
  auto names = available_backends();
  const bool has_mpi = std::find(names.begin(), names.end(), "mpi") != names.end();
  const bool has_nccl = std::find(names.begin(), names.end(), "nccl") != names.end();
  EXPECT_EQ(has_mpi, CNX_COMM_HAVE_MPI != 0);
  EXPECT_EQ(has_nccl, CNX_COMM_HAVE_NCCL != 0);
}

#if !CNX_COMM_HAVE_NCCL
TEST(CommFactory, NcclNotBuiltSaysHowToGetIt) {
  const std::string e = error_of("nccl");
  EXPECT_NE(e.find("'nccl' is not built in"), std::string::npos) << e;
  EXPECT_NE(e.find("-DCNX_WITH_NCCL=ON"), std::string::npos) << e;
}
#endif

#if !CNX_COMM_HAVE_MPI
TEST(CommFactory, MpiNotFoundSaysSo) {
  for (const char* name : {"mpi", "auto"}) {
    const std::string e = error_of(name);
    EXPECT_NE(e.find("built without it"), std::string::npos) << e;
    EXPECT_NE(e.find("libopenmpi-dev"), std::string::npos) << e;
  }
}
#endif

}  // namespace
}  // namespace cnx::comm
