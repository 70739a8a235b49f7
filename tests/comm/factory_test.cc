// Backend choice, bootstrap choice and make_communicator() errors that need
// no MPI process (label unit).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "comm/communicator.h"
#include "comm/rendezvous.h"

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

std::string resolve_error(const std::string& requested, at::DeviceType t, const std::vector<std::string>& built) {
  try {
    resolve_backend(requested, t, built);
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(text, needle) EXPECT_NE(std::string(text).find(needle), std::string::npos) << (text)

TEST(ResolveBackend, AutoFollowsWhereTheModelIs) {
  const std::vector<std::string> both{"mpi", "nccl"};
  EXPECT_EQ(resolve_backend("auto", at::kCPU, both), "mpi") << "a CPU model never gets NCCL, GPU or not";
  EXPECT_EQ(resolve_backend("auto", at::kCUDA, both), "nccl");
  EXPECT_EQ(resolve_backend("auto", at::kCUDA, {"nccl"}), "nccl") << "NCCL needs no MPI";
  EXPECT_EQ(resolve_backend("mpi", at::kCPU, both), "mpi");
  EXPECT_EQ(resolve_backend("nccl", at::kCUDA, both), "nccl");
}

TEST(ResolveBackend, ImpossibleCombinationsSayWhy) {
  const std::vector<std::string> both{"mpi", "nccl"};
  EXPECT_HAS(resolve_error("nccl", at::kCPU, both), "model's tensors are on the cpu");
  EXPECT_HAS(resolve_error("mpi", at::kCUDA, both), "reduces CPU tensors, but the model's tensors are on cuda");
  EXPECT_HAS(resolve_error("auto", at::kCUDA, {"mpi"}), "'nccl' is not built in (auto: the model is on cuda)");
  EXPECT_HAS(resolve_error("auto", at::kCPU, {"nccl"}), "built without it");
  EXPECT_HAS(resolve_error("gloo", at::kCPU, both), "'gloo' is unknown");
  EXPECT_HAS(resolve_error("auto", at::kMeta, both), "no backend reduces meta tensors");
}

#if !CNX_COMM_HAVE_NCCL
TEST(CommFactory, ModelOnCudaWithoutNcclIsRefusedBeforeAnyBackendStarts) {
  CommOptions o;
  o.device_type = at::kCUDA;
  try {
    make_communicator(o);
    ADD_FAILURE() << "expected a CommError";
  } catch (const CommError& e) {
    EXPECT_HAS(e.what(), "-DCNX_WITH_NCCL=ON");
  }
}
#endif

TEST(Bootstrap, WorldOfOneNeedsNoEnvironment) {
  const RendezvousEnv env = read_rendezvous_env([](const char*) -> const char* { return nullptr; });
  auto boot = make_bootstrap(env);
  EXPECT_EQ(boot->describe(), "single");
  EXPECT_EQ(boot->rank(), 0);
  EXPECT_EQ(boot->size(), 1);
  EXPECT_EQ(boot->broadcast("id", 0), "id");
  boot->barrier();
}

TEST(Bootstrap, StoreNamedByTheEnvironmentWins) {
  const auto dir = std::filesystem::temp_directory_path() / ("cnx_factory_test_" + std::to_string(::getpid()));
  RendezvousEnv env;
  env.store_dir = dir.string();
  {
    auto boot = make_bootstrap(env);
    EXPECT_EQ(boot->describe(), "file:" + dir.string());
    EXPECT_EQ(boot->allgather("x"), std::vector<std::string>{"x"});
  }
  std::filesystem::remove_all(dir);
}

#if !CNX_COMM_HAVE_MPI
TEST(Bootstrap, SeveralRanksWithoutAStoreOrMpiListTheVariables) {
  RendezvousEnv env;
  env.rank = 1;
  env.world_size = 2;
  env.source = "CNX_RANK/CNX_WORLD_SIZE";
  try {
    make_bootstrap(env);
    ADD_FAILURE() << "expected a CommError";
  } catch (const CommError& e) {
    EXPECT_HAS(e.what(), "2 ranks (from CNX_RANK/CNX_WORLD_SIZE)");
    EXPECT_HAS(e.what(), "CNX_MASTER_ADDR and CNX_MASTER_PORT");
    EXPECT_HAS(e.what(), "CNX_STORE_DIR");
  }
}
#endif

}  // namespace
}  // namespace cnx::comm
