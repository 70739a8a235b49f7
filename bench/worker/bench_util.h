#pragma once
// Shared by the worker benchmarks: "--flag value" options taken out of argv
// before Google Benchmark parses the rest, and an FCMAE trainer's config and
// synthetic data for a model, image size and batch. Header-only.
#include <cstdint>
#include <cstring>
#include <string>
#include <variant>
#include <vector>

#include "common/config.h"
#include "worker/batch_source.h"

namespace cnx::bench {

struct Flag {
  const char* name;                            // "--model"
  std::variant<std::string*, int64_t*> value;  // where its value goes
};

// Removes every "<name> <value>" pair of `flags` from argv (stoll for
// integers: a malformed number throws std::invalid_argument); the other
// arguments keep their order.
inline void take_flags(int* argc, char** argv, const std::vector<Flag>& flags) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const Flag* match = nullptr;
    for (const auto& f : flags)
      if (std::strcmp(argv[i], f.name) == 0 && i + 1 < *argc) match = &f;
    if (match == nullptr) {
      argv[out++] = argv[i];
      continue;
    }
    const char* value = argv[++i];
    if (auto* s = std::get_if<std::string*>(&match->value))
      **s = value;
    else
      *std::get<int64_t*>(match->value) = std::stoll(value);
  }
  *argc = out;
}

// The benchmarks' config: seed 1, a schedule longer than any run (100
// epochs), no periodic logging; the model, input size and batch as given,
// then `overrides` ("key.path=value", as the programs' --set).
inline Config trainer_config(const std::string& model, int64_t size, int64_t batch,
                             const std::vector<std::string>& overrides = {}) {
  Config c = load_config_text("job: {seed: 1}\nschedule: {log_every: 100000, epochs: 100, warmup_epochs: 1}\n",
                              "bench config", overrides);
  c.model.name = model;
  c.data.input_size = size;
  c.data.batch_size = batch;
  return c;
}

// 100,000 synthetic images of the config's size and batch for rank `rank`
// of `world`.
inline worker::SyntheticOptions synthetic_options(const Config& c, int rank, int world) {
  worker::SyntheticOptions so;
  so.samples = 100000;
  so.image_size = c.data.input_size;
  so.batch_size = c.data.batch_size;
  so.rank = rank;
  so.world = world;
  return so;
}

}  // namespace cnx::bench
