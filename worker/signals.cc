#include "worker/signals.h"

#include <atomic>
#include <csignal>

namespace cnx::worker {
namespace {

std::atomic<bool> g_terminate{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the signal flag must be lock-free");

extern "C" void on_termination_signal(int sig) {
  if (g_terminate.exchange(true)) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

void install_termination_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_termination_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

bool termination_requested() {
  return g_terminate.load();
}
void set_termination_requested(bool value) {
  g_terminate.store(value);
}

}  // namespace cnx::worker
