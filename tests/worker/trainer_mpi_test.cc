// Trainer acceptance tests, run as mpirun -np 2 (see tests/worker/CMakeLists.txt).
// A tiny FCMAE (depths 1,1,1,1, dims 8..64, decoder 32) at 64x64 with
// batch 2 per rank on deterministic synthetic images keeps them fast.
//
// Every test issues the same collectives on every rank whatever its local
// expectations found (EXPECT, never ASSERT, before a collective), so one
// rank's failure cannot leave the other waiting.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "comm/communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "common/check.h"
#include "common/config.h"
#include "worker/checkpoint_files.h"
#include "worker/fcmae_model.h"
#include "worker/signals.h"
#include "worker/trainer.h"

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

comm::Communicator& world() {
  static std::unique_ptr<comm::Communicator> c = comm::make_communicator(comm::CommOptions{});
  return *c;
}

Config tiny_config(int64_t batch, const std::string& extra = "") {
  const std::string yaml = R"(
job: {seed: 7}
model: {name: custom, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], decoder_dim: 32, encoder: sparse}
mask: {ratio: 0.5}
optimizer: {blr: 1.0e-2, weight_decay: 0.05}
schedule: {epochs: 4, warmup_epochs: 1, log_every: 100000}
data: {input_size: 64, batch_size: )" +
                           std::to_string(batch) + R"(}
distributed: {bucket_cap_mb: 0.05, first_bucket_mb: 0.01}
checkpoint: {every_steps: 0, keep: 5}
)" + extra;
  return load_config_text(yaml, "tiny test config");
}

std::unique_ptr<Trainer> make_trainer(const Config& c, comm::Communicator& comm, int64_t init_seed = -1,
                                      TrainerOptions* override_options = nullptr) {
  Config mc = c;
  if (init_seed >= 0) mc.job.seed = init_seed;  // a different init (the broadcast must fix it)
  SyntheticOptions so;
  so.samples = 64;
  so.image_size = c.data.input_size;
  so.batch_size = c.data.batch_size;
  so.seed = static_cast<uint64_t>(c.job.seed);
  so.rank = comm.rank();
  so.world = comm.size();
  TrainerOptions o = override_options ? *override_options : trainer_options(c);
  return std::make_unique<Trainer>(o, comm, make_fcmae_model(mc), std::make_unique<SyntheticSource>(so));
}

// Number of tensors (summed over ranks) that differ from rank 0's copy.
int64_t mismatches_vs_rank0(comm::Communicator& comm, const NamedTensors& tensors) {
  int64_t bad = 0;
  for (const auto& [name, t] : tensors) {
    at::Tensor ref = t.detach().clone().contiguous();
    comm::broadcast_tensors(comm, {ref}, 0);
    if (!torch::equal(ref, t.detach())) {
      ++bad;
      ADD_FAILURE() << "rank " << comm.rank() << ": '" << name << "' differs from rank 0's";
    }
  }
  at::Tensor sum = torch::full({1}, static_cast<double>(bad), torch::kFloat64);
  comm.allreduce({sum}, comm::ReduceOp::kSum)->wait();
  return static_cast<int64_t>(sum.item<double>());
}

std::string temp_root(const std::string& tag) {
  // Same path on both ranks (same host): rank 0 picks it.
  std::string path = (fs::temp_directory_path() / ("cnx_worker_" + tag + "_" + std::to_string(::getpid()))).string();
  int len = static_cast<int>(path.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  path.resize(static_cast<size_t>(len));
  MPI_Bcast(path.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  return path;
}

TEST(TrainerMpi, ParamsIdenticalAfterBroadcastAndAfterSteps) {
  auto& comm = world();
  ASSERT_EQ(comm.size(), 2) << "run under mpirun -np 2";
  // Each rank initialises differently; the constructor broadcasts rank 0's.
  auto t = make_trainer(tiny_config(2), comm, /*init_seed=*/100 + comm.rank());
  EXPECT_EQ(mismatches_vs_rank0(comm, t->model_state()), 0);
  for (int i = 0; i < 3; ++i) {
    const StepResult r = t->step();
    EXPECT_TRUE(std::isfinite(r.loss));
    EXPECT_FALSE(r.skipped);
  }
  EXPECT_EQ(mismatches_vs_rank0(comm, t->model_state()), 0);
  EXPECT_EQ(mismatches_vs_rank0(comm, t->optimizer().state_dict()), 0);
}

// 2 ranks x batch 2 == 1 rank x batch 4 on the same samples and masks.
// distributed.bucket_cap_mb: 0 (auto, the default) gives CPU ranks 4 MiB
// buckets: an atto FCMAE's ~30 MB of gradients in about 8 buckets, each
// closed as soon as it reaches the cap (the first at first_bucket_mb = 1).
TEST(TrainerMpi, AutoBucketCapIsFourMiBOnCpu) {
  auto& comm = world();
  Config c = load_config_text("model: {name: atto}\ndata: {input_size: 64, batch_size: 2}\n", "auto cap config");
  ASSERT_EQ(c.distributed.bucket_cap_mb, 0.0);
  auto t = make_trainer(c, comm);
  const auto& buckets = t->grad_sync().buckets();
  const int64_t mib = int64_t{1} << 20;
  ASSERT_GE(buckets.size(), 6u);
  for (size_t b = 0; b + 1 < buckets.size(); ++b) {
    const int64_t last_param_bytes = (buckets[b].numel - buckets[b].offsets.back()) * 4;
    const int64_t limit = (b == 0 ? 1 : 4) * mib;
    EXPECT_GE(buckets[b].bytes, limit) << "bucket " << b;
    EXPECT_LT(buckets[b].bytes - last_param_bytes, limit) << "bucket " << b << " was not closed at the cap";
  }
}

TEST(TrainerMpi, TwoRanksEqualOneRankWithDoubleBatch) {
  auto& comm = world();
  auto two = make_trainer(tiny_config(2), comm);
  const StepResult r2 = two->step();

  auto self = std::make_unique<comm::MpiCommunicator>(comm::MpiRuntime::acquire(), MPI_COMM_SELF);
  auto one = make_trainer(tiny_config(4), *self);
  const StepResult r1 = one->step();

  EXPECT_NEAR(r2.loss, r1.loss, 1e-5 * std::abs(r1.loss)) << "rank " << comm.rank();
  EXPECT_DOUBLE_EQ(r2.lr, r1.lr);  // same global batch -> same lr
  const auto& p2 = two->optimizer().params();
  const auto& p1 = one->optimizer().params();
  ASSERT_EQ(p2.size(), p1.size());
  int checked = 0;
  for (size_t i = 0; i < p1.size(); ++i) {
    ASSERT_EQ(p2[i].first, p1[i].first);
    const at::Tensor g2 = p2[i].second.grad(), g1 = p1[i].second.grad();
    ASSERT_TRUE(g1.defined() && g2.defined()) << p1[i].first;
    const double ref = g1.norm().item<double>();
    const double diff = (g2 - g1).norm().item<double>();
    EXPECT_LE(diff, 1e-5 * ref + 1e-12) << "rank " << comm.rank() << " '" << p1[i].first << "': |g2-g1| " << diff
                                        << " vs |g1| " << ref;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(TrainerMpi, OverlappedAndAfterBackwardSyncAreBitIdentical) {
  auto& comm = world();
  Config a = tiny_config(2), b = tiny_config(2);
  a.distributed.overlap = true;
  b.distributed.overlap = false;
  auto ta = make_trainer(a, comm);
  auto tb = make_trainer(b, comm);
  for (int i = 0; i < 3; ++i) {
    ta->step();
    tb->step();
  }
  EXPECT_GT(ta->grad_sync().stats().buckets_launched_in_backward, 0);
  EXPECT_EQ(tb->grad_sync().stats().buckets_launched_in_backward, 0);
  const NamedTensors sa = ta->model_state(), sb = tb->model_state();
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
}

// 2k steps == k steps, resume, k steps, bit for bit; with background
// checkpoints (the snapshot of step k is written while steps k+1.. run) and
// with synchronous ones.
void expect_resume_is_bit_identical(bool async) {
  auto& comm = world();
  const std::string root = temp_root(async ? "resume_async" : "resume_sync");
  if (comm.rank() == 0) fs::remove_all(root);
  comm.barrier();
  const int64_t k = 3;
  Config c = tiny_config(2);
  c.checkpoint.root = root;
  c.checkpoint.every_steps = k;
  c.checkpoint.async = async;
  c.optimizer.accum_steps = 2;  // also exercises accumulation (NoSync micro-steps)
  c.optimizer.clip_grad = 0.5;
  auto full = make_trainer(c, comm);
  for (int64_t i = 0; i < 2 * k; ++i) full->step();
  full->wait_for_checkpoint();  // what run() does before it returns

  // A new trainer with another init resumes from the checkpoint of step k
  // (without checkpointing again: step 2k's checkpoint exists, immutable).
  c.checkpoint.every_steps = 0;
  auto resumed = make_trainer(c, comm, /*init_seed=*/999);
  resumed->load_checkpoint(root + "/" + checkpoint_name(k));
  EXPECT_EQ(resumed->steps_done(), k);
  for (int64_t i = 0; i < k; ++i) resumed->step();

  const NamedTensors mf = full->model_state(), mr = resumed->model_state();
  for (size_t i = 0; i < mf.size(); ++i) EXPECT_TRUE(torch::equal(mf[i].second, mr[i].second)) << mf[i].first;
  const NamedTensors of = full->optimizer().state_dict(), orr = resumed->optimizer().state_dict();
  ASSERT_EQ(of.size(), orr.size());
  for (size_t i = 0; i < of.size(); ++i) EXPECT_TRUE(torch::equal(of[i].second, orr[i].second)) << of[i].first;
  // `latest` names the last checkpoint (step 2k); auto picks it.
  auto again = make_trainer(c, comm, 5);
  EXPECT_EQ(again->resume("auto"), root + "/" + checkpoint_name(2 * k));
  EXPECT_EQ(again->steps_done(), 2 * k);
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(root);
}

TEST(TrainerMpi, ResumeIsBitIdenticalToAnUninterruptedRun) {
  expect_resume_is_bit_identical(/*async=*/true);
}

TEST(TrainerMpi, ResumeFromSynchronousCheckpointIsBitIdentical) {
  expect_resume_is_bit_identical(/*async=*/false);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// train.sample_log: per step, one "step<TAB>epoch<TAB>key" line per sample of
// each micro-batch, in batch order; a trainer that resumes appends, so the
// steps after the checkpoint it loaded are logged again.
TEST(TrainerMpi, SampleLogListsTheBatchesOfEveryStepAndResumeAppends) {
  auto& comm = world();
  const std::string root = temp_root("samplelog");
  if (comm.rank() == 0) fs::remove_all(root);
  comm.barrier();
  Config c = tiny_config(2);
  c.optimizer.accum_steps = 2;
  c.checkpoint.root = root + "/ckpt";
  c.checkpoint.every_steps = 2;
  c.train.sample_log = root + "/samples";
  SyntheticOptions so;
  so.samples = 16;  // 2 ranks x batch 2 x accum 2: 2 steps per epoch
  so.image_size = c.data.input_size;
  so.batch_size = c.data.batch_size;
  so.seed = static_cast<uint64_t>(c.job.seed);
  so.rank = comm.rank();
  so.world = comm.size();
  auto make = [&] {
    return std::make_unique<Trainer>(trainer_options(c), comm, make_fcmae_model(c),
                                     std::make_unique<SyntheticSource>(so));
  };
  {
    auto first = make();
    for (int i = 0; i < 3; ++i) first->step();  // checkpoint at step 2; step 3 is lost
    first->wait_for_checkpoint();               // step 2's background write is committed
  }
  auto second = make();
  EXPECT_EQ(second->resume("auto"), root + "/ckpt/" + checkpoint_name(2));
  for (int i = 0; i < 2; ++i) second->step();  // steps 3 and 4 (epoch 1)

  // What the batches were: the same source, read step by step.
  SyntheticSource ref(so);
  int64_t epoch = 0;
  ref.start_epoch(0);
  std::vector<std::vector<std::string>> by_step(5);  // [1..4]
  for (int64_t step = 1; step <= 4; ++step) {
    for (int64_t micro = 0; micro < c.optimizer.accum_steps; ++micro) {
      std::optional<TrainBatch> b = ref.next();
      if (!b) {
        ref.start_epoch(++epoch);
        b = ref.next();
      }
      for (const auto& key : b->keys) by_step[step].push_back(cnx::str(step, "\t", b->epoch, "\t", key));
    }
  }
  std::vector<std::string> expected;
  for (int64_t step : {1, 2, 3, 3, 4}) expected.insert(expected.end(), by_step[step].begin(), by_step[step].end());
  const std::string path = root + "/samples/samples-rank" + std::to_string(comm.rank()) + ".tsv";
  const std::vector<std::string> lines = read_lines(path);
  EXPECT_EQ(lines.size(), 5u * 2 * 2) << "rank " << comm.rank() << ": " << path;
  EXPECT_EQ(lines, expected) << "rank " << comm.rank() << ": " << path;
  EXPECT_EQ(by_step[3].front().substr(0, 4), "3\t1\t") << "step 3 should be in epoch 1";
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(root);
}

TEST(TrainerMpi, CorruptCheckpointIsRefusedWithTheFileNamed) {
  auto& comm = world();
  const std::string root = temp_root("corrupt");
  if (comm.rank() == 0) fs::remove_all(root);
  comm.barrier();
  Config c = tiny_config(2);
  c.checkpoint.root = root;
  auto t = make_trainer(c, comm);
  t->step();
  const std::string dir = t->save_checkpoint();
  if (comm.rank() == 0) {
    std::string bytes = read_file(dir + "/optimizer.pt");
    bytes[bytes.size() / 2] ^= 0x5a;
    write_file_durable(dir + "/optimizer.pt", bytes);
  }
  comm.barrier();
  auto u = make_trainer(c, comm);
  try {
    u->load_checkpoint(dir);
    ADD_FAILURE() << "a corrupt checkpoint was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'optimizer.pt' sha256"), std::string::npos) << e.what();
  }
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(root);
}

// NaN injected on rank 1 only, at step 2 (0-based 1): both ranks skip the
// same step, parameters stay identical, the count is 1.
TEST(TrainerMpi, NonFiniteLossIsSkippedOnAllRanksTogether) {
  auto& comm = world();
  TrainerOptions o = trainer_options(tiny_config(2));
  o.nonfinite = "skip";
  const int me = comm.rank();
  o.loss_hook = [me](int64_t step, int64_t, at::Tensor& loss) {
    if (me == 1 && step == 1) loss = loss * std::nan("");
  };
  auto t = make_trainer(tiny_config(2), comm, -1, &o);
  std::vector<bool> skipped;
  NamedTensors before;
  for (int i = 0; i < 3; ++i) {
    if (i == 1)
      for (const auto& [n, p] : t->model_state()) before.emplace_back(n, p.detach().clone());
    const StepResult r = t->step();
    skipped.push_back(r.skipped);
    if (i == 1) {
      const NamedTensors after = t->model_state();
      for (size_t j = 0; j < after.size(); ++j)
        EXPECT_TRUE(torch::equal(before[j].second, after[j].second)) << "skipped step changed " << after[j].first;
    }
  }
  EXPECT_EQ(skipped, (std::vector<bool>{false, true, false})) << "rank " << me;
  EXPECT_EQ(t->skipped_steps(), 1);
  EXPECT_EQ(t->steps_done(), 3);
  EXPECT_EQ(mismatches_vs_rank0(comm, t->model_state()), 0);
}

TEST(TrainerMpi, NonFiniteLossStopsAllRanksAtTheSameStep) {
  auto& comm = world();
  TrainerOptions o = trainer_options(tiny_config(2));
  o.nonfinite = "stop";
  const int me = comm.rank();
  o.loss_hook = [me](int64_t step, int64_t, at::Tensor& loss) {
    if (me == 0 && step == 2) loss = loss / 0.0 * 0.0;  // NaN
  };
  auto t = make_trainer(tiny_config(2), comm, -1, &o);
  int64_t stopped_at = -1;
  for (int i = 0; i < 4 && stopped_at < 0; ++i) {
    try {
      t->step();
    } catch (const NonFiniteLossError& e) {
      stopped_at = i;
      EXPECT_NE(std::string(e.what()).find("non-finite loss at step 3"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(stopped_at, 2) << "rank " << me;
}

// The fp16 loss scaler (loss_scaler.h), run here in float32 on CPU: a loss
// blown up on rank 1 only at steps 2 and 3 (1-based) overflows the scaled
// gradients; both ranks skip those updates together, back the scale off
// (65536 -> 32768 -> 16384), keep identical parameters, and the overflows do
// not count as non-finite steps (train.nonfinite = stop does not stop).
TEST(TrainerMpi, LossScalerOverflowSkipsOnAllRanksAndBacksOff) {
  auto& comm = world();
  TrainerOptions o = trainer_options(tiny_config(2));
  o.loss_scaler.enabled = true;
  o.nonfinite = "stop";
  const int me = comm.rank();
  o.loss_hook = [me](int64_t step, int64_t, at::Tensor& loss) {
    if (me == 1 && (step == 1 || step == 2)) loss = loss * 1e36;  // finite; its scaled gradient is not
  };
  auto t = make_trainer(tiny_config(2), comm, -1, &o);
  std::vector<bool> overflow;
  std::vector<double> scales;
  for (int i = 0; i < 4; ++i) {
    NamedTensors before;
    for (const auto& [n, p] : t->model_state()) before.emplace_back(n, p.detach().clone());
    const StepResult r = t->step();
    EXPECT_EQ(r.skipped, r.overflow);
    EXPECT_TRUE(std::isfinite(r.loss));
    overflow.push_back(r.overflow);
    scales.push_back(r.loss_scale);
    const NamedTensors after = t->model_state();
    int64_t changed = 0;
    for (size_t j = 0; j < after.size(); ++j) changed += torch::equal(before[j].second, after[j].second) ? 0 : 1;
    // (Step 1's warmup lr is 0: nothing moves; from step 2 on, updates do.)
    if (r.overflow || i == 3) EXPECT_EQ(changed == 0, r.overflow) << "step " << i << ": " << changed << " changed";
  }
  EXPECT_EQ(overflow, (std::vector<bool>{false, true, true, false})) << "rank " << me;
  EXPECT_EQ(scales, (std::vector<double>{65536, 65536, 32768, 16384})) << "rank " << me;
  EXPECT_EQ(t->loss_scaler().scale(), 16384.0);
  EXPECT_EQ(t->loss_scaler().state().growth_tracker, 1);
  EXPECT_EQ(t->skipped_steps(), 2);
  EXPECT_EQ(mismatches_vs_rank0(comm, t->model_state()), 0);
}

// The loss scaler's state travels in the checkpoint (trainer.json): a run
// resumed from step 3 continues with the same scale and growth count and
// ends bit-identical to the uninterrupted run.
TEST(TrainerMpi, LossScalerStateResumesBitExact) {
  auto& comm = world();
  const std::string root = temp_root("scaler_resume");
  if (comm.rank() == 0) fs::remove_all(root);
  comm.barrier();
  Config c = tiny_config(2);
  c.checkpoint.root = root;
  c.checkpoint.every_steps = 3;
  TrainerOptions o = trainer_options(c);
  o.loss_scaler.enabled = true;
  o.loss_hook = [](int64_t step, int64_t, at::Tensor& loss) {
    if (step == 0) loss = loss * 1e36;
  };
  auto full = make_trainer(c, comm, -1, &o);
  for (int i = 0; i < 6; ++i) full->step();
  full->wait_for_checkpoint();
  EXPECT_EQ(full->loss_scaler().scale(), 32768.0);
  EXPECT_EQ(full->loss_scaler().state().growth_tracker, 5);
  TrainerOptions o2 = o;
  o2.checkpoint_every_steps = 0;
  auto resumed = make_trainer(c, comm, /*init_seed=*/999, &o2);
  resumed->load_checkpoint(root + "/" + checkpoint_name(3));
  EXPECT_EQ(resumed->loss_scaler().scale(), 32768.0);
  EXPECT_EQ(resumed->loss_scaler().state().growth_tracker, 2);
  for (int i = 0; i < 3; ++i) resumed->step();
  EXPECT_EQ(resumed->loss_scaler().state().growth_tracker, 5);
  const NamedTensors mf = full->model_state(), mr = resumed->model_state();
  for (size_t i = 0; i < mf.size(); ++i) EXPECT_TRUE(torch::equal(mf[i].second, mr[i].second)) << mf[i].first;
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(root);
}

// train.precision: bf16 trains on CPU (autocast forward, float32 weights),
// ranks stay identical, and its losses follow float32's closely over a few
// steps; fp16 on CPU is a config error naming the key.
TEST(TrainerMpi, Bf16TrainsOnCpuAndFp16IsRefused) {
  auto& comm = world();
  auto f32 = make_trainer(tiny_config(2), comm);
  auto b16 = make_trainer(tiny_config(2, "train: {precision: bf16}\n"), comm);
  EXPECT_EQ(b16->options().precision, model::Precision::kBf16);
  EXPECT_FALSE(b16->loss_scaler().enabled());
  for (int i = 0; i < 3; ++i) {
    const double a = f32->step().loss, b = b16->step().loss;
    EXPECT_TRUE(std::isfinite(b));
    EXPECT_NEAR(b, a, 0.02 * std::abs(a)) << "step " << i;
  }
  EXPECT_EQ(mismatches_vs_rank0(comm, b16->model_state()), 0);
  for (const auto& [name, p] : b16->model_state()) EXPECT_EQ(p.scalar_type(), at::kFloat) << name;
  try {
    make_trainer(tiny_config(2, "train: {precision: fp16}\n"), comm);
    ADD_FAILURE() << "fp16 on CPU accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.precision"), std::string::npos) << e.what();
  }
}

// SIGTERM on one rank: both ranks finish the step, checkpoint and report it.
TEST(TrainerMpi, TerminationOnOneRankCheckpointsOnAll) {
  auto& comm = world();
  const std::string root = temp_root("sigterm");
  if (comm.rank() == 0) fs::remove_all(root);
  comm.barrier();
  Config c = tiny_config(2);
  c.checkpoint.root = root;
  auto t = make_trainer(c, comm);
  t->step();
  if (comm.rank() == 1) set_termination_requested(true);
  const StepResult r = t->step();
  set_termination_requested(false);
  EXPECT_TRUE(r.preempted) << "rank " << comm.rank();
  EXPECT_TRUE(r.checkpointed) << "rank " << comm.rank();
  EXPECT_EQ(latest_checkpoint(root).value_or(""), root + "/" + checkpoint_name(2));
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(root);
}

}  // namespace
}  // namespace cnx::worker

int main(int argc, char** argv) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) return 2;
  at::set_num_threads(1);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  // The communicator (a function-local static) must go before MPI_Finalize.
  cnx::worker::world().barrier();
  MPI_Finalize();
  return worst;
}
