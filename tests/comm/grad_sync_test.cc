// GradSync on a small torch model, run as mpirun -np 2 (label mpi).
// The 1-rank references are computed locally on every rank from the same
// deterministic data, so no rank trusts another's arithmetic.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "comm/communicator.h"
#include "comm/grad_sync.h"
#include "tests/comm/mpi_util.h"

namespace cnx::comm {
namespace {

using testing::make_mpi;

// A little convnet + MLP with parameters of many sizes; `extra` is used only
// when asked (unused parameters), `never` (only when with_never) never.
// Unused parameters hold their bucket and every later one until finish(), so
// the overlap tests use models without them.
struct NetImpl : torch::nn::Module {
  NetImpl(torch::Dtype dtype, bool with_never) {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1).groups(8)));
    fc1 = register_module("fc1", torch::nn::Linear(8 * 6 * 6, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 5));
    extra = register_module("extra", torch::nn::Linear(32, 5));
    if (with_never) never = register_module("never", torch::nn::Linear(4, 4));
    to(dtype);
  }
  torch::Tensor forward(const torch::Tensor& x, bool use_extra) {
    auto h = torch::gelu(conv1->forward(x));
    h = h + conv2->forward(h);
    h = torch::tanh(fc1->forward(h.flatten(1)));
    auto y = fc2->forward(h);
    if (use_extra) y = y + extra->forward(h);
    return y;
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, extra{nullptr}, never{nullptr};
};
TORCH_MODULE(Net);

Net make_net(torch::Dtype dtype, uint64_t seed, bool with_never = false) {
  torch::manual_seed(seed);
  return Net(dtype, with_never);
}

struct Batch {
  torch::Tensor x, y;
};
Batch make_batch(int64_t n, uint64_t seed, torch::Dtype dtype) {
  torch::manual_seed(seed);
  return {torch::randn({n, 3, 6, 6}).to(dtype), torch::randn({n, 5}).to(dtype)};
}

torch::Tensor loss_of(Net& net, const Batch& b, int64_t from, int64_t n, bool use_extra = true) {
  auto x = b.x.narrow(0, from, n), y = b.y.narrow(0, from, n);
  return torch::mse_loss(net->forward(x, use_extra), y);  // mean over the samples
}

std::vector<torch::Tensor> grads_of(Net& net) {
  std::vector<torch::Tensor> out;
  for (auto& p : net->parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  return out;
}

void expect_close(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& want, double rel, int rank,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].defined()) << what << ": grad " << i << " undefined on rank " << rank;
    ASSERT_TRUE(want[i].defined()) << what << ": reference grad " << i << " undefined";
    const double scale = want[i].abs().max().item<double>();
    const double diff = (got[i] - want[i]).abs().max().item<double>();
    EXPECT_LE(diff, rel * std::max(scale, 1e-12))
        << what << ": parameter " << i << " shape " << want[i].sizes() << " rank " << rank << " max |got - want| "
        << diff << " max |want| " << scale;
  }
}

std::string bytes_of(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

GradSyncOptions small_buckets(bool overlap) {
  GradSyncOptions o;
  o.first_bucket_mb = 0.0005;  // ~524 B
  o.bucket_cap_mb = 0.004;     // ~4 KiB: several buckets on this model
  o.overlap = overlap;
  return o;
}

class GradSyncTest : public ::testing::TestWithParam<torch::Dtype> {};

TEST_P(GradSyncTest, TwoRanksTimesBEqualsOneRankTimesTwoB) {
  const auto dtype = GetParam();
  auto comm = make_mpi();
  const int rank = comm->rank(), world = comm->size();
  const int64_t b = 4;
  // Different init per rank, then broadcast from rank 0.
  Net net = make_net(dtype, 100 + rank, true);
  broadcast_tensors(*comm, net->parameters(), 0);
  Net ref = make_net(dtype, 100, true);  // rank 0's init, locally
  for (size_t i = 0; i < net->parameters().size(); ++i) {
    ASSERT_TRUE(torch::equal(net->parameters()[i], ref->parameters()[i])) << "param " << i;
    auto all = comm->allgather(bytes_of(net->parameters()[i]));
    EXPECT_EQ(all[0], all[1]) << "parameter " << i << " differs across ranks after broadcast";
  }
  Batch batch = make_batch(b * world, 7, dtype);
  GradSync sync(*comm, net->parameters(), small_buckets(true));
  EXPECT_GE(sync.buckets().size(), 3u);
  EXPECT_EQ(sync.num_params(), net->parameters().size());
  loss_of(net, batch, rank * b, b).backward();
  sync.finish();
  loss_of(ref, batch, 0, b * world).backward();
  const double rel = dtype == torch::kFloat ? 1e-5 : 1e-12;
  auto got = grads_of(net);
  auto want = grads_of(ref);
  // `never` is unused everywhere: its averaged gradient is zero.
  for (auto& p : ref->never->parameters()) p.mutable_grad() = torch::zeros_like(p);
  expect_close(got, grads_of(ref), rel, rank, "2 ranks x b vs 1 rank x 2b");
  for (auto& g : got) {
    auto all = comm->allgather(bytes_of(g));
    EXPECT_EQ(all[0], all[1]) << "averaged gradients differ across ranks";
  }
  auto st = sync.stats();
  EXPECT_EQ(st.steps, 1);
  EXPECT_EQ(st.buckets_reduced, static_cast<int64_t>(sync.buckets().size()));
  int64_t numel = 0;
  for (auto& p : net->parameters()) numel += p.numel();
  EXPECT_EQ(st.bytes_reduced, numel * static_cast<int64_t>(torch::elementSize(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GradSyncTest, ::testing::Values(torch::kFloat, torch::kDouble));

// Runs K SGD steps with sync in the given mode; returns the parameters.
// set_to_none drops every .grad before backward (grad-view rebinding path).
std::vector<torch::Tensor> train(Communicator& comm, bool overlap, int steps, GradSyncStats* stats,
                                 bool grad_views = true, bool set_to_none = false) {
  Net net = make_net(torch::kFloat, 5);
  GradSyncOptions options = small_buckets(overlap);
  options.grad_views = grad_views;
  GradSync sync(comm, net->parameters(), options);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    if (set_to_none) {
      for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
    }
    Batch batch = make_batch(6, 1000 + s * 10 + comm.rank(), torch::kFloat);
    loss_of(net, batch, 0, 6).backward();
    sync.finish();
    opt.step();
  }
  *stats = sync.stats();
  std::vector<torch::Tensor> out;
  for (auto& p : net->parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(GradSync, OverlappedAndAfterBackwardAreBitIdentical) {
  auto comm = make_mpi();
  GradSyncStats s_overlap, s_after;
  auto a = train(*comm, true, 3, &s_overlap);
  auto b = train(*comm, false, 3, &s_after);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i]))
        << "parameter " << i << " rank " << comm->rank() << " max diff " << (a[i] - b[i]).abs().max().item<double>();
    auto all = comm->allgather(bytes_of(a[i]));
    EXPECT_EQ(all[0], all[1]) << "parameter " << i << " differs across ranks after 3 steps";
  }
  EXPECT_GT(s_overlap.buckets_launched_in_backward, 0);
  EXPECT_EQ(s_after.buckets_launched_in_backward, 0);
  EXPECT_EQ(s_overlap.bytes_reduced, s_after.bytes_reduced);
  EXPECT_EQ(s_overlap.steps, 3);
  EXPECT_GE(s_overlap.finish_seconds, s_overlap.wait_seconds);
  EXPECT_GT(s_overlap.allreduce_seconds, 0.0);
}

TEST(GradSync, GradViewsAndCopiesAreBitIdentical) {
  auto comm = make_mpi();
  GradSyncStats st;
  auto views = train(*comm, true, 3, &st, true, false);
  auto copies = train(*comm, true, 3, &st, false, false);
  auto rebound = train(*comm, true, 3, &st, true, true);
  for (size_t i = 0; i < views.size(); ++i) {
    EXPECT_TRUE(torch::equal(views[i], copies[i])) << "parameter " << i << " rank " << comm->rank();
    EXPECT_TRUE(torch::equal(views[i], rebound[i])) << "parameter " << i << " rank " << comm->rank();
  }
}

TEST(GradSync, GradsAreBucketViewsAndKeepTheirValues) {
  auto comm = make_mpi();
  Net net = make_net(torch::kDouble, 3);
  auto params = net->parameters();
  params.back().mutable_grad() = torch::full_like(params.back(), 0.25);
  GradSyncOptions o = small_buckets(true);
  o.first_bucket_mb = 1;  // one bucket holding everything
  o.bucket_cap_mb = 1;
  GradSync sync(*comm, params, o);
  ASSERT_EQ(sync.buckets().size(), 1u);
  const Bucket& bucket = sync.buckets()[0];
  // Consecutive slots of one buffer, in reverse registration order.
  const char* base = static_cast<const char*>(params[bucket.params[0]].grad().data_ptr());
  for (size_t j = 0; j < bucket.params.size(); ++j) {
    const auto& g = params[bucket.params[j]].grad();
    ASSERT_TRUE(g.defined());
    EXPECT_EQ(static_cast<const char*>(g.data_ptr()), base + bucket.offsets[j] * 8) << j;
    EXPECT_FALSE(g.is_view());
  }
  EXPECT_TRUE(torch::equal(params.back().grad(), torch::full_like(params.back(), 0.25)));
  EXPECT_EQ(params.front().grad().abs().max().item<double>(), 0.0);
  sync.finish();
  EXPECT_TRUE(torch::equal(params.back().grad(), torch::full_like(params.back(), 0.25)));
}

// prescaled: the caller multiplies its loss by gradient_scale() (1/2 here)
// and the buckets are summed: bit-identical to averaging for 2 ranks (scaling
// by 1/2 is exact), with and without control slots and overlap.
TEST(GradSync, PrescaledLossGivesTheAverageBitForBit) {
  auto comm = make_mpi();
  ASSERT_EQ(comm->size(), 2);
  for (bool overlap : {false, true}) {
    for (int control : {0, 2}) {
      Net a = make_net(torch::kFloat, 1), b = make_net(torch::kFloat, 1);
      GradSyncOptions o = small_buckets(overlap);
      o.control_slots = control;
      GradSync avg(*comm, a->parameters(), o);
      o.prescaled = true;
      GradSync pre(*comm, b->parameters(), o);
      EXPECT_EQ(avg.gradient_scale(), 1.0);
      EXPECT_EQ(pre.gradient_scale(), 0.5);
      Batch batch = make_batch(4, 3, torch::kFloat);  // samples 2r, 2r+1 on rank r
      if (control) avg.set_control({1, 2});
      loss_of(a, batch, 2 * comm->rank(), 2).backward();
      avg.finish();
      if (control) pre.set_control({1, 2});
      (loss_of(b, batch, 2 * comm->rank(), 2) * pre.gradient_scale()).backward();
      pre.finish();
      const auto ga = grads_of(a), gb = grads_of(b);
      ASSERT_EQ(ga.size(), gb.size());
      for (size_t i = 0; i < ga.size(); ++i)
        EXPECT_TRUE(torch::equal(ga[i], gb[i]))
            << "parameter " << i << " overlap " << overlap << " control " << control;
      if (control) EXPECT_EQ(pre.control_result(), (std::vector<double>{2, 4}));
    }
  }
}

TEST(GradSync, ControlValuesAreSummedWithTheLastBucket) {
  auto comm = make_mpi();
  Net net = make_net(torch::kFloat, 1);
  GradSyncOptions o = small_buckets(true);
  o.control_slots = 3;
  GradSync sync(*comm, net->parameters(), o);
  Batch batch = make_batch(2, 3, torch::kFloat);
  sync.set_control(comm->rank() == 0 ? std::vector<double>{1, 0, 2} : std::vector<double>{0, 0, 3});
  loss_of(net, batch, 0, 2).backward();
  // The last bucket has been launched during backward: too late now.
  EXPECT_THROW(sync.set_control({1, 1, 1}), CommError);
  sync.finish();
  EXPECT_EQ(sync.control_result(), (std::vector<double>{1, 0, 5}));
  EXPECT_EQ(sync.stats().buckets_reduced, static_cast<int64_t>(sync.buckets().size()));
  // Not set in the next step: zeros.
  net->zero_grad();
  loss_of(net, batch, 0, 2).backward();
  sync.finish();
  EXPECT_EQ(sync.control_result(), (std::vector<double>{0, 0, 0}));
  EXPECT_THROW(sync.set_control({1.0}), CommError);
  // Gradients are still averaged correctly with the control slots appended.
  auto got = grads_of(net);
  Net ref = make_net(torch::kFloat, 1);
  loss_of(ref, batch, 0, 2).backward();
  expect_close(got, grads_of(ref), 1e-6, comm->rank(), "grads next to control");
}

TEST(GradSync, ControlWithoutTrainableParameters) {
  auto comm = make_mpi();
  torch::Tensor frozen = torch::ones({3});
  GradSyncOptions o;
  o.control_slots = 2;
  GradSync sync(*comm, {frozen}, o);
  EXPECT_TRUE(sync.buckets().empty());
  sync.set_control({1.0, static_cast<double>(comm->rank())});
  sync.finish();
  EXPECT_EQ(sync.control_result(), (std::vector<double>{2.0, 1.0}));
}

TEST(GradSync, GradientAccumulationSyncsOnlyTheLastMicroStep) {
  auto comm = make_mpi();
  const int rank = comm->rank(), world = comm->size();
  Net net = make_net(torch::kDouble, 9);
  GradSync sync(*comm, net->parameters(), small_buckets(true));
  Batch batch = make_batch(4 * world, 11, torch::kDouble);  // 2 micro-steps of 2 per rank
  {
    GradSync::NoSyncScope no_sync(sync);
    loss_of(net, batch, rank * 4, 2).backward();
    EXPECT_EQ(sync.stats().bytes_reduced, 0);
    EXPECT_THROW(sync.finish(), CommError);
  }
  EXPECT_TRUE(sync.sync_enabled());
  loss_of(net, batch, rank * 4 + 2, 2).backward();
  sync.finish();
  // Reference: the sum over both micro-steps of every rank, averaged.
  Net ref = make_net(torch::kDouble, 9);
  for (int r = 0; r < world; ++r) {
    loss_of(ref, batch, r * 4, 2).backward();
    loss_of(ref, batch, r * 4 + 2, 2).backward();
  }
  std::vector<torch::Tensor> want;
  for (auto& p : ref->parameters()) {
    want.push_back(p.grad().defined() ? p.grad() / world : torch::zeros_like(p));
  }
  expect_close(grads_of(net), want, 1e-12, rank, "accumulated micro-steps");
}

TEST(GradSync, SecondBackwardWithoutFinishIsAnError) {
  auto comm = make_mpi();
  Net net = make_net(torch::kFloat, 2);
  GradSync sync(*comm, net->parameters(), small_buckets(true));
  Batch batch = make_batch(2, 3, torch::kFloat);
  loss_of(net, batch, 0, 2).backward();
  try {
    loss_of(net, batch, 0, 2).backward();
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("accumulated twice"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sync.set_sync_enabled(false), CommError);
  sync.finish();  // completes the launched buckets on both ranks
  sync.set_sync_enabled(false);
}

TEST(GradSync, ParameterUsedOnOneRankOnlyIsAveragedWithZero) {
  auto comm = make_mpi();
  const int rank = comm->rank();
  Net net = make_net(torch::kDouble, 4, true);
  // Rank 0 uses `extra`, rank 1 does not: rank 1 launches later buckets only
  // in finish(), the in-order launch keeps the ranks matched.
  GradSync sync(*comm, net->parameters(), small_buckets(true));
  Batch batch = make_batch(4, 5, torch::kDouble);
  loss_of(net, batch, rank * 2, 2, /*use_extra=*/rank == 0).backward();
  sync.finish();
  Net ref0 = make_net(torch::kDouble, 4, true);
  loss_of(ref0, batch, 0, 2, true).backward();
  auto w = net->extra->weight.grad();
  ASSERT_TRUE(w.defined());
  auto want = ref0->extra->weight.grad() / 2;
  EXPECT_LE((w - want).abs().max().item<double>(), 1e-12 * want.abs().max().item<double>());
  auto never = net->never->weight.grad();
  ASSERT_TRUE(never.defined());
  EXPECT_EQ(never.abs().max().item<double>(), 0.0);
}

TEST(GradSync, BadInputGivesClearErrors) {
  auto comm = make_mpi();
  Net net = make_net(torch::kFloat, 1);
  auto params = net->parameters();
  auto dup = params;
  dup.push_back(params[0]);
  try {
    GradSync sync(*comm, dup, {});
    ADD_FAILURE() << "expected CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("appears twice"), std::string::npos) << e.what();
  }
  torch::Tensor non_leaf = params[0] * 2;
  EXPECT_THROW(GradSync(*comm, {non_leaf}, {}), CommError);
  torch::Tensor half = torch::ones({3}, torch::kHalf).set_requires_grad(true);
  try {
    GradSync sync(*comm, {half}, {});
    ADD_FAILURE() << "expected CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("dtype Half"), std::string::npos) << e.what();
  }
  GradSyncOptions bad;
  bad.bucket_cap_mb = 0;
  EXPECT_THROW(GradSync(*comm, params, bad), std::invalid_argument);
}

}  // namespace
}  // namespace cnx::comm
