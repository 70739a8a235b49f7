#pragma once
// Where the coordinator plans checkpoints: the lead a plan needs over the
// fastest rank, and the step of the next cadence checkpoint (every_steps,
// every_minutes). Pure functions of their arguments: no state, no clock.
// The scheduler gathers the inputs and records the plan (scheduler.h,
// "Checkpoint protocol").
#include <cstdint>
#include <optional>
#include <string>

namespace cnx::coordinator {

// a + b, or `cap` when the sum would pass it (a, b >= 0).
int64_t add_capped(int64_t a, int64_t b, int64_t cap);

// Steps a plan must lead the fastest rank by, so that every rank hears of it
// (in a heartbeat reply) before reaching it: the steps a rank at `rate`
// steps/s makes in two heartbeat intervals, plus one; `cap` when that is not
// finite or does not fit below it.
int64_t plan_margin(double rate, double heartbeat_s, int64_t cap);

struct CadenceInput {
  int64_t every_steps = 0;        // 0: no step cadence
  double every_minutes = 0;       // 0: no time cadence
  int64_t top_step = 0;           // the fastest rank's step (>= 0)
  double rate = 0;                // the fastest observed steps per second (0: none yet)
  int64_t margin = 1;             // plan_margin(rate, ...)
  int64_t committed_step = 0;     // highest step committed in this attempt (0: none)
  double last_commit_unix_s = 0;  // the last commit, or when the attempt started running
  double now = 0;
  int64_t cap = 0;  // steps never reach it (kMaxStep)
};

struct CadencePlan {
  int64_t step = 0;
  std::string why;  // "every N steps" or "every M minutes", for the log
};

// The cadence checkpoint to plan now, if any. A plan is made once its step
// is within two margins of the fastest rank and at least one margin ahead of
// it; the window is wider than the steps between two heartbeats, so a
// heartbeat always lands in it: a step is missed only when the rate rises
// faster than the margin foresaw.
//   every_steps N: the first multiple of N at least a margin ahead of
//     top_step and after committed_step, in this attempt's step numbering (a
//     world-size change rescales steps).
//   every_minutes M (when the step rule plans nothing): the interval ends at
//     last_commit_unix_s + 60 M; planned once it has ended, or once the
//     step the fastest rank reaches then is within two margins; the step is
//     top_step + max(margin, steps until the end of the interval).
std::optional<CadencePlan> next_cadence_checkpoint(const CadenceInput& in);

}  // namespace cnx::coordinator
