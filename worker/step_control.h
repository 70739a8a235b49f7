#pragma once
// The control values each rank reduces (sums) with its step's last gradient
// bucket, so that decisions every rank must take at the same step travel
// with data every rank already waits for (trainer.h).
//
// encode_signals() turns one rank's view into the slots; decide() turns the
// summed slots (bit-identical on every rank) into the step's decisions, so
// every rank decides alike.
#include <cstdint>
#include <vector>

namespace cnx::worker {

// One rank's view at the last micro-step.
struct StepSignals {
  bool checkpoint_now = false;      // local timer (no control plane; rank 0 only)
  bool preempted = false;           // SIGTERM/SIGINT on this rank
  bool nonfinite = false;           // a non-finite loss in this step's micro-batches
  double loss = 0;                  // mean loss of this rank's micro-batches (ignored when non-finite)
  int64_t plan = 0;                 // due coordinator plan id (0 = none known)
  bool abort = false;               // the control plane aborted the attempt
  bool drain = false;               // the control plane asks to stop cleanly
  bool checkpoint_written = false;  // this rank's background checkpoint write has finished
};

// What every rank agrees on after the reduction.
struct StepDecision {
  bool checkpoint_now = false;
  bool preempted = false;   // some rank was signalled
  int nonfinite_ranks = 0;  // ranks that saw a non-finite loss
  double mean_loss = 0;     // NaN when nonfinite_ranks > 0
  int64_t plan = 0;         // a plan every rank knows, the same id (0 = none)
  bool abort = false;
  bool drain = false;
  bool checkpoint_written = false;  // every rank's background write has finished
};

// Number of control slots (GradSyncOptions::control_slots).
int control_slot_count();
std::vector<double> encode_signals(const StepSignals& s);
// `sums`: the slots summed over `world` ranks.
StepDecision decide(const std::vector<double>& sums, int world);

}  // namespace cnx::worker
