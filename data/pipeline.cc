#include "data/pipeline.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "common/check.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/rng.h"
#include "data/epoch_order.h"
#include "data/tar_io.h"
#include "data/transform.h"

namespace cnx::data {
namespace {

// A sample on its way from the reader to a decode thread.
struct Task {
  int64_t t = 0;    // emission position in the epoch
  std::string key;  // "<shard>/<key>"
  std::vector<uint8_t> bytes;
  ImageFormat fmt = ImageFormat::kUnknown;
  int64_t label = -1;
  std::string skip_reason;  // non-empty: skip without decoding
  std::string skip_detail;
  int64_t charge = 0;  // bytes counted against queue_mb
};

// A processed sample waiting for next().
struct Result {
  bool ok = false;
  std::string key;
  int64_t label = -1;
  std::vector<float> chw;
  std::string reason, detail;
  int64_t charge = 0;
};

}  // namespace

int64_t DataCounters::skipped_total() const {
  int64_t n = 0;
  for (const auto& kv : skipped) n += kv.second;
  return n;
}

std::string Cursor::to_string() const {
  nlohmann::json j = {{"epoch", epoch},
                      {"shard_ids", shard_ids},
                      {"seed", seed},
                      {"shuffle_buffer", shuffle_buffer},
                      {"consumed", consumed},
                      {"delivered", delivered},
                      {"batches", batches},
                      {"next_shard_pos", next_shard_pos},
                      {"next_sample", next_sample}};
  return j.dump();
}

Cursor Cursor::from_string(const std::string& s) {
  try {
    const auto j = nlohmann::json::parse(s);
    Cursor c;
    c.epoch = j.at("epoch").get<int64_t>();
    c.shard_ids = j.at("shard_ids").get<std::vector<int64_t>>();
    c.seed = j.at("seed").get<uint64_t>();
    c.shuffle_buffer = j.at("shuffle_buffer").get<int64_t>();
    c.consumed = j.at("consumed").get<int64_t>();
    c.delivered = j.at("delivered").get<int64_t>();
    c.batches = j.at("batches").get<int64_t>();
    c.next_shard_pos = j.at("next_shard_pos").get<int64_t>();
    c.next_sample = j.at("next_sample").get<int64_t>();
    if (c.consumed < 0 || c.delivered < 0 || c.batches < 0 || c.shuffle_buffer < 1) {
      throw DataError("negative position or shuffle_buffer < 1");
    }
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw DataError(str("not a data cursor: ", e.what()));
  } catch (const DataError& e) {
    throw DataError(str("not a data cursor: ", e.what()));
  }
}

bool Cursor::operator==(const Cursor& o) const {
  return epoch == o.epoch && shard_ids == o.shard_ids && seed == o.seed && shuffle_buffer == o.shuffle_buffer &&
         consumed == o.consumed && delivered == o.delivered && batches == o.batches &&
         next_shard_pos == o.next_shard_pos && next_sample == o.next_sample;
}

DataOptions data_options(const cnx::DataConfig& c, int64_t seed, bool train) {
  DataOptions o;
  o.index_path = c.index;
  o.shard_root = c.shard_root;
  o.input_size = c.input_size;
  CNX_CHECK(c.crop_scale.size() == 2 && c.crop_ratio.size() == 2 && c.mean.size() == 3 && c.std.size() == 3,
            "data config: crop_scale/crop_ratio need 2 values, mean/std 3");
  o.crop_scale_lo = c.crop_scale[0];
  o.crop_scale_hi = c.crop_scale[1];
  o.crop_ratio_lo = c.crop_ratio[0];
  o.crop_ratio_hi = c.crop_ratio[1];
  o.hflip = c.hflip;
  for (int i = 0; i < 3; ++i) {
    o.mean[i] = c.mean[i];
    o.std[i] = c.std[i];
  }
  o.batch_size = c.batch_size;
  o.num_threads = c.num_threads;
  o.queue_mb = c.queue_mb;
  o.shuffle_buffer = c.shuffle_buffer;
  o.bad_shard = c.bad_shard == "skip" ? BadShardPolicy::kSkip : BadShardPolicy::kFail;
  o.drop_last = c.drop_last;
  o.train = train;
  o.seed = static_cast<uint64_t>(seed);
  return o;
}

struct Pipeline::Impl {
  DataOptions opt;
  ShardIndex index;
  std::string root;
  TransformOptions topt;

  mutable std::mutex counters_mu;
  DataCounters counters;
  std::mutex verify_mu;
  std::unordered_map<int64_t, std::string> verified;  // shard id -> "" if good, else the problem

  // Epoch state, owned by the caller's thread.
  bool started = false;
  bool finished = false;
  int64_t epoch = 0;
  std::vector<int64_t> ids;
  std::vector<int64_t> counts;
  std::vector<SampleRef> order;
  int64_t next_t = 0;
  int64_t delivered = 0;
  int64_t batches = 0;

  // Shared with the reader and decode threads, guarded by mu.
  std::mutex mu;
  std::condition_variable cv_task, cv_result, cv_budget;
  std::deque<Task> tasks;
  std::map<int64_t, Result> results;
  int64_t inflight = 0;
  int64_t dispatched_end = 0;  // emission positions < this were handed to decode threads
  bool stop = false;
  bool reader_done = false;
  std::exception_ptr reader_error;
  std::thread reader;
  std::vector<std::thread> workers;

  void add_skip(const std::string& reason, int64_t n = 1) {
    std::lock_guard<std::mutex> lk(counters_mu);
    counters.skipped[reason] += n;
  }

  void stop_threads() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv_task.notify_all();
    cv_result.notify_all();
    cv_budget.notify_all();
    if (reader.joinable()) reader.join();
    for (auto& w : workers) w.join();
    workers.clear();
    tasks.clear();
    results.clear();
    inflight = 0;
    dispatched_end = 0;
    stop = false;
    reader_done = false;
    reader_error = nullptr;
  }

  // "" when the shard at `id` is usable, else why not (cached per shard id).
  std::string check_shard(int64_t id) {
    {
      std::lock_guard<std::mutex> lk(verify_mu);
      auto it = verified.find(id);
      if (it != verified.end()) return it->second;
    }
    const ShardInfo& s = index.shards[id];
    const std::string path = root + "/" + s.name;
    std::string problem;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) {
      problem = str("shard ", path, " is missing or unreadable: ", ec.message());
    } else if (static_cast<int64_t>(size) != s.bytes) {
      problem = str("shard ", path, " has ", size, " bytes but the index says ", s.bytes);
    } else if (opt.verify_sha256) {
      try {
        const std::string got = sha256_file(path);
        if (got != s.sha256) problem = str("shard ", path, " sha256 mismatch: index ", s.sha256, ", file ", got);
      } catch (const HashError& e) {
        problem = e.what();
      }
    }
    std::lock_guard<std::mutex> lk(verify_mu);
    verified[id] = problem;
    return problem;
  }

  // Turns the members of one tar sample into a Task (not yet charged).
  Task make_task(const std::string& shard_name, TarSample&& s) {
    Task task;
    task.key = shard_name + "/" + s.key;
    TarMember* image = nullptr;
    const TarMember* cls = nullptr;
    std::string others;
    int64_t bytes = 0;
    bool too_large = false;
    for (auto& m : s.members) {
      bytes += static_cast<int64_t>(m.data.size());
      too_large |= m.too_large;
      if (format_from_extension(m.ext) != ImageFormat::kUnknown && !image) {
        image = &m;
      } else if (m.ext == "cls") {
        cls = &m;
      } else {
        others += (others.empty() ? "" : ",") + m.ext;
      }
    }
    {
      std::lock_guard<std::mutex> lk(counters_mu);
      counters.bytes_read += bytes;
    }
    if (too_large) {
      task.skip_reason = "member_too_large";
      task.skip_detail = str("a member exceeds ", opt.max_member_bytes, " bytes");
      return task;
    }
    if (!image) {
      task.skip_reason = others.empty() ? "missing_image" : "unknown_extension";
      task.skip_detail = others.empty() ? "no .jpg/.jpeg/.png member" : str("unsupported extension(s) ", others);
      return task;
    }
    if (cls) {
      int64_t label = -1;
      if (parse_label(cls->data, &label)) {
        task.label = label;
      } else if (opt.require_labels) {
        task.skip_reason = "bad_label";
        task.skip_detail = ".cls is not a non-negative integer";
        return task;
      }
    } else if (opt.require_labels) {
      task.skip_reason = "missing_label";
      task.skip_detail = "no .cls member";
      return task;
    }
    task.fmt = format_from_extension(image->ext);
    task.bytes = std::move(image->data);
    return task;
  }

  void reader_main(int64_t start_t) {
    try {
      read_epoch(start_t);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu);
      reader_error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      reader_done = true;
    }
    cv_task.notify_all();
    cv_result.notify_all();
  }

  void read_epoch(int64_t start_t) {
    const int64_t N = static_cast<int64_t>(order.size());
    if (start_t >= N) return;
    std::vector<int64_t> prefix(counts.size() + 1, 0);
    for (size_t p = 0; p < counts.size(); ++p) prefix[p + 1] = prefix[p] + counts[p];
    // -1: a sample no emission needs (outside the epoch's pieces).
    std::vector<int64_t> emit_time(static_cast<size_t>(prefix.back()), -1);
    int64_t first_pos = static_cast<int64_t>(counts.size());
    for (int64_t t = 0; t < N; ++t) {
      emit_time[prefix[order[t].list_pos] + order[t].idx] = t;
      if (t >= start_t) first_pos = std::min<int64_t>(first_pos, order[t].list_pos);
    }
    const int64_t sample_bytes = 3 * opt.input_size * opt.input_size * static_cast<int64_t>(sizeof(float));
    const int64_t budget = opt.queue_mb << 20;

    std::unordered_map<int64_t, Task> held;
    int64_t pos = first_pos, ordinal = 0;  // stream position: list position, ordinal in shard
    std::unique_ptr<TarSampleReader> tar;
    std::string bad;  // why the current shard is skipped ("" = fine)

    auto read_one = [&]() {
      while (ordinal == 0 && counts[pos] == 0) ++pos;  // empty shards hold nothing to read
      const int64_t id = ids[pos];
      const ShardInfo& info = index.shards[id];
      if (ordinal == 0) {
        bad = check_shard(id);
        if (bad.empty()) {
          try {
            tar = std::make_unique<TarSampleReader>(root + "/" + info.name, opt.max_member_bytes);
          } catch (const DataError& e) {
            bad = e.what();
          }
        }
        if (!bad.empty()) {
          if (opt.bad_shard == BadShardPolicy::kFail) throw DataError(str(bad, " (data.bad_shard = fail)"));
          CNX_LOG_ERROR("data: skipping shard {} ({} samples): {}", info.name, info.samples, bad);
        }
        std::lock_guard<std::mutex> lk(counters_mu);
        counters.shards_read += 1;
      }
      const int64_t g = prefix[pos] + ordinal;
      const bool needed = emit_time[g] >= start_t;
      Task task;
      if (!bad.empty()) {
        task.key = str(info.name, "/#", ordinal);
        task.skip_reason = "bad_shard";
        task.skip_detail = bad;
      } else {
        std::optional<TarSample> s;
        try {
          s = tar->next(needed);
        } catch (const DataError& e) {
          // A structurally broken tar: the rest of the shard is unusable.
          bad = e.what();
          CNX_LOG_ERROR("data: shard {} broken after {} samples: {}", info.name, ordinal, bad);
        }
        if (!bad.empty()) {
          task.key = str(info.name, "/#", ordinal);
          task.skip_reason = "bad_shard";
          task.skip_detail = bad;
        } else if (!s) {
          task.key = str(info.name, "/#", ordinal);
          task.skip_reason = "missing_in_shard";
          task.skip_detail = str("the shard holds fewer samples than the index's ", info.samples);
        } else if (needed) {
          task = make_task(info.name, std::move(*s));
        }
      }
      if (needed) held.emplace(g, std::move(task));
      if (++ordinal == counts[pos]) {
        if (tar && bad.empty()) {
          int64_t extra = 0;
          try {
            while (tar->next(false)) ++extra;
          } catch (const DataError&) {
            // Trailing garbage after the indexed samples changes nothing we use.
          }
          if (extra > 0) {
            CNX_LOG_WARN("data: shard {} holds {} samples more than the index; ignored", info.name, extra);
            add_skip("extra_in_shard", extra);
          }
        }
        tar.reset();
        ++pos;
        ordinal = 0;
      }
    };

    for (int64_t t = start_t; t < N; ++t) {
      const int64_t g = prefix[order[t].list_pos] + order[t].idx;
      auto it = held.find(g);
      while (it == held.end()) {
        CNX_CHECK(pos < static_cast<int64_t>(counts.size()), "data: epoch order references an unread sample");
        read_one();
        it = held.find(g);
      }
      Task task = std::move(it->second);
      held.erase(it);
      task.t = t;
      task.charge = static_cast<int64_t>(task.bytes.size()) + sample_bytes;
      std::unique_lock<std::mutex> lk(mu);
      cv_budget.wait(lk, [&] { return stop || inflight == 0 || inflight + task.charge <= budget; });
      if (stop) return;
      inflight += task.charge;
      dispatched_end = t + 1;
      tasks.push_back(std::move(task));
      lk.unlock();
      cv_task.notify_one();
    }
  }

  void worker_main() {
    while (true) {
      Task task;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_task.wait(lk, [&] { return stop || !tasks.empty() || reader_done; });
        if (stop || tasks.empty()) return;
        task = std::move(tasks.front());
        tasks.pop_front();
      }
      Result r;
      r.key = std::move(task.key);
      r.label = task.label;
      r.charge = task.charge;
      if (!task.skip_reason.empty()) {
        r.reason = std::move(task.skip_reason);
        r.detail = std::move(task.skip_detail);
      } else {
        // Catch at the per-sample edge: nothing in one sample ends the run.
        try {
          TransformResult tr = decode_and_transform(task.bytes.data(), task.bytes.size(), task.fmt,
                                                    sample_rng(opt.seed, epoch, r.key), topt);
          if (tr.status == DecodeStatus::kOk) {
            r.ok = true;
            r.chw = std::move(tr.chw);
          } else {
            r.reason = decode_status_name(tr.status);
            r.detail = std::move(tr.error);
          }
        } catch (const std::exception& e) {
          r.reason = "decode_exception";
          r.detail = e.what();
        }
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        results.emplace(task.t, std::move(r));
      }
      cv_result.notify_all();
    }
  }

  // Starts the reader (from next_t) and the decode threads.
  void launch() {
    started = true;
    finished = false;
    const int64_t start = next_t;
    reader = std::thread([this, start] { reader_main(start); });
    const int64_t n_workers = std::max<int64_t>(1, opt.num_threads);
    for (int64_t i = 0; i < n_workers; ++i) workers.emplace_back([this] { worker_main(); });
  }

  Cursor make_cursor() const {
    Cursor c;
    c.epoch = epoch;
    c.shard_ids = ids;
    c.seed = opt.seed;
    c.shuffle_buffer = opt.shuffle_buffer;
    c.consumed = next_t;
    c.delivered = delivered;
    c.batches = batches;
    if (next_t < static_cast<int64_t>(order.size())) {
      c.next_shard_pos = order[next_t].list_pos;
      c.next_sample = order[next_t].idx;
    } else {
      c.next_shard_pos = c.next_sample = -1;
    }
    return c;
  }
};

Pipeline::Pipeline(DataOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.opt = std::move(options);
  const DataOptions& o = d.opt;
  if (o.batch_size < 1) throw DataError(str("data.batch_size must be >= 1, got ", o.batch_size));
  if (o.input_size < 1) throw DataError(str("data.input_size must be >= 1, got ", o.input_size));
  if (o.shuffle_buffer < 1) throw DataError(str("data.shuffle_buffer must be >= 1, got ", o.shuffle_buffer));
  if (o.queue_mb < 1) throw DataError(str("data.queue_mb must be >= 1, got ", o.queue_mb));
  if (!(o.crop_scale_lo > 0 && o.crop_scale_lo <= o.crop_scale_hi && o.crop_scale_hi <= 1)) {
    throw DataError(
        str("data.crop_scale must satisfy 0 < lo <= hi <= 1, got ", o.crop_scale_lo, ", ", o.crop_scale_hi));
  }
  if (!(o.crop_ratio_lo > 0 && o.crop_ratio_lo <= o.crop_ratio_hi)) {
    throw DataError(str("data.crop_ratio must satisfy 0 < lo <= hi, got ", o.crop_ratio_lo, ", ", o.crop_ratio_hi));
  }
  for (int i = 0; i < 3; ++i) {
    if (!(o.std[i] > 0)) throw DataError(str("data.std[", i, "] must be > 0"));
  }
  d.index = load_index(o.index_path);
  d.root = o.shard_root.empty() ? std::filesystem::path(o.index_path).parent_path().string() : o.shard_root;
  if (d.root.empty()) d.root = ".";
  TransformOptions& t = d.topt;
  t.size = o.input_size;
  t.train = o.train;
  t.scale_lo = o.crop_scale_lo;
  t.scale_hi = o.crop_scale_hi;
  t.ratio_lo = o.crop_ratio_lo;
  t.ratio_hi = o.crop_ratio_hi;
  t.hflip = o.hflip;
  for (int i = 0; i < 3; ++i) {
    t.mean[i] = static_cast<float>(o.mean[i]);
    t.std[i] = static_cast<float>(o.std[i]);
  }
  t.dct_scaling = o.dct_scaling;
  t.max_pixels = o.max_pixels;
}

Pipeline::~Pipeline() {
  impl_->stop_threads();
}

const ShardIndex& Pipeline::index() const {
  return impl_->index;
}
const DataOptions& Pipeline::options() const {
  return impl_->opt;
}
int64_t Pipeline::epoch_samples() const {
  return static_cast<int64_t>(impl_->order.size());
}

DataCounters Pipeline::counters() const {
  std::lock_guard<std::mutex> lk(impl_->counters_mu);
  return impl_->counters;
}

void Pipeline::start_epoch(int64_t epoch, std::vector<int64_t> shard_ids, const Cursor* resume) {
  Impl& d = *impl_;
  d.stop_threads();
  const int64_t n_shards = static_cast<int64_t>(d.index.shards.size());
  for (int64_t id : shard_ids) {
    if (id < 0 || id >= n_shards) {
      throw DataError(
          str("shard id ", id, " out of range: the index ", d.opt.index_path, " has ", n_shards, " shards"));
    }
  }
  if (resume) {
    if (resume->epoch != epoch || resume->shard_ids != shard_ids) {
      throw DataError(str("data cursor is for epoch ", resume->epoch, " with ", resume->shard_ids.size(),
                          " shards, not epoch ", epoch, " with the ", shard_ids.size(), " shards given"));
    }
    if (resume->seed != d.opt.seed || resume->shuffle_buffer != d.opt.shuffle_buffer) {
      throw DataError(str("data cursor was made with seed ", resume->seed, " and shuffle_buffer ",
                          resume->shuffle_buffer, "; this pipeline has seed ", d.opt.seed, " and shuffle_buffer ",
                          d.opt.shuffle_buffer));
    }
  }
  d.epoch = epoch;
  d.ids = std::move(shard_ids);
  d.counts.clear();
  for (int64_t id : d.ids) d.counts.push_back(d.index.shards[id].samples);
  d.order = epoch_order(d.counts, d.opt.seed, epoch, d.ids, d.opt.shuffle_buffer);
  const int64_t N = static_cast<int64_t>(d.order.size());
  d.next_t = resume ? resume->consumed : 0;
  if (d.next_t > N) throw DataError(str("data cursor position ", d.next_t, " is past the epoch's ", N, " samples"));
  d.delivered = resume ? resume->delivered : 0;
  d.batches = resume ? resume->batches : 0;
  d.launch();
}

void Pipeline::start_pieces(int64_t epoch, std::vector<ShardPiece> pieces) {
  Impl& d = *impl_;
  d.stop_threads();
  const int64_t n_shards = static_cast<int64_t>(d.index.shards.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    const ShardPiece& p = pieces[i];
    if (p.shard < 0 || p.shard >= n_shards) {
      throw DataError(str("piece ", i, ": shard id ", p.shard, " out of range: the index ", d.opt.index_path, " has ",
                          n_shards, " shards"));
    }
    const int64_t n = d.index.shards[p.shard].samples;
    if (p.start < 0 || p.start > p.end || p.end > n) {
      throw DataError(str("piece ", i, ": samples [", p.start, ", ", p.end, ") of shard ", d.index.shards[p.shard].name,
                          " are outside its ", n, " samples"));
    }
  }
  d.epoch = epoch;
  d.ids.clear();
  d.counts.clear();
  d.order.clear();
  for (size_t i = 0; i < pieces.size(); ++i) {
    const ShardPiece& p = pieces[i];
    d.ids.push_back(p.shard);
    d.counts.push_back(d.index.shards[p.shard].samples);
    const std::vector<int32_t> perm = shard_permutation(d.opt.seed, epoch, p.shard, d.counts.back());
    for (int64_t k = p.start; k < p.end; ++k) d.order.push_back(SampleRef{static_cast<int32_t>(i), perm[k]});
  }
  d.next_t = d.delivered = d.batches = 0;
  d.launch();
}

std::optional<Batch> Pipeline::next() {
  Impl& d = *impl_;
  if (!d.started) throw DataError("Pipeline::next() called before start_epoch()");
  if (d.finished) return std::nullopt;
  const int64_t B = d.opt.batch_size, S = d.opt.input_size;
  const int64_t N = static_cast<int64_t>(d.order.size());
  const int64_t per = 3 * S * S;
  at::Tensor images = at::empty({B, 3, S, S}, at::kFloat);
  at::Tensor labels = at::empty({B}, at::kLong);
  float* img = images.data_ptr<float>();
  int64_t* lab = labels.data_ptr<int64_t>();
  std::vector<std::string> keys;
  int64_t n = 0;
  while (n < B && d.next_t < N) {
    Result r;
    {
      std::unique_lock<std::mutex> lk(d.mu);
      // Samples already dispatched are delivered before a reader error.
      d.cv_result.wait(
          lk, [&] { return d.results.count(d.next_t) > 0 || (d.reader_error && d.next_t >= d.dispatched_end); });
      auto it = d.results.find(d.next_t);
      if (it == d.results.end()) {
        std::exception_ptr e = d.reader_error;
        lk.unlock();
        d.finished = true;
        d.stop_threads();
        std::rethrow_exception(e);
      }
      r = std::move(it->second);
      d.results.erase(it);
      d.inflight -= r.charge;
    }
    d.cv_budget.notify_one();
    ++d.next_t;
    if (r.ok) {
      std::memcpy(img + n * per, r.chw.data(), static_cast<size_t>(per) * sizeof(float));
      lab[n] = r.label;
      keys.push_back(std::move(r.key));
      ++n;
    } else {
      CNX_LOG_WARN("data: skipped sample {}: {} ({})", r.key, r.reason, r.detail);
      d.add_skip(r.reason);
    }
  }
  if (n == 0 || (n < B && d.opt.drop_last)) {
    d.finished = true;
    if (n > 0) {
      std::lock_guard<std::mutex> lk(d.counters_mu);
      d.counters.samples_dropped_last += n;
    }
    return std::nullopt;
  }
  d.delivered += n;
  d.batches += 1;
  {
    std::lock_guard<std::mutex> lk(d.counters_mu);
    d.counters.samples_delivered += n;
    d.counters.batches += 1;
  }
  Batch b;
  b.images = n == B ? images : images.narrow(0, 0, n).contiguous();
  b.labels = n == B ? labels : labels.narrow(0, 0, n).contiguous();
  b.keys = std::move(keys);
  b.cursor = d.make_cursor();
  return b;
}

}  // namespace cnx::data
