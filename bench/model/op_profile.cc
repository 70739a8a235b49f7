#include "bench/model/op_profile.h"

#include <ATen/core/ivalue.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <utility>

namespace cnx::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Frame {
  Clock::time_point start;
  std::string name;
  std::string shape;  // counting frames: the op and its input shapes
  double own_flops = 0.0;
  bool backward = false;
  bool counts = false;  // this frame counted the FLOPs of its subtree
  double flops = 0.0;   // top-level frames: FLOPs counted anywhere below
};

struct ThreadState {
  std::vector<Frame> stack;
  int counting = 0;  // frames on the stack with counts == true
};

thread_local ThreadState t_state;
std::mutex g_mutex;
std::map<std::pair<std::string, bool>, OpRow> g_rows;
std::map<std::pair<std::string, bool>, OpRow> g_shapes;

std::string describe_inputs(const std::string& name, c10::ArrayRef<const c10::IValue> in) {
  std::ostringstream s;
  s << name;
  for (const auto& v : in) {
    if (!v.isTensor() || !v.toTensor().defined()) continue;
    const auto& t = v.toTensor();
    s << " [";
    for (int64_t d = 0; d < t.dim(); ++d) s << (d ? "x" : "") << t.size(d);
    if (t.dim() == 2 && !t.is_contiguous()) s << "T";
    s << "]";
  }
  return s.str();
}

// Autograd nodes run inside "autograd::engine::evaluate_function: <node>".
constexpr const char* kEvaluate = "autograd::engine::evaluate_function: ";

std::string short_name(const char* raw) {
  std::string s = raw;
  if (s.rfind(kEvaluate, 0) == 0) s = s.substr(std::char_traits<char>::length(kEvaluate));
  const std::string cpp = "torch::autograd::CppNode<";
  if (s.rfind(cpp, 0) == 0) {
    s = s.substr(cpp.size());
    if (!s.empty() && s.back() == '>') s.pop_back();
    const auto colon = s.rfind("::");
    if (colon != std::string::npos) s = s.substr(colon + 2);
  }
  return s;
}

double numel(at::IntArrayRef sizes) {
  double n = 1.0;
  for (auto d : sizes) n *= static_cast<double>(d);
  return n;
}

std::optional<at::IntArrayRef> sizes_of(c10::ArrayRef<const c10::IValue> in, size_t i) {
  if (i >= in.size() || !in[i].isTensor()) return std::nullopt;
  const auto& t = in[i].toTensor();
  if (!t.defined()) return std::nullopt;
  return t.sizes();
}

std::optional<std::vector<int64_t>> ints_of(c10::ArrayRef<const c10::IValue> in, size_t i) {
  if (i >= in.size() || !in[i].isIntList()) return std::nullopt;
  return in[i].toIntVector();
}

// Forward FLOPs of a non-transposed convolution from input/weight shapes.
std::optional<double> conv_flops(at::IntArrayRef x, at::IntArrayRef w, const std::vector<int64_t>& stride,
                                 const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation) {
  if (x.size() != w.size() || x.size() < 3) return std::nullopt;
  const size_t spatial = x.size() - 2;
  double out = static_cast<double>(x[0]) * static_cast<double>(w[0]);
  for (size_t d = 0; d < spatial; ++d) {
    auto pick = [&](const std::vector<int64_t>& v, int64_t dflt) {
      return v.empty() ? dflt : v[std::min(d, v.size() - 1)];
    };
    const int64_t s = pick(stride, 1), p = pick(padding, 0), dl = pick(dilation, 1);
    const int64_t o = (x[2 + d] + 2 * p - dl * (w[2 + d] - 1) - 1) / s + 1;
    out *= static_cast<double>(o);
  }
  double per_out = static_cast<double>(w[1]);
  for (size_t d = 0; d < spatial; ++d) per_out *= static_cast<double>(w[2 + d]);
  return 2.0 * out * per_out;
}

// FLOPs of `name` from its inputs, or nullopt when the op has no rule (or the
// inputs are not in the expected form; a nested op may then count them).
std::optional<double> op_flops(const std::string& name, c10::ArrayRef<const c10::IValue> in) {
  // cnx::onednn_matmul: model/onednn_matmul.cc records (a, b) as aten::mm does.
  if (name == "aten::mm" || name == "aten::matmul" || name == "cnx::onednn_matmul") {
    auto a = sizes_of(in, 0), b = sizes_of(in, 1);
    if (!a || !b || a->size() < 1 || b->size() < 2) return std::nullopt;
    const double k = static_cast<double>(a->back());
    return 2.0 * numel(*a) / k * k * static_cast<double>(b->back()) *
           (b->size() > 2 && a->size() <= 2 ? numel(b->slice(0, b->size() - 2)) : 1.0);
  }
  if (name == "aten::addmm") {
    auto a = sizes_of(in, 1), b = sizes_of(in, 2);
    if (!a || !b || a->size() != 2 || b->size() != 2) return std::nullopt;
    return 2.0 * static_cast<double>((*a)[0]) * static_cast<double>((*a)[1]) * static_cast<double>((*b)[1]);
  }
  if (name == "aten::bmm" || name == "aten::baddbmm") {
    const size_t o = name == "aten::bmm" ? 0 : 1;
    auto a = sizes_of(in, o), b = sizes_of(in, o + 1);
    if (!a || !b || a->size() != 3 || b->size() != 3) return std::nullopt;
    return 2.0 * numel(*a) * static_cast<double>((*b)[2]);
  }
  // model/cnx_gemm.cc: forward (x (M,K), w (N,K)), dgrad (dy (M,N), w (N,K)),
  // wgrad (dy (M,N), x (M,K)).
  if (name == "cnx::gemm_forward" || name == "cnx::gemm_dgrad" || name == "cnx::gemm_wgrad") {
    auto a = sizes_of(in, 0), b = sizes_of(in, 1);
    if (!a || !b || a->size() != 2 || b->size() != 2) return std::nullopt;
    const double other = name == "cnx::gemm_forward" ? (*b)[0] : (*b)[1];
    return 2.0 * numel(*a) * other;
  }
  if (name == "aten::linear") {
    auto x = sizes_of(in, 0), w = sizes_of(in, 1);
    if (!x || !w || w->size() != 2) return std::nullopt;
    return 2.0 * numel(*x) * static_cast<double>((*w)[0]);
  }
  if (name == "aten::conv2d" || name == "aten::convolution" || name == "aten::_convolution") {
    auto x = sizes_of(in, 0), w = sizes_of(in, 1);
    auto stride = ints_of(in, 3), padding = ints_of(in, 4), dilation = ints_of(in, 5);
    if (!x || !w || !stride || !padding || !dilation) return std::nullopt;
    return conv_flops(*x, *w, *stride, *padding, *dilation);
  }
  if (name == "aten::convolution_backward") {
    auto go = sizes_of(in, 0), w = sizes_of(in, 2);
    if (!go || !w || w->size() < 3 || in.size() < 11 || !in[10].isBoolList()) return std::nullopt;
    const auto mask = in[10].toBoolList();
    double per_out = static_cast<double>((*w)[1]);
    for (size_t d = 2; d < w->size(); ++d) per_out *= static_cast<double>((*w)[d]);
    const double fwd = 2.0 * numel(*go) * per_out;
    return fwd * ((mask.get(0) ? 1.0 : 0.0) + (mask.get(1) ? 1.0 : 0.0));
  }
  if (name == "cnx::sparse_dwconv_forward" || name == "cnx::sparse_dwconv_backward") {
    auto x = sizes_of(in, 0), map = sizes_of(in, 1);
    if (!x || !map || x->size() != 2 || map->size() != 2) return std::nullopt;
    const double one = 2.0 * numel(*x) * static_cast<double>((*map)[1]);
    if (name == "cnx::sparse_dwconv_forward") return one;
    double grads = 0.0;
    for (size_t i = 2; i < 4 && i < in.size(); ++i) grads += (in[i].isBool() && in[i].toBool()) ? 1.0 : 0.0;
    return one * grads;
  }
  return std::nullopt;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  auto& st = t_state;
  Frame f;
  f.name = short_name(fn.name());
  f.backward = fn.scope() == at::RecordScope::BACKWARD_FUNCTION || std::string(fn.name()).rfind(kEvaluate, 0) == 0 ||
               (!st.stack.empty() && st.stack.front().backward);
  if (st.counting == 0) {
    if (auto flops = op_flops(f.name, fn.inputs())) {
      f.counts = true;
      f.own_flops = *flops;
      f.shape = describe_inputs(f.name, fn.inputs());
      ++st.counting;
      if (st.stack.empty()) {
        f.flops += *flops;
      } else {
        st.stack.front().flops += *flops;
      }
    }
  }
  f.start = Clock::now();
  st.stack.push_back(std::move(f));
  return nullptr;
}

void on_end(const at::RecordFunction& /*fn*/, at::ObserverContext* /*ctx*/) {
  auto& st = t_state;
  if (st.stack.empty()) return;  // began before start()
  const auto end = Clock::now();
  Frame f = std::move(st.stack.back());
  st.stack.pop_back();
  const double seconds = std::chrono::duration<double>(end - f.start).count();
  if (f.counts) {
    --st.counting;
    const bool bwd = f.backward;
    std::lock_guard<std::mutex> lock(g_mutex);
    auto& row = g_shapes[{f.shape, bwd}];
    row.name = f.shape;
    row.backward = bwd;
    row.calls += 1;
    row.seconds += seconds;
    row.flops += f.own_flops;
  }
  if (!st.stack.empty()) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& row = g_rows[{f.name, f.backward}];
  row.name = f.name;
  row.backward = f.backward;
  row.calls += 1;
  row.seconds += seconds;
  row.flops += f.flops;
}

}  // namespace

OpProfile::OpProfile() = default;

OpProfile::~OpProfile() {
  if (active_) stop();
}

void OpProfile::start() {
  if (active_) stop();
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_rows.clear();
    g_shapes.clear();
  }
  t_state = ThreadState{};
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&on_start, &on_end).needsInputs(true));
  active_ = true;
}

void OpProfile::stop() {
  if (!active_) return;
  at::removeCallback(handle_);
  active_ = false;
  t_state = ThreadState{};
}

std::vector<OpRow> OpProfile::rows() const {
  return sorted(g_rows);
}

std::vector<OpRow> OpProfile::flop_rows() const {
  return sorted(g_shapes);
}

std::vector<OpRow> OpProfile::sorted(const std::map<std::pair<std::string, bool>, OpRow>& rows) {
  std::vector<OpRow> out;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const auto& kv : rows) out.push_back(kv.second);
  }
  std::sort(out.begin(), out.end(), [](const OpRow& a, const OpRow& b) { return a.seconds > b.seconds; });
  return out;
}

std::string format_breakdown(const std::vector<OpRow>& rows, int steps, const std::string& title, double min_share) {
  double total = 0.0, total_flops = 0.0;
  for (const auto& r : rows) {
    total += r.seconds;
    total_flops += r.flops;
  }
  const double n = std::max(steps, 1);
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "%-60s %4s %6s %8s %6s %8s %8s\n", title.c_str(), "pass", "calls", "ms/step",
                "share", "GFLOP", "GFLOP/s");
  out << line;
  OpRow rest;
  rest.name = "(other ops)";
  auto print = [&](const OpRow& r, bool summary) {
    const double ms = 1e3 * r.seconds / n, gf = 1e-9 * r.flops / n;
    std::snprintf(line, sizeof line, "%-60.60s %4s %6.0f %8.2f %5.1f%% %8.3f %8.1f\n", r.name.c_str(),
                  summary ? "-" : (r.backward ? "bwd" : "fwd"), static_cast<double>(r.calls) / n, ms,
                  total > 0 ? 100.0 * r.seconds / total : 0.0, gf, r.seconds > 0 ? 1e-9 * r.flops / r.seconds : 0.0);
    out << line;
  };
  for (const auto& r : rows) {
    if (total > 0 && r.seconds / total < min_share) {
      rest.calls += r.calls;
      rest.seconds += r.seconds;
      rest.flops += r.flops;
    } else {
      print(r, false);
    }
  }
  if (rest.calls > 0) print(rest, true);
  OpRow all;
  all.name = "total of the rows";
  all.calls = 0;
  for (const auto& r : rows) all.calls += r.calls;
  all.seconds = total;
  all.flops = total_flops;
  print(all, true);
  return out.str();
}

}  // namespace cnx::bench
