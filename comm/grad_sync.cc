#include "comm/grad_sync.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <map>
#include <mutex>
#include <unordered_set>

#include "common/check.h"

namespace cnx::comm {

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

struct GradSync::State {
  Communicator* comm = nullptr;
  GradSyncOptions options;
  std::vector<at::Tensor> params;  // trainable, registration order
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;  // param index -> bucket index
  std::vector<at::Tensor> flats;  // one flat buffer per bucket (+ control slots in the last)
  // Per param: a tensor sharing the flat buffer's storage at the param's slot
  // (options.grad_views and contiguous param), else undefined.
  std::vector<at::Tensor> aliases;
  at::Tensor control_only;  // float64 buffer when there are no buckets but control slots

  // Hooks, removed in ~GradSync. The accumulators are held strongly: the
  // parameters only hold them weakly (LibTorch 1.13 and 2.x alike).
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  mutable std::mutex mu;
  bool alive = true;
  bool sync_enabled = true;
  // Per-step state (guarded by mu).
  std::vector<char> ready;       // per param: hook fired this step
  std::vector<int64_t> pending;  // per bucket: params not ready yet
  size_t next_launch = 0;        // buckets [0, next_launch) are launched
  std::vector<WorkPtr> works;    // per bucket
  std::vector<double> control;   // this rank's control values
  GradSyncStats stats;

  bool step_in_progress() const { return next_launch > 0; }

  void reset_step() {
    std::fill(ready.begin(), ready.end(), 0);
    for (size_t b = 0; b < buckets.size(); ++b) {
      pending[b] = static_cast<int64_t>(buckets[b].params.size());
      works[b].reset();
    }
    next_launch = 0;
    std::fill(control.begin(), control.end(), 0.0);
  }

  // The last bucket carries the control values: it is summed, and finish()
  // divides its gradient part. The others are averaged on the communication
  // thread. Both divide with the same kernel, so results do not depend on it.
  bool summed(size_t b) const { return b + 1 == buckets.size() && !control.empty(); }
  // Nothing to divide: the caller scaled the gradients (options.prescaled).
  bool prescaled = false;

  // True when parameter i's .grad is its alias into the flat buffer.
  bool grad_is_alias(size_t i) const {
    const at::Tensor& g = params[i].grad();
    return aliases[i].defined() && g.defined() && g.data_ptr() == aliases[i].data_ptr() &&
           g.sizes() == aliases[i].sizes() && g.strides() == aliases[i].strides();
  }

  // Copies the bucket's grads that are not aliases of the buffer (zeros for
  // undefined ones) and, for the last bucket, the control values into its
  // flat buffer, then starts the all-reduce.
  void launch(size_t b) {
    const Bucket& bucket = buckets[b];
    at::Tensor& flat = flats[b];
    {
      at::NoGradGuard no_grad;
      for (size_t j = 0; j < bucket.params.size(); ++j) {
        const at::Tensor& p = params[bucket.params[j]];
        const int64_t n = p.numel();
        at::Tensor slot = flat.narrow(0, bucket.offsets[j], n);
        const at::Tensor& g = p.grad();
        if (grad_is_alias(bucket.params[j])) {
          continue;  // already in place
        }
        if (g.defined()) {
          CNX_CHECK(g.layout() == at::kStrided, "GradSync: parameter ", bucket.params[j],
                    " has a sparse gradient; only dense gradients are supported");
          slot.view(g.sizes()).copy_(g);
        } else {
          slot.zero_();
        }
      }
      if (b + 1 == buckets.size() && !control.empty()) {
        at::Tensor values = at::tensor(control, at::TensorOptions().dtype(at::kDouble));
        flat.narrow(0, bucket.numel, static_cast<int64_t>(control.size())).copy_(values.to(flat.options()));
      }
    }
    works[b] = comm->allreduce({flat}, summed(b) || prescaled ? ReduceOp::kSum : ReduceOp::kAverage);
    stats.bytes_reduced += static_cast<int64_t>(flat.nbytes());
  }

  // Called from the post-accumulation hook of parameter i (autograd thread).
  void on_grad_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (!alive || !sync_enabled) {
      return;
    }
    if (ready[i]) {
      throw CommError(cnx::str("GradSync on rank ", comm->rank(), ": the gradient of parameter ", i, " (shape ",
                               params[i].sizes(),
                               ") was accumulated twice in one synchronised step; "
                               "disable sync (NoSyncScope / set_sync_enabled(false)) for the micro-steps of gradient "
                               "accumulation and call finish() after each synchronised backward"));
    }
    ready[i] = 1;
    const size_t b = bucket_of[i];
    if (--pending[b] > 0) {
      return;
    }
    while (next_launch < buckets.size() && pending[next_launch] == 0) {
      launch(next_launch);
      ++next_launch;
      ++stats.buckets_launched_in_backward;
    }
  }
};

namespace {

// Post-accumulation hook: runs after AccumulateGrad stored the final .grad.
class ReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(std::weak_ptr<GradSync::State> state, size_t index) : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto state = state_.lock()) {
      state->on_grad_ready(index_);
    }
    return outputs;
  }

 private:
  std::weak_ptr<GradSync::State> state_;
  size_t index_;
};

}  // namespace

double auto_bucket_cap_mb(at::DeviceType device) {
  return device == at::kCUDA ? 25.0 : 4.0;
}

GradSync::GradSync(Communicator& comm, std::vector<at::Tensor> params, GradSyncOptions options)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.comm = &comm;
  s.options = options;
  s.prescaled = options.prescaled;
  const int64_t first_bytes = mib_to_bytes(options.first_bucket_mb, "GradSyncOptions.first_bucket_mb");
  const int64_t cap_bytes = mib_to_bytes(options.bucket_cap_mb, "GradSyncOptions.bucket_cap_mb");
  if (options.control_slots < 0) {
    throw std::invalid_argument(cnx::str("GradSyncOptions.control_slots must be >= 0, got ", options.control_slots));
  }

  std::unordered_set<const void*> seen;
  std::map<std::pair<int, int>, int> group_ids;  // (dtype, device index) -> group
  std::vector<BucketParam> plan_input;
  for (size_t k = 0; k < params.size(); ++k) {
    const at::Tensor& p = params[k];
    if (!p.defined()) {
      throw CommError(cnx::str("GradSync: parameter ", k, " of ", params.size(), " is undefined"));
    }
    if (!p.requires_grad()) {
      continue;
    }
    if (!p.is_leaf()) {
      throw CommError(cnx::str("GradSync: parameter ", k, " (shape ", p.sizes(),
                               ") is not a leaf tensor; pass the module's parameters"));
    }
    if (p.device().type() != comm.device_type()) {
      throw CommError(cnx::str("GradSync: parameter ", k, " (shape ", p.sizes(), ") is on ", p.device(),
                               " but backend ", comm.backend_name(), " reduces ",
                               c10::DeviceTypeName(comm.device_type()), " tensors"));
    }
    if (p.device().type() != at::kCPU && p.device() != comm.device()) {
      throw CommError(cnx::str("GradSync: parameter ", k, " (shape ", p.sizes(), ") is on ", p.device(),
                               " but this rank's ", comm.backend_name(), " communicator uses ", comm.device(),
                               "; put the model on the communicator's device"));
    }
    if (!comm.supports_dtype(p.scalar_type())) {
      throw CommError(cnx::str("GradSync: parameter ", k, " (shape ", p.sizes(), ") has dtype ", p.scalar_type(),
                               ", which backend ", comm.backend_name(), " cannot all-reduce"));
    }
    if (!seen.insert(p.unsafeGetTensorImpl()).second) {
      throw CommError(
          cnx::str("GradSync: parameter ", k, " (shape ", p.sizes(), ") appears twice in the parameter list"));
    }
    const auto key = std::make_pair(static_cast<int>(p.scalar_type()), static_cast<int>(p.device().index()));
    auto it = group_ids.emplace(key, static_cast<int>(group_ids.size())).first;
    plan_input.push_back(BucketParam{p.numel(), static_cast<int64_t>(p.element_size()), it->second});
    s.params.push_back(p);
  }
  s.buckets = plan_buckets(plan_input, first_bytes, cap_bytes);
  s.bucket_of.assign(s.params.size(), 0);
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    const Bucket& bucket = s.buckets[b];
    for (size_t i : bucket.params) {
      s.bucket_of[i] = b;
    }
    const at::Tensor& first = s.params[bucket.params.front()];
    const int64_t extra = (b + 1 == s.buckets.size()) ? options.control_slots : 0;
    s.flats.push_back(at::zeros({bucket.numel + extra}, first.options().requires_grad(false)));
  }
  if (s.buckets.empty() && options.control_slots > 0) {
    // On the communicator's device: NCCL reduces device memory only.
    s.control_only = at::zeros({options.control_slots}, at::TensorOptions().dtype(at::kDouble).device(comm.device()));
  }
  // Gradients as views of the buckets (DDP's gradient_as_bucket_view): the
  // alias shares the flat buffer's storage without being an autograd view
  // (set_ on a fresh tensor), so optimizers may detach_/zero_ it freely and
  // AccumulateGrad adds into it in place.
  s.aliases.assign(s.params.size(), at::Tensor());
  if (options.grad_views) {
    at::NoGradGuard no_grad;
    for (size_t b = 0; b < s.buckets.size(); ++b) {
      const Bucket& bucket = s.buckets[b];
      for (size_t j = 0; j < bucket.params.size(); ++j) {
        const size_t i = bucket.params[j];
        at::Tensor& p = s.params[i];
        if (!p.is_contiguous()) {
          continue;  // keep the param's own layout; copied at launch
        }
        const at::Tensor& flat = s.flats[b];
        at::Tensor alias = at::empty({0}, flat.options());
        alias.set_(flat.storage(), flat.storage_offset() + bucket.offsets[j], p.sizes(), p.strides());
        if (p.grad().defined()) {
          alias.copy_(p.grad());
        }
        p.mutable_grad() = alias;
        s.aliases[i] = alias;
      }
    }
  }
  s.ready.assign(s.params.size(), 0);
  s.pending.assign(s.buckets.size(), 0);
  s.works.assign(s.buckets.size(), nullptr);
  s.control.assign(static_cast<size_t>(options.control_slots), 0.0);
  control_result_.assign(static_cast<size_t>(options.control_slots), 0.0);
  s.reset_step();

  if (options.overlap) {
    for (size_t i = 0; i < s.params.size(); ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(s.params[i]);
      CNX_CHECK(acc != nullptr, "GradSync: no gradient accumulator for parameter ", i);
      s.hook_keys.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(state_, i)));
      s.accumulators.push_back(std::move(acc));
    }
  }
}

GradSync::~GradSync() {
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.alive = false;
  }
  for (size_t i = 0; i < s.accumulators.size(); ++i) {
    s.accumulators[i]->del_post_hook(s.hook_keys[i]);
  }
  // Collectives already issued must complete before the buffers go away
  // (the Work handles keep them alive; waiting keeps the rank's collective
  // sequence intact). Errors are not rethrown from a destructor.
  for (auto& w : s.works) {
    if (w) {
      try {
        w->wait();
      } catch (...) {
      }
    }
  }
}

void GradSync::set_sync_enabled(bool enabled) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (enabled != state_->sync_enabled && state_->step_in_progress()) {
    throw CommError(
        "GradSync: cannot change sync while buckets of the current step are in flight; call "
        "finish() first");
  }
  state_->sync_enabled = enabled;
}

bool GradSync::sync_enabled() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->sync_enabled;
}

void GradSync::set_control(const std::vector<double>& values) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  if (values.size() != s.control.size()) {
    throw CommError(cnx::str("GradSync::set_control: got ", values.size(),
                             " values but GradSyncOptions.control_slots is ", s.control.size()));
  }
  if (!s.buckets.empty() && s.next_launch == s.buckets.size()) {
    throw CommError(
        "GradSync::set_control: the last bucket of this step was already launched; set control "
        "values before backward");
  }
  s.control = values;
}

void GradSync::finish() {
  State& s = *state_;
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(s.mu);
  if (!s.sync_enabled) {
    throw CommError(
        "GradSync::finish() called while sync is disabled; enable it for the last "
        "micro-step before its backward");
  }
  while (s.next_launch < s.buckets.size()) {
    s.launch(s.next_launch);
    ++s.next_launch;
  }
  WorkPtr control_work;
  if (s.control_only.defined()) {
    s.control_only.copy_(at::tensor(s.control, at::TensorOptions().dtype(at::kDouble)));
    control_work = s.comm->allreduce({s.control_only}, ReduceOp::kSum);
  }
  std::vector<WorkPtr> works = s.works;
  lock.unlock();

  // Wait for every collective even if one fails, so that no buffer is
  // reused while the communication thread still writes it.
  const auto wait_start = std::chrono::steady_clock::now();
  std::exception_ptr error;
  double allreduce_seconds = 0.0;
  auto wait_one = [&](const WorkPtr& w) {
    try {
      w->wait();
      allreduce_seconds += w->seconds();
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  };
  for (const WorkPtr& w : works) wait_one(w);
  if (control_work) wait_one(control_work);
  const double waited = seconds_since(wait_start);

  lock.lock();
  s.stats.wait_seconds += waited;
  s.stats.allreduce_seconds += allreduce_seconds;
  if (error) {
    s.reset_step();
    std::rethrow_exception(error);
  }
  {
    at::NoGradGuard no_grad;
    const double world = static_cast<double>(s.comm->size());
    for (size_t b = 0; b < s.buckets.size(); ++b) {
      const Bucket& bucket = s.buckets[b];
      at::Tensor grads = s.flats[b].narrow(0, 0, bucket.numel);
      if (s.summed(b) && !s.prescaled) {
        grads.div_(world);
      }
      for (size_t j = 0; j < bucket.params.size(); ++j) {
        const size_t i = bucket.params[j];
        at::Tensor& p = s.params[i];
        if (s.grad_is_alias(i)) {
          continue;  // the average is already in .grad
        }
        at::Tensor& g = p.mutable_grad();
        if (s.aliases[i].defined()) {
          g = s.aliases[i];  // rebind (e.g. after zero_grad(set_to_none)); holds the average
          continue;
        }
        at::Tensor avg = grads.narrow(0, bucket.offsets[j], p.numel()).view(p.sizes());
        if (g.defined()) {
          g.copy_(avg);
        } else {
          g = at::empty_like(p, at::MemoryFormat::Preserve).copy_(avg);
        }
      }
    }
    if (!control_result_.empty()) {
      at::Tensor values =
          s.control_only.defined()
              ? s.control_only
              : s.flats.back().narrow(0, s.buckets.back().numel, static_cast<int64_t>(control_result_.size()));
      at::Tensor host = values.to(at::TensorOptions().dtype(at::kDouble).device(at::kCPU)).contiguous();
      const double* data = host.data_ptr<double>();
      control_result_.assign(data, data + host.numel());
    }
  }
  s.stats.steps += 1;
  s.stats.buckets_reduced += static_cast<int64_t>(s.buckets.size());
  if (control_work) s.stats.bytes_reduced += static_cast<int64_t>(s.control_only.nbytes());
  s.reset_step();
  s.stats.finish_seconds += seconds_since(start);
}

const std::vector<Bucket>& GradSync::buckets() const {
  return state_->buckets;
}

size_t GradSync::num_params() const {
  return state_->params.size();
}

double GradSync::gradient_scale() const {
  return state_->prescaled ? 1.0 / static_cast<double>(state_->comm->size()) : 1.0;
}

GradSyncStats GradSync::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->stats;
}

void GradSync::reset_stats() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->stats = GradSyncStats{};
}

}  // namespace cnx::comm
