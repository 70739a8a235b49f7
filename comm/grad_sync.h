#pragma once
// Bucketed, overlapped gradient averaging (after PyTorch DDP's Reducer and
// Horovod's tensor fusion).
//
// Buckets: the trainable parameters (requires_grad) are split into buckets by
// plan_buckets() (comm/bucket_plan.h): reverse registration order, a small
// first bucket, then about bucket_cap_mb each; one flat buffer per bucket.
// Every rank builds the same plan from the same parameter list.
//
// One synchronised step, overlap = true:
// 1. [optional] set_control(values) before backward.
// 2. backward(): a post-accumulation hook on each parameter's grad
//    accumulator marks the parameter ready once its .grad holds the final
//    value. When every parameter of a bucket is ready the bucket is
//    "complete"; complete buckets are launched strictly in bucket order (a
//    bucket waits for all earlier ones), so every rank issues the same
//    all-reduces in the same order whatever its autograd scheduling. Launch =
//    copy the grads that are not already views of the flat buffer into it,
//    then an asynchronous all-reduce (average; the last bucket is summed when
//    it carries control values and divided in finish()). This runs on the
//    thread that executes backward.
// 3. finish(): launches the buckets not launched yet (in order), waits for
//    all (buckets are averaged: sum, then divide by size()) and makes every
//    parameter's .grad hold the average (allocating .grad where undefined).
// overlap = false: no hooks are installed; finish() launches every bucket.
// Both modes perform identical arithmetic, so their results are bit-identical.
//
// Gradient views (grad_views = true, after DDP's gradient_as_bucket_view):
// the constructor makes each contiguous parameter's .grad a tensor sharing
// the bucket's flat buffer (existing values are kept), so AccumulateGrad adds
// into the bucket in place and launch/finish copy nothing for it. If .grad is
// replaced (e.g. zero_grad(set_to_none=true) then backward), that parameter
// is copied in at launch and finish() rebinds .grad to the bucket slot. Do
// not touch .grad between a bucket's launch and finish(): the buffer is being
// reduced in place. Non-contiguous parameters are always copied.
//
// Unused parameters: a parameter whose hook did not fire in this step (not
// reached by backward) contributes its current .grad, or zeros when .grad is
// undefined; after finish() its .grad holds the average like every other one.
// Keep zeroing gradients between steps as usual. Such a parameter also holds
// back its bucket, and so every later bucket, until finish(): overlap is lost
// from there on (as in DDP), the result is unchanged.
// Ranks may differ in which parameters they used; the in-order launch keeps
// their collective sequences identical anyway.
//
// Gradient accumulation: while sync is disabled (set_sync_enabled(false) or a
// NoSyncScope) hooks do nothing and .grad accumulates locally; enable sync for
// the last micro-step and call finish() after its backward. A parameter
// accumulated twice within one synchronised step is an error (it would have
// been sent before its final value existed).
//
// Control values: options.control_slots values per rank ride in the same
// all-reduce as the last bucket (appended to its flat buffer), so agreeing on
// flags (checkpoint-now, preempted, non-finite loss) costs no extra round
// trip. They are summed across ranks (not averaged): a flag is set somewhere
// iff its sum > 0. They travel in the last bucket's dtype (float32: integers
// up to 2^24 are exact). Set them before backward; they reset to 0 after
// finish().
//
// Threading: construct, set_*, finish() and stats() on the training thread;
// the hooks run on the autograd thread; an internal mutex orders the two.
// Not reentrant across two concurrent backward passes. `comm` must outlive
// the GradSync, and no other collective may be issued on it between the
// first launch of a step and finish() (the buckets would interleave with it
// in a rank-dependent order). The GradSync must
// outlive every backward that runs while it exists; its destructor removes
// its hooks (call it while no backward runs).
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "comm/bucket_plan.h"
#include "comm/communicator.h"

namespace cnx::comm {

struct GradSyncOptions {
  double bucket_cap_mb = 25.0;
  double first_bucket_mb = 1.0;
  bool overlap = true;    // all-reduce buckets during backward
  int control_slots = 0;  // length of the control vector (same on every rank)
  // Make each contiguous parameter's .grad share storage with its bucket
  // (no copies in or out); see "Gradient views" above.
  bool grad_views = true;
  // The caller has already scaled every rank's gradients by
  // gradient_scale() = 1 / size() (the trainer folds it into the loss), so
  // buckets are summed and nothing is divided: the average without the
  // division pass over every gradient byte. For a power-of-two size the
  // result is bit-identical to averaging (scaling by 2^-k is exact).
  bool prescaled = false;
};

// Cumulative counters since construction or reset_stats(). Seconds are wall
// time measured on this rank.
struct GradSyncStats {
  int64_t steps = 0;  // finish() calls
  int64_t buckets_reduced = 0;
  int64_t buckets_launched_in_backward = 0;  // launched from a hook (overlapped)
  int64_t bytes_reduced = 0;                 // payload bytes this rank all-reduced (grads + control)
  double allreduce_seconds = 0.0;            // sum of the collectives' execution times
  double wait_seconds = 0.0;                 // time finish() blocked on outstanding collectives
  double finish_seconds = 0.0;               // all of finish(): launches, wait, copy-back
};

// The bucket cap the trainer uses for distributed.bucket_cap_mb = 0 (auto):
// 4 MiB for CPU gradients (MPI), 25 MiB (PyTorch DDP's default) for CUDA
// ones (NCCL). On CPU ranks the all-reduce runs on the cores backward runs
// on, so only what is launched during backward hides: with 25 MiB buckets an
// atto FCMAE (~30 MB of gradients) has two large buckets that complete late,
// and about half of the all-reduce was exposed after backward; 4 MiB buckets
// hid ~90% of it (bench/worker/README.md). On GPUs NCCL runs beside the
// kernels, and fewer, larger calls cost less.
double auto_bucket_cap_mb(at::DeviceType device);

class GradSync {
 public:
  // `params` in registration order (e.g. module->parameters()); parameters
  // that do not require grad are left out. Throws CommError when a parameter
  // is on a device the communicator does not handle, has a dtype it cannot
  // reduce, is not a leaf, or appears twice; std::invalid_argument for bad
  // options.
  GradSync(Communicator& comm, std::vector<at::Tensor> params, GradSyncOptions options = {});
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Disables/enables synchronisation of the following backward passes.
  // Changing it while a synchronised step is in progress (a bucket was
  // launched and finish() not yet called) throws.
  void set_sync_enabled(bool enabled);
  bool sync_enabled() const;

  // Values reduced with this step's last bucket; size must be control_slots.
  // Throws if the last bucket was already launched in this step.
  void set_control(const std::vector<double>& values);
  // Sums over ranks of the control values of the last finished step.
  const std::vector<double>& control_result() const { return control_result_; }

  // Completes the step (see the protocol above). Throws if sync is disabled;
  // rethrows communication errors.
  void finish();

  // What the caller multiplies its gradients (its loss) by: 1 / size() with
  // options.prescaled, else 1.
  double gradient_scale() const;

  const std::vector<Bucket>& buckets() const;
  size_t num_params() const;  // trainable parameters handled
  GradSyncStats stats() const;
  void reset_stats();

  // Disables sync for its lifetime (the micro-steps of gradient accumulation).
  class NoSyncScope {
   public:
    explicit NoSyncScope(GradSync& sync) : sync_(sync), previous_(sync.sync_enabled()) {
      sync_.set_sync_enabled(false);
    }
    ~NoSyncScope() { sync_.set_sync_enabled(previous_); }
    NoSyncScope(const NoSyncScope&) = delete;
    NoSyncScope& operator=(const NoSyncScope&) = delete;

   private:
    GradSync& sync_;
    bool previous_;
  };

  struct State;  // shared with the hooks (grad_sync.cc)

 private:
  std::shared_ptr<State> state_;
  std::vector<double> control_result_;
};

}  // namespace cnx::comm
