#include "model/onednn_matmul.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/cpu_features.h"
#include "model/cnx_gemm.h"
#include "model/precision.h"

#ifdef CNX_HAVE_ONEDNN
#include <dnnl.hpp>
#endif

namespace cnx::model {
namespace {

GemmPath initial_path() {
  const char* env = std::getenv("CNX_GEMM");
  return env && *env ? parse_gemm_path(env, "CNX_GEMM") : GemmPath::kAuto;
}

std::atomic<GemmPath>& current_path() {
  static std::atomic<GemmPath> path{initial_path()};
  return path;
}

GeluBackward initial_gelu_mode() {
  const char* env = std::getenv("CNX_ONEDNN_GELU");
  if (env == nullptr || *env == '\0') return GeluBackward::kKeep;
  const std::string v = env;
  if (v == "keep") return GeluBackward::kKeep;
  if (v == "recompute") return GeluBackward::kRecompute;
  CNX_CHECK(false, "CNX_ONEDNN_GELU: '", v, "' is not a GELU backward mode (expected keep or recompute)");
  return GeluBackward::kKeep;
}

std::atomic<int64_t> g_calls{0};

std::atomic<GeluBackward>& current_gelu_mode() {
  static std::atomic<GeluBackward> mode{initial_gelu_mode()};
  return mode;
}

// The BLAS path: exactly what the block computed before the oneDNN path.
at::Tensor blas_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool gelu) {
  auto y = at::linear(x, w, b);
  return gelu ? at::gelu(y) : y;
}

#ifdef CNX_HAVE_ONEDNN

// One operand as oneDNN sees it: dims and element strides.
struct Operand {
  int64_t rows, cols, rs, cs;
  bool operator==(const Operand& o) const { return rows == o.rows && cols == o.cols && rs == o.rs && cs == o.cs; }
};

Operand operand(const at::Tensor& t) {
  return {t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

// accumulate: dst += a b (oneDNN's sum post-op) instead of dst = a b.
struct Key {
  Operand a, b;
  bool bias, gelu, accumulate;
  int threads;
  bool operator==(const Key& k) const {
    return a == k.a && b == k.b && bias == k.bias && gelu == k.gelu && accumulate == k.accumulate &&
           threads == k.threads;
  }
};

struct Entry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  size_t scratchpad_bytes;
};

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::memory::desc md(const Operand& o) {
  return dnnl::memory::desc({o.rows, o.cols}, dnnl::memory::data_type::f32, {o.rs, o.cs});
}

// Primitives by key, the oldest dropped first beyond kMaxEntries (a model
// has a few shapes per stage; a last partial batch adds a few more).
class PrimitiveCache {
 public:
  std::shared_ptr<const Entry> get(const Key& key) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& [k, e] : entries_) {
        if (k == key) return e;
      }
    }
    auto entry = create(key);  // outside the lock: creation takes a while
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.emplace_back(key, entry);
    if (entries_.size() > kMaxEntries) entries_.pop_front();
    return entry;
  }

 private:
  static std::shared_ptr<const Entry> create(const Key& key) {
    const dnnl::memory::desc a_md = md(key.a), b_md = md(key.b);
    const dnnl::memory::desc c_md({key.a.rows, key.b.cols}, dnnl::memory::data_type::f32, {key.b.cols, int64_t{1}});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::post_ops po;
    if (key.accumulate) po.append_sum(1.f);
    if (key.gelu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
    if (key.accumulate || key.gelu) attr.set_post_ops(po);
    const dnnl::memory::desc bias_md({1, key.b.cols}, dnnl::memory::data_type::f32, {key.b.cols, int64_t{1}});
    auto desc = key.bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md) : dnnl::matmul::desc(a_md, b_md, c_md);
    dnnl::matmul::primitive_desc pd(desc, attr, engine());
    auto e = std::make_shared<Entry>(Entry{pd, dnnl::matmul(pd), pd.scratchpad_desc().get_size()});
    return e;
  }

  static constexpr size_t kMaxEntries = 64;
  std::mutex mutex_;
  std::deque<std::pair<Key, std::shared_ptr<const Entry>>> entries_;
};

PrimitiveCache& cache() {
  static PrimitiveCache c;
  return c;
}

// An operand oneDNN takes as it is: 2-D, float32, one unit stride and the
// other at least the extent it steps over (no broadcast zero strides).
at::Tensor plain(const at::Tensor& t) {
  const bool ok = (t.stride(1) == 1 && t.stride(0) >= t.size(1)) || (t.stride(0) == 1 && t.stride(1) >= t.size(0));
  return ok && t.size(0) > 1 && t.size(1) > 1 ? t : t.contiguous();
}

// The reduction is cut into blocks of at most kKBlock, each added to the
// output in float32 (the first with the bias, the last with the GELU), as
// OpenBLAS's GEMM driver does: one long chain of K products per output
// rounds worse (measured: the float64-oracle errors of the K = 512 .. 2048
// GEMMs grew by up to 1.5x, enough to fail the sparse-vs-dense-masked
// float32 accuracy test); with the blocks they match BLAS's.
constexpr int64_t kKBlock = 320;
// The weight gradients (A transposed: the reduction runs over the M rows of
// activations, up to 38912) rounded no worse with blocks of 4096 than of 320
// in the float32-vs-float64 FCMAE test (gradient errors 3.53e-7 vs 3.52e-7),
// and 122 blocks of 320 cost a primitive call each.
constexpr int64_t kKBlockWgrad = 4096;

void run_block(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, bool gelu, bool accumulate,
               at::Tensor& out) {
  const Key key{operand(a), operand(b), bias.defined(), gelu, accumulate, at::get_num_threads()};
  try {
    auto entry = cache().get(key);
    const auto& eng = engine();
    thread_local dnnl::stream strm(engine());
    at::Tensor scratch;
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(entry->pd.src_desc(), eng, a.data_ptr<float>())},
        {DNNL_ARG_WEIGHTS, dnnl::memory(entry->pd.weights_desc(), eng, b.data_ptr<float>())},
        {DNNL_ARG_DST, dnnl::memory(entry->pd.dst_desc(), eng, out.data_ptr<float>())}};
    const at::Tensor bias_c = bias.defined() ? bias.contiguous() : bias;
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(entry->pd.bias_desc(), eng, bias_c.data_ptr<float>()));
    if (entry->scratchpad_bytes > 0) {
      scratch = at::empty({static_cast<int64_t>(entry->scratchpad_bytes)}, a.options().dtype(at::kByte));
      args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(entry->pd.scratchpad_desc(), eng, scratch.data_ptr()));
    }
    entry->prim.execute(strm, args);
    strm.wait();
  } catch (const dnnl::error& e) {
    CNX_CHECK(false, "oneDNN matmul ", a.sizes(), " x ", b.sizes(), (bias.defined() ? " + bias" : ""),
              (gelu ? " + gelu" : ""), " failed: ", e.what(), " (status ", static_cast<int>(e.status), ")");
  }
}

at::Tensor run_matmul(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& bias, bool gelu) {
  const at::Tensor a = plain(a_in), b = plain(b_in);
  RECORD_FUNCTION("cnx::onednn_matmul", std::vector<c10::IValue>({a, b}));
  auto out = at::empty({a.size(0), b.size(1)}, a.options());
  if (out.numel() == 0) return out;
  const int64_t k = a.size(1);
  if (k == 0) return bias.defined() ? out.copy_(bias.expand_as(out)) : out.zero_();
  // Nearly equal blocks: at most two block lengths, so two primitives.
  const int64_t kblock = a.stride(0) == 1 && a.size(0) > 1 ? kKBlockWgrad : kKBlock;
  const int64_t blocks = (k + kblock - 1) / kblock;
  int64_t k0 = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t len = k / blocks + (i < k % blocks ? 1 : 0);
    run_block(a.narrow(1, k0, len), b.narrow(0, k0, len), i == 0 ? bias : at::Tensor(), gelu && i == blocks - 1, i > 0,
              out);
    k0 += len;
  }
  g_calls.fetch_add(1, std::memory_order_relaxed);
  return out;
}

// y = x w^T + b [GELU], x (M, K) contiguous rows; backward as the header says.
class OnednnLinearFn : public torch::autograd::Function<OnednnLinearFn> {
 public:
  // `b_or_empty`: the bias, or an empty placeholder when has_bias is false
  // (LibTorch 1.13's Function takes no undefined tensor inputs).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b_or_empty, bool has_bias, bool gelu) {
    const at::Tensor b = has_bias ? b_or_empty : at::Tensor();
    const bool recompute = gelu && gelu_backward_mode() == GeluBackward::kRecompute;
    ctx->saved_data["gelu"] = gelu;
    ctx->saved_data["recompute"] = recompute;
    ctx->saved_data["has_bias"] = has_bias;
    if (!gelu || recompute) {
      auto y = run_matmul(x, w.t(), b, gelu);
      ctx->save_for_backward({x, w, b_or_empty});
      return y;
    }
    auto z = run_matmul(x, w.t(), b, false);
    ctx->save_for_backward({x, w, z});
    return at::gelu(z);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    at::Tensor g = grads[0].contiguous();
    if (ctx->saved_data["gelu"].toBool()) {
      const bool recompute = ctx->saved_data["recompute"].toBool();
      const at::Tensor b = ctx->saved_data["has_bias"].toBool() ? saved[2] : at::Tensor();
      const at::Tensor z = recompute ? run_matmul(x, w.t(), b, false) : saved[2];
      g = at::gelu_backward(g, z);
    }
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) dx = run_matmul(g, w, at::Tensor(), false);      // (M,N)(N,K)
    if (ctx->needs_input_grad(1)) dw = run_matmul(g.t(), x, at::Tensor(), false);  // (N,M)(M,K)
    if (ctx->needs_input_grad(2)) db = g.sum(0);
    return {dx, dw, db, at::Tensor(), at::Tensor()};
  }
};

#endif  // CNX_HAVE_ONEDNN

// Whether x w^T + b runs on our own GEMM path (cnx or onednn) rather than
// at::linear: float32 CPU tensors outside autocast, shapes at::linear takes.
bool float32_cpu_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat) return false;
  if (!w.device().is_cpu() || (b.defined() && !b.device().is_cpu())) return false;
  if (b.defined() && (b.scalar_type() != at::kFloat || b.dim() != 1)) return false;
  if (w.dim() != 2 || x.dim() < 1 || x.size(-1) != w.size(1)) return false;  // let at::linear report it
  return !autocast_active(x);  // autocast: bfloat16 GEMMs through LibTorch, as before
}

}  // namespace

GemmPath parse_gemm_path(const std::string& value, const std::string& what) {
  if (value == "auto") return GemmPath::kAuto;
  if (value == "blas") return GemmPath::kBlas;
  if (value == "cnx") {
    CNX_CHECK(cnx_gemm_supported(), what, ": GEMM path 'cnx' needs a CPU with AVX-512F (this one: ",
              cnx::cpu::describe_simd(cnx::cpu::detect_cpu()), "); use auto, onednn or blas");
    return GemmPath::kCnx;
  }
  if (value == "onednn") {
    CNX_CHECK(has_onednn_gemm(), what,
              ": GEMM path 'onednn' is not in this build (CMake found no usable oneDNN: install libdnnl-dev, "
              "and LibTorch must be Debian's, which loads libdnnl.so.2); use auto or blas");
    return GemmPath::kOnednn;
  }
  CNX_CHECK(false, what, ": unknown GEMM path '", value, "' (expected auto, cnx, onednn or blas)");
  return GemmPath::kAuto;
}

const char* gemm_path_name(GemmPath path) {
  switch (path) {
    case GemmPath::kAuto:
      return "auto";
    case GemmPath::kOnednn:
      return "onednn";
    case GemmPath::kBlas:
      return "blas";
    case GemmPath::kCnx:
      return "cnx";
  }
  return "?";
}

bool has_onednn_gemm() {
#ifdef CNX_HAVE_ONEDNN
  return true;
#else
  return false;
#endif
}

std::string onednn_version() {
#ifdef CNX_HAVE_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  return cnx::str(v->major, ".", v->minor, ".", v->patch);
#else
  return "";
#endif
}

GemmPath gemm_path() {
  return current_path().load();
}

void set_gemm_path(GemmPath path) {
  CNX_CHECK(path != GemmPath::kOnednn || has_onednn_gemm(), "set_gemm_path: this build has no oneDNN path");
  CNX_CHECK(path != GemmPath::kCnx || cnx_gemm_supported(), "set_gemm_path: this CPU has no AVX-512F for cnx");
  current_path().store(path);
}

GemmPath effective_gemm_path() {
  const GemmPath p = gemm_path();
  if (p != GemmPath::kAuto) return p;
  // Measured (bench/model/README.md, "oneDNN GEMM path in the step" and "The
  // project's AVX-512 GEMM kernels"): at 1 intra-op thread oneDNN is as fast
  // as the cnx kernels on the step (its large decoder GEMMs faster, the
  // small-K stage GEMMs slower) and faster than BLAS; at 2 threads oneDNN
  // was slower than BLAS (its blocked reduction has more parallel regions,
  // each a barrier) and cnx faster than BLAS.
  const int threads = at::get_num_threads();
  if (threads == 1 && has_onednn_gemm()) return GemmPath::kOnednn;
  return cnx_gemm_supported() ? GemmPath::kCnx : GemmPath::kBlas;
}

std::string describe_gemm_path() {
  const GemmPath eff = effective_gemm_path();
  std::string s = cnx::str("GEMM path ", gemm_path_name(eff), " (");
  const char* gelu_bw = gelu_backward_mode() == GeluBackward::kKeep ? "on the kept pre-activation" : "recomputing it";
  if (eff == GemmPath::kCnx) {
    s += cnx::str("the project's AVX-512 kernels for the blocks' pointwise Linears, GELU backward ", gelu_bw);
  } else if (eff == GemmPath::kOnednn) {
    s += cnx::str("oneDNN ", onednn_version(), " matmul for the blocks' pointwise Linears, GELU backward ", gelu_bw);
  } else {
    s += cnx::str("LibTorch's GEMM, i.e. the BLAS line above",
                  has_onednn_gemm() ? "" : "; this build has no oneDNN path");
  }
  const char* env = std::getenv("CNX_GEMM");
  s += cnx::str("; setting ", gemm_path_name(gemm_path()), env && *env ? " from CNX_GEMM" : "",
                gemm_path() != GemmPath::kAuto
                    ? ""
                    : cnx::str(": ",
                               has_onednn_gemm()      ? "onednn"
                               : cnx_gemm_supported() ? "cnx"
                                                      : "blas",
                               " at 1 thread, ", cnx_gemm_supported() ? "cnx" : "blas", " at more"),
                "; ", at::get_num_threads(), " thread(s))");
  return s;
}

void log_gemm_path(const char* program) {
  try {
    std::fprintf(stderr, "%s: %s\n", program, describe_gemm_path().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    std::exit(2);
  }
}

GeluBackward gelu_backward_mode() {
  return current_gelu_mode().load();
}

void set_gelu_backward_mode(GeluBackward mode) {
  current_gelu_mode().store(mode);
}

at::Tensor onednn_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, bool gelu) {
#ifdef CNX_HAVE_ONEDNN
  CNX_CHECK(a.defined() && b.defined() && a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0),
            "onednn_matmul: need a (m, k) and b (k, n)");
  CNX_CHECK(
      a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
      "onednn_matmul: float32 CPU tensors only, got ", a.scalar_type(), " and ", b.scalar_type());
  CNX_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == b.size(1) && bias.scalar_type() == at::kFloat),
            "onednn_matmul: bias must be float32 (", b.size(1), ")");
  return run_matmul(a, b, bias, gelu);
#else
  (void)a, (void)b, (void)bias, (void)gelu;
  CNX_CHECK(false, "onednn_matmul: this build has no oneDNN");
  return {};
#endif
}

int64_t onednn_matmul_calls() {
  return g_calls.load();
}

at::Tensor pointwise_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool gelu) {
  const GemmPath path = effective_gemm_path();
  if (path == GemmPath::kCnx && float32_cpu_linear(x, w, b)) {
    const auto lead = x.sizes().slice(0, x.dim() - 1);
    RECORD_FUNCTION("cnx::pointwise_linear", std::vector<c10::IValue>({x, w}));
    const at::Tensor y = cnx_linear(x.reshape({-1, x.size(-1)}).contiguous(), w, b, gelu);
    std::vector<int64_t> shape(lead.begin(), lead.end());
    shape.push_back(w.size(0));
    return y.view(shape);
  }
#ifdef CNX_HAVE_ONEDNN
  if (path == GemmPath::kOnednn && float32_cpu_linear(x, w, b)) {
    const auto lead = x.sizes().slice(0, x.dim() - 1);
    const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
    at::Tensor y;
    const bool grad =
        at::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
    RECORD_FUNCTION("cnx::pointwise_linear", std::vector<c10::IValue>({x2, w}));
    if (grad) {
      y = OnednnLinearFn::apply(x2, w, b.defined() ? b : x2.new_empty({0}), b.defined(), gelu);
    } else {
      y = run_matmul(x2, w.t(), b, gelu);
    }
    std::vector<int64_t> shape(lead.begin(), lead.end());
    shape.push_back(w.size(0));
    return y.view(shape);
  }
#endif
  return blas_linear(x, w, b, gelu);
}

}  // namespace cnx::model
