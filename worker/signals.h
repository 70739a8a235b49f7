#pragma once
// SIGTERM/SIGINT handling for preemption (Kubernetes sends SIGTERM, waits
// the grace period, then SIGKILL).
//
// install_termination_handler() installs an async-signal-safe handler that
// only sets a process-wide atomic flag; the trainer polls termination_requested()
// once per step and puts it into the step's control values, so every rank
// learns of it in the same step and they all checkpoint and exit together.
// A second signal while the flag is already set restores the default action
// and re-raises it (a user pressing Ctrl-C twice really stops the process).
namespace cnx::worker {

void install_termination_handler();
bool termination_requested();
// For tests: sets or clears the flag as a signal would.
void set_termination_requested(bool value);

}  // namespace cnx::worker
