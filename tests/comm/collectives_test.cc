// MPI backend collectives, run as mpirun -np 2 (label mpi).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "comm/communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "tests/comm/mpi_util.h"

namespace cnx::comm {
namespace {

using testing::make_mpi;

std::string bytes_of(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// All ranks hold bit-identical copies of `t`.
void expect_identical_across_ranks(Communicator& comm, const at::Tensor& t, const std::string& what) {
  auto all = comm.allgather(bytes_of(t));
  for (int r = 1; r < comm.size(); ++r) {
    EXPECT_EQ(all[r], all[0]) << what << ": rank " << r << " differs from rank 0 (seen on rank " << comm.rank() << ")";
  }
}

at::Tensor seeded(int64_t seed, int64_t n, at::ScalarType dtype) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
  return at::randn({n}, gen, at::TensorOptions().dtype(dtype));
}

TEST(MpiCollectives, RanksAndLocalRanks) {
  auto comm = make_mpi();
  EXPECT_EQ(comm->backend_name(), "mpi");
  EXPECT_EQ(comm->size(), 2);
  EXPECT_GE(comm->rank(), 0);
  EXPECT_LT(comm->rank(), comm->size());
  // One host: node-local ranks equal world ranks.
  EXPECT_EQ(comm->local_size(), comm->size());
  EXPECT_EQ(comm->local_rank(), comm->rank());
  if (const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    EXPECT_EQ(comm->local_rank(), std::atoi(env));
  }
  auto ranks = comm->allgather(std::to_string(comm->rank()));
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_EQ(ranks[0], "0");
  EXPECT_EQ(ranks[1], "1");
}

TEST(MpiCollectives, BroadcastFromEachRoot) {
  auto comm = make_mpi();
  for (int root = 0; root < comm->size(); ++root) {
    for (auto dtype : {at::kFloat, at::kDouble, at::kLong}) {
      at::Tensor expected = seeded(100 + root, 1001, at::kDouble).mul(1000).to(dtype);
      at::Tensor t = comm->rank() == root ? expected.clone() : seeded(7 + comm->rank(), 1001, at::kDouble).to(dtype);
      comm->broadcast(t, root)->wait();
      EXPECT_TRUE(at::equal(t, expected)) << "root " << root << " dtype " << dtype << " rank " << comm->rank();
    }
  }
}

TEST(MpiCollectives, BroadcastTensorsMakesParametersIdentical) {
  auto comm = make_mpi();
  // Parameter-like leaves with different values per rank, one non-contiguous.
  at::Tensor w = seeded(comm->rank() + 1, 60, at::kFloat).view({6, 10}).set_requires_grad(true);
  at::Tensor b = seeded(comm->rank() + 11, 6, at::kFloat).set_requires_grad(true);
  at::Tensor base = seeded(comm->rank() + 21, 12, at::kFloat).view({3, 4});
  at::Tensor strided = base.t();  // non-contiguous view
  ASSERT_FALSE(strided.is_contiguous());
  broadcast_tensors(*comm, {w, b, strided}, 0);
  EXPECT_TRUE(at::equal(w, seeded(1, 60, at::kFloat).view({6, 10})));
  EXPECT_TRUE(at::equal(b, seeded(11, 6, at::kFloat)));
  EXPECT_TRUE(at::equal(base, seeded(21, 12, at::kFloat).view({3, 4})));
  expect_identical_across_ranks(*comm, w, "weight");
  expect_identical_across_ranks(*comm, b, "bias");
  EXPECT_TRUE(w.requires_grad());
}

class MpiWaitModes : public ::testing::TestWithParam<MpiWaitMode> {};

TEST_P(MpiWaitModes, AllreduceMatchesLocalSums) {
  auto comm = std::make_unique<MpiCommunicator>(MpiRuntime::acquire(), MPI_COMM_WORLD, GetParam());
  ASSERT_EQ(comm->size(), 2);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1023}, int64_t{100003}}) {
      at::Tensor mine0 = seeded(1000 + n, n, dtype);
      at::Tensor mine1 = seeded(2000 + n, n, dtype);
      // With two ranks the reduction is one rounding of a+b (or max), which
      // the same computation here reproduces bit for bit.
      at::Tensor sum = mine0 + mine1;
      at::Tensor avg = sum / 2;
      at::Tensor mx = at::maximum(mine0, mine1);
      const at::Tensor& mine = comm->rank() == 0 ? mine0 : mine1;
      at::Tensor s = mine.clone(), a = mine.clone(), m = mine.clone();
      // Several tensors in one call and several calls in flight.
      auto w1 = comm->allreduce({s, a.narrow(0, 0, 0).clone()}, ReduceOp::kSum);
      auto w2 = comm->allreduce_average(a);
      auto w3 = comm->allreduce({m}, ReduceOp::kMax);
      w3->wait();
      w1->wait();
      w2->wait();
      EXPECT_TRUE(w1->is_completed() && w2->is_completed() && w3->is_completed());
      EXPECT_GE(w1->seconds(), 0.0);
      EXPECT_TRUE(at::equal(s, sum)) << "sum dtype " << dtype << " n " << n << " rank " << comm->rank() << " max diff "
                                     << (n ? (s - sum).abs().max().item<double>() : 0.0);
      EXPECT_TRUE(at::equal(a, avg)) << "average dtype " << dtype << " n " << n;
      EXPECT_TRUE(at::equal(m, mx)) << "max dtype " << dtype << " n " << n;
      expect_identical_across_ranks(*comm, a, "average");
    }
  }
}

// Ranks arrive 30 ms apart and nobody waits while the collective is in
// flight: the polled mode's paused progress still completes it exactly.
TEST_P(MpiWaitModes, SkewedArrivalWithoutAWaiter) {
  MpiCommunicator comm(MpiRuntime::acquire(), MPI_COMM_WORLD, GetParam());
  const int64_t n = 1 << 20;  // 4 MiB: several protocol rounds
  at::Tensor mine = seeded(7 + comm.rank(), n, at::kFloat);
  at::Tensor want = seeded(7, n, at::kFloat) + seeded(8, n, at::kFloat);
  if (comm.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(30));
  at::Tensor t = mine.clone();
  auto w = comm.allreduce({t}, ReduceOp::kSum);
  while (!w->is_completed()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  w->wait();
  EXPECT_TRUE(at::equal(t, want));
}

// A rank whose peer is late sees the running collective's age grow (what the
// worker's peer-liveness watchdog reads); idle, it reads 0.
TEST_P(MpiWaitModes, SecondsInCollectiveWhileAPeerIsLate) {
  MpiCommunicator comm(MpiRuntime::acquire(), MPI_COMM_WORLD, GetParam());
  EXPECT_EQ(comm.seconds_in_collective(), 0.0);
  at::Tensor t = at::ones({16});
  if (comm.rank() == 0) {
    auto w = comm.allreduce({t}, ReduceOp::kSum);
    double seen = 0;
    for (int i = 0; i < 5000 && !w->is_completed(); ++i) {
      seen = std::max(seen, comm.seconds_in_collective());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    w->wait();
    EXPECT_GT(seen, 0.05) << "rank 1 joined 300 ms late";
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    comm.allreduce({t}, ReduceOp::kSum)->wait();
  }
  EXPECT_TRUE(at::equal(t, at::full({16}, 2.0f)));
  comm.barrier();
  EXPECT_EQ(comm.seconds_in_collective(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Mpi, MpiWaitModes, ::testing::Values(MpiWaitMode::kPolled, MpiWaitMode::kBlocking),
                         [](const ::testing::TestParamInfo<MpiWaitMode>& i) {
                           return i.param == MpiWaitMode::kPolled ? std::string("Polled") : std::string("Blocking");
                         });

TEST(MpiCollectives, IntegerValuedSumsAreExact) {
  auto comm = make_mpi();
  const int64_t n = 4099;
  at::Tensor idx = at::arange(n, at::TensorOptions().dtype(at::kDouble));
  at::Tensor t = (idx * (comm->rank() + 1)).remainder(97).to(at::kFloat);
  comm->allreduce({t}, ReduceOp::kSum)->wait();
  at::Tensor expected = at::zeros({n}, at::TensorOptions().dtype(at::kDouble));
  for (int r = 0; r < comm->size(); ++r) expected += (idx * (r + 1)).remainder(97);
  EXPECT_TRUE(at::equal(t, expected.to(at::kFloat)));
}

TEST(MpiCollectives, AllgatherVariableLengthAndBinary) {
  auto comm = make_mpi();
  std::string mine = comm->rank() == 0 ? std::string() : std::string("a\0b\xff", 4);
  auto all = comm->allgather(mine);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], std::string());
  EXPECT_EQ(all[1], std::string("a\0b\xff", 4));
  std::string big(10000 + comm->rank(), static_cast<char>('x' + comm->rank()));
  auto all_big = comm->allgather(big);
  EXPECT_EQ(all_big[0], std::string(10000, 'x'));
  EXPECT_EQ(all_big[1], std::string(10001, 'y'));
}

// Polled mode issues each all-reduce as soon as it is queued, without
// waiting for the ones before it (GradSync's buckets progress together): with
// rank 1 joining 300 ms late, rank 0's last all-reduce is in flight for about
// as long as its first. Issued one after the other, the later ones would only
// start once the first completed and take a fraction of that.
TEST(MpiCollectives, PolledAllreducesAreInFlightTogether) {
  MpiCommunicator comm(MpiRuntime::acquire(), MPI_COMM_WORLD, MpiWaitMode::kPolled);
  std::vector<at::Tensor> ts;
  std::vector<WorkPtr> works;
  if (comm.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int i = 0; i < 4; ++i) {
    ts.push_back(at::full({1 << 18}, static_cast<float>(i + comm.rank())));
    works.push_back(comm.allreduce({ts.back()}, ReduceOp::kSum));
  }
  for (auto& w : works) w->wait();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(at::equal(ts[i], at::full({1 << 18}, static_cast<float>(2 * i + 1))));
  if (comm.rank() == 0) {
    EXPECT_GT(works[0]->seconds(), 0.1) << "rank 1 joined 300 ms late";
    EXPECT_GT(works[3]->seconds(), 0.5 * works[0]->seconds()) << "the 4th all-reduce was not launched with the 1st";
  }
  comm.barrier();
}

TEST(MpiCollectives, BarrierOrdersAfterIssuedWork) {
  auto comm = make_mpi();
  at::Tensor t = at::ones({1 << 16});
  auto w = comm->allreduce({t}, ReduceOp::kSum);
  comm->barrier();
  EXPECT_TRUE(w->is_completed());
  w->wait();
  EXPECT_EQ(t[0].item<float>(), 2.0f);
}

template <class F>
void expect_comm_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected CommError";
  } catch (const CommError& e) {
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    }
  }
}

TEST(MpiCollectives, BadInputGivesClearErrors) {
  auto comm = make_mpi();
  expect_comm_error([&] { comm->allreduce({at::ones({3}, at::kLong)}, ReduceOp::kSum); },
                    {"dtype Long", "Float", "Double", "rank"});
  expect_comm_error([&] { comm->allreduce({at::ones({3}, at::kHalf)}, ReduceOp::kAverage); }, {"dtype Half"});
  expect_comm_error([&] { comm->allreduce({at::ones({4, 3}).t()}, ReduceOp::kSum); }, {"not contiguous"});
  expect_comm_error([&] { comm->allreduce({at::Tensor()}, ReduceOp::kSum); }, {"undefined"});
  expect_comm_error([&] { comm->broadcast(at::ones({2}), 5); }, {"root 5", "size 2"});
  expect_comm_error([&] { make_communicator(CommOptions{"gloo", -1}); }, {"'gloo'", "auto, mpi, nccl"});
#if !CNX_COMM_HAVE_NCCL
  expect_comm_error([&] { make_communicator(CommOptions{"nccl", -1}); }, {"'nccl' is not built in", "CNX_WITH_NCCL"});
#endif
  EXPECT_FALSE(comm->supports_dtype(at::kHalf));
  EXPECT_TRUE(comm->supports_dtype(at::kDouble));
  // The communicator still works after rejected calls (nothing was issued).
  at::Tensor t = at::ones({5}, at::kDouble);
  comm->allreduce_average(t)->wait();
  EXPECT_TRUE(at::equal(t, at::ones({5}, at::kDouble)));
}

TEST(MpiCollectives, ErrorsOnTheCommThreadReachTheCaller) {
  MpiCommunicator comm(MpiRuntime::acquire());
  // An MPI error (invalid root, detected locally on every rank) comes back
  // through CNX_MPI_CHECK with the call and the rank.
  try {
    comm.run_on_comm_thread([](MPI_Comm c) {
      int v = 0;
      CNX_MPI_CHECK(MPI_Bcast(&v, 1, MPI_INT, 99, c));
    });
    ADD_FAILURE() << "expected CommError";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("MPI_Bcast"), std::string::npos) << what;
    EXPECT_NE(what.find("on rank " + std::to_string(comm.rank())), std::string::npos) << what;
  }
  EXPECT_THROW(comm.run_on_comm_thread([](MPI_Comm) { throw CommError("boom"); }), CommError);
  // The thread goes on with the next items.
  at::Tensor t = at::full({3}, static_cast<double>(comm.rank()), at::kDouble);
  auto w = comm.allreduce({t}, ReduceOp::kSum);
  w->wait();
  w->wait();  // repeated waits are fine
  EXPECT_TRUE(at::equal(t, at::full({3}, 1.0, at::kDouble)));
}

TEST(MpiCollectives, AutoBackendIsMpiWithoutCuda) {
  auto comm = make_communicator(CommOptions{});
  if (!at::hasCUDA()) {
    EXPECT_EQ(comm->backend_name(), "mpi");
  }
  auto names = available_backends();
  EXPECT_NE(std::find(names.begin(), names.end(), "mpi"), names.end());
}

}  // namespace
}  // namespace cnx::comm
