// Prints the loss-scale sequence of worker/loss_scaler.h for the scenario on
// stdin, for tests/worker/loss_scaler_reference.py:
//   input:  "init_scale growth_factor backoff_factor growth_interval flags"
//           (flags: one character per step, '1' = found_inf, '0' = not)
//   output: per step "scale_bits growth_tracker" (scale_bits: the float32
//           scale's bit pattern as an unsigned decimal), after the update.
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>

#include "worker/loss_scaler.h"

int main() {
  cnx::worker::LossScalerOptions o;
  o.enabled = true;
  std::string flags;
  if (!(std::cin >> o.init_scale >> o.growth_factor >> o.backoff_factor >> o.growth_interval >> flags)) {
    std::cerr << "loss_scaler_dump: expected 'init growth backoff interval flags' on stdin\n";
    return 2;
  }
  cnx::worker::LossScaler s(o);
  for (char f : flags) {
    s.update(f == '1');
    uint32_t bits = 0;
    std::memcpy(&bits, &s.state().scale, sizeof bits);
    std::cout << bits << " " << s.state().growth_tracker << "\n";
  }
  return 0;
}
