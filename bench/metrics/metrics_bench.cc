// Cost of one metric update on the training hot path.
//
//   BM_CounterIncrement        cnx::metrics::Counter::Increment (CAS on atomic<double>)
//   BM_MutexCounterBaseline    the same double behind a std::mutex (what we avoid)
//   BM_AtomicIntBaseline       atomic<uint64_t>::fetch_add (the floor)
//   BM_HistogramObserve        Histogram::Observe with the step-phase layout (18 buckets)
//   BM_ScrapeWorkerCatalogue   collect + serialise one rank's full WorkerMetrics
// Run with --benchmark_counters_tabular=true; compare the ->Threads(n) rows:
// the ratio mutex/CAS is what the "no lock per increment" design buys.
#include <benchmark/benchmark.h>

#include <atomic>
#include <mutex>

#include "common/metrics.h"
#include "common/metrics_catalogue.h"

namespace {

using namespace cnx::metrics;

Counter g_counter;
struct MutexCounter {
  std::mutex m;
  double v = 0;
  void inc(double d) {
    std::lock_guard<std::mutex> lock(m);
    v += d;
  }
} g_mutex_counter;
std::atomic<uint64_t> g_atomic{0};
Histogram g_hist(step_phase_buckets());

void BM_CounterIncrement(benchmark::State& state) {
  for (auto _ : state) g_counter.Increment(1.0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterIncrement)->Threads(1)->Threads(2)->Threads(4);

void BM_MutexCounterBaseline(benchmark::State& state) {
  for (auto _ : state) g_mutex_counter.inc(1.0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MutexCounterBaseline)->Threads(1)->Threads(2)->Threads(4);

void BM_AtomicIntBaseline(benchmark::State& state) {
  for (auto _ : state) g_atomic.fetch_add(1, std::memory_order_relaxed);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AtomicIntBaseline)->Threads(1)->Threads(2)->Threads(4);

void BM_HistogramObserve(benchmark::State& state) {
  double v = 0.0001;
  for (auto _ : state) {
    g_hist.Observe(v);
    v = v < 60 ? v * 1.7 : 0.0001;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2)->Threads(4);

void BM_ScrapeWorkerCatalogue(benchmark::State& state) {
  Registry registry;
  WorkerMetrics w(registry, "bench", 0, 1);
  w.loss.Set(0.5);
  w.phase(StepPhase::kForward).Observe(0.1);
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = serialize_text(registry.Collect());
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_ScrapeWorkerCatalogue);

}  // namespace

BENCHMARK_MAIN();
