// cnx-fuzz-corpus: writes the seed corpora of the fuzz targets with the
// project's own writers (fuzz/corpus/<target>/, committed; rerun after a
// format change: scripts/fuzz.sh --regen-corpus).
//
//   cnx-fuzz-corpus OUT_DIR SOURCE_DIR
//
// Seeds are valid files of every kind the parsers read, plus the malformed
// inputs of the hardening round's regression tests (tests/model,
// tests/data, tests/coordinator). Inputs of targets that split their bytes
// with FuzzedDataProvider are encoded the way it decodes them (FdpWriter).
#include <ATen/ATen.h>
#include <sqlite3.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/config.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "data/image_codec.h"
#include "data/pipeline.h"
#include "data/shard_index.h"
#include "data/tar_io.h"
#include "model/safetensors.h"
#include "model/tensor_file.h"
#include "proto/coordinator.pb.h"
#include "worker/checkpoint.h"
#include "worker/lease_protocol.h"

namespace {

namespace fs = std::filesystem;
namespace co = cnx::coordinator;
namespace pb = cnx::v1;

fs::path g_out;
fs::path g_tmp;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_out / target);
  std::ofstream f(g_out / target / name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write seed " + target + "/" + name);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Bytes that FuzzedDataProvider hands back as the given strings and integers:
// strings are read from the front (backslash escaped, ended by "\" + another
// byte), integers from the back, one byte each for the types used here.
class FdpWriter {
 public:
  FdpWriter& str(const std::string& s) {
    for (char c : s) {
      front_ += c;
      if (c == '\\') front_ += '\\';
    }
    front_ += "\\;";
    return *this;
  }
  FdpWriter& byte(uint8_t b) {
    back_.push_back(static_cast<char>(b));
    return *this;
  }
  // The remaining bytes (ConsumeRemainingBytesAsString): raw, last.
  std::string done(const std::string& rest = "") const {
    return front_ + rest + std::string(back_.rbegin(), back_.rend());
  }

 private:
  std::string front_, back_;
};

// ---------------------------------------------------------------- safetensors
std::string st_file(const std::string& header, const std::string& data) {
  std::string len(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return len + header + data;
}

void safetensors_seeds(const fs::path& src) {
  using cnx::model::NamedTensors;
  seed("safetensors", "f32_2x3", cnx::model::serialize_safetensors({{"w", at::arange(6, at::kFloat).reshape({2, 3})}}));
  NamedTensors all;
  for (auto t : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                 at::kByte, at::kBool})
    all.emplace_back(std::string("t_") + c10::toString(t), at::ones({2}, t));
  seed("safetensors", "every_dtype_meta", cnx::model::serialize_safetensors(all, {{"format", "pt"}, {"k", "v"}}));
  seed("safetensors", "empty_and_scalar",
       cnx::model::serialize_safetensors({{"e", at::zeros({0, 3})}, {"s", at::full({}, 2.5)}}));
  seed("safetensors", "no_tensors", cnx::model::serialize_safetensors({}));
  const fs::path dtypes = src / "tests/model/fixtures/dtypes.safetensors";
  if (fs::exists(dtypes)) seed("safetensors", "fixture_dtypes", slurp(dtypes));
  // The hardening round's malformed files (tests/model/safetensors_test.cc).
  const std::string f32x2(8, '\0');
  auto one = [](const std::string& e) { return "{\"t\":" + e + "}"; };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"bad_huge_header_len", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}"},
      {"bad_header_past_end", st_file("{}        ", "").substr(0, 8) + "{}"},
      {"bad_not_object", st_file("[1,2]", "")},
      {"bad_overlap",
       st_file(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           f32x2)},
      {"bad_gap", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2)},
      {"bad_trailing", st_file(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), f32x2)},
      {"bad_shape_overflow",
       st_file(one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]})"), f32x2)},
      {"bad_zero_size_overflow",
       st_file(one(R"({"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})"), "")},
      {"bad_dup_key",
       st_file(
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           f32x2)},
      {"bad_fractional", st_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.0]})"), f32x2)},
      {"bad_deep", st_file("{\"a\":" + std::string(200, '[') + std::string(200, ']') + "}", "")},
      {"bad_metadata", st_file(R"({"__metadata__":{"a":1}})", "")},
      {"bad_bool_byte",
       st_file(one(R"({"dtype":"BOOL","shape":[2],"data_offsets":[0,2]})"), std::string("\x01\x02", 2))},
      {"bad_empty_name", st_file(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2)},
  };
  for (const auto& [name, bytes] : bad) seed("safetensors", name, bytes);
}

// ------------------------------------------------------------------------ .pt
void pt_seeds() {
  auto pt = [](const cnx::model::NamedTensors& t, const std::string& key = "") {
    const std::vector<char> b = cnx::model::pickle_tensors(t, key);
    return std::string(b.begin(), b.end());
  };
  seed("pt", "f32_2x3", pt({{"w", at::arange(6, at::kFloat).reshape({2, 3})}}));
  seed("pt", "mixed_dtypes",
       pt({{"a", at::arange(3, at::kLong)},
           {"b", at::ones({2}, at::kBool)},
           {"c", at::ones({2, 2}, at::kHalf)},
           {"d", at::zeros({0})},
           {"e", at::full({}, 7.0)}}));
  seed("pt", "nested_model", pt({{"x", at::ones({4}, at::kBFloat16)}}, "model"));
  seed("pt", "empty_dict", pt({}));
  const std::string good = pt({{"w", at::ones({2})}});
  seed("pt", "bad_truncated", good.substr(0, good.size() / 2));
  seed("pt", "bad_not_zip", "\x80\x02}q\x00.");
}

// ---------------------------------------------------------------- checkpoint
void checkpoint_seeds() {
  namespace w = cnx::worker;
  const fs::path dir = g_tmp / "ckpt";
  w::TrainerRecord tr;
  tr.step = 7;
  tr.epoch = 1;
  tr.world_size = 2;
  tr.global_batch = 64;
  tr.peak_lr = 1.5e-4;
  tr.steps_per_epoch = 5;
  w::LeaseCursor lc;
  lc.epoch = 1;
  lc.items = {{0, 0, 3}, {2, 1, 5}};
  lc.consumed = 4;
  lc.delivered = 4;
  lc.batches = 1;
  const w::CheckpointSnapshot snap = w::take_snapshot(
      0, true, {{"w", at::ones({2, 3})}}, {{"state.w.exp_avg", at::zeros({2, 3})}}, tr, lc.to_string(), true);
  const w::Manifest m = w::write_snapshot(dir.string(), snap);
  const std::string manifest = w::manifest_to_json(7, m);
  const std::string trainer = slurp(dir / w::kTrainerFile), rank = slurp(dir / w::rank_file_name(0));
  seed("checkpoint", "snapshot_lease_cursor", FdpWriter().str(manifest).str(trainer).done(rank));
  // The pipeline's own cursor kind.
  cnx::data::Cursor pc;
  pc.epoch = 2;
  pc.shard_ids = {3, 1, 2};
  pc.seed = 9;
  pc.shuffle_buffer = 16;
  pc.consumed = 5;
  pc.delivered = 4;
  pc.batches = 2;
  const w::CheckpointSnapshot snap2 = w::take_snapshot(0, true, {}, {}, tr, pc.to_string(), true);
  w::write_snapshot((g_tmp / "ckpt2").string(), snap2);
  seed("checkpoint", "snapshot_pipeline_cursor",
       FdpWriter().str(manifest).str(trainer).done(slurp(g_tmp / "ckpt2" / w::rank_file_name(0))));
  // Malformed: trainer fields missing, RNG state odd / short, cursor junk.
  seed("checkpoint", "bad_trainer_missing",
       FdpWriter()
           .str(R"({"format":"cnx-checkpoint-v1","step":-1,"files":{}})")
           .str(R"({"step":7,"epoch":1})")
           .done(rank));
  seed("checkpoint", "bad_rng_odd",
       FdpWriter().str(manifest).str(trainer).done(R"({"rank":0,"cursor":"{}","cpu_rng":"abc"})"));
  seed("checkpoint", "bad_rng_short",
       FdpWriter().str(manifest).str(trainer).done(R"({"rank":0,"cursor":"{\"kind\":\"leases\"}","cpu_rng":"00ff"})"));
}

// --------------------------------------------------------------- shard index
void shard_index_seeds() {
  cnx::data::ShardIndex idx;
  idx.dataset = "fashion-mnist-train";
  idx.classes = {"a", "b"};
  for (int i = 0; i < 3; ++i)
    idx.shards.push_back({"train-00000" + std::to_string(i) + ".tar", 10 + i, 5120, std::string(64, 'a' + i)});
  idx.total_samples = 33;
  seed("shard_index", "three_shards", cnx::data::index_to_json(idx));
  idx.classes.clear();
  idx.shards.resize(1);
  idx.total_samples = 10;
  seed("shard_index", "one_shard_no_classes", cnx::data::index_to_json(idx));
  const std::string sha(64, 'f');
  // tests/data/shards_test.cc's refusals.
  seed("shard_index", "bad_dotdot",
       R"({"version":1,"dataset":"d","total_samples":1,"shards":[{"name":"../x.tar","samples":1,"bytes":1,"sha256":")" +
           sha + "\"}]}");
  seed("shard_index", "bad_total",
       R"({"version":1,"dataset":"d","total_samples":5,"shards":[{"name":"x.tar","samples":1,"bytes":1,"sha256":")" +
           sha + "\"}]}");
  seed(
      "shard_index", "bad_sha",
      R"({"version":1,"dataset":"d","total_samples":1,"shards":[{"name":"x.tar","samples":1,"bytes":1,"sha256":"XYZ"}]})");
  seed("shard_index", "bad_version", R"({"version":2,"dataset":"d","total_samples":0,"shards":[]})");
}

// ----------------------------------------------------------------------- tar
std::string tar_bytes(const std::vector<std::pair<std::string, std::string>>& members) {
  const std::string path = (g_tmp / "t.tar").string();
  {
    cnx::data::TarWriter w(path);
    for (const auto& [name, data] : members) w.add(name, data.data(), data.size());
    w.close();
  }
  return slurp(path);
}

std::string as_string(const std::vector<uint8_t>& v) {
  return std::string(v.begin(), v.end());
}

cnx::data::Image test_image(int w, int h, int c) {
  cnx::data::Image im;
  im.width = w;
  im.height = h;
  im.channels = c;
  for (int i = 0; i < w * h * c; ++i) im.pixels.push_back(static_cast<uint8_t>((i * 37) ^ (i >> 3)));
  return im;
}

void tar_seeds() {
  const std::string png = as_string(cnx::data::encode_png(test_image(4, 4, 1)));
  const std::string jpg = as_string(cnx::data::encode_jpeg(test_image(8, 8, 3), 80));
  const std::string t = tar_bytes({{"000000000.cls", "3"},
                                   {"000000000.png", png},
                                   {"000000001.cls", " 12\n"},
                                   {"000000001.jpg", jpg},
                                   {"dir/000000002.x.JPEG", jpg},
                                   {"000000003.txt", "hello"}});
  seed("tar", "samples", t);
  seed("tar", "bad_truncated", t.substr(0, 1300));
  seed("tar", "empty_archive", tar_bytes({}));
  seed("tar", "labels",
       tar_bytes({{"a.cls", "007"}, {"b.cls", "-1"}, {"c.cls", "1234567890123456789"}, {"d.cls", ""}}));
}

// --------------------------------------------------------------------- image
void image_seeds() {
  struct Img {
    const char* name;
    bool png;
    int w, h, c;
  };
  for (const Img& i : {Img{"png_gray_8x8", true, 8, 8, 1}, Img{"png_rgb_12x9", true, 12, 9, 3},
                       Img{"png_gray_28x28", true, 28, 28, 1}, Img{"jpg_rgb_16x16", false, 16, 16, 3},
                       Img{"jpg_gray_8x8", false, 8, 8, 1}, Img{"jpg_rgb_33x17", false, 33, 17, 3}}) {
    const cnx::data::Image im = test_image(i.w, i.h, i.c);
    const std::string bytes = as_string(i.png ? cnx::data::encode_png(im) : cnx::data::encode_jpeg(im, 75));
    // flags: bit 0 PNG, bit 1 train, bit 2 DCT scaling, bit 3 flip, bit 4 crop_pct 1.0.
    const uint8_t fmt = i.png ? 1 : 0;
    seed("image", std::string(i.name) + "_train", std::string{char(fmt | 2 | 4 | 8), 3, 0, 7} + bytes);
    seed("image", std::string(i.name) + "_eval", std::string{char(fmt | 16), 2, 1, 0} + bytes);
    if (!i.png)
      seed("image", std::string(i.name) + "_truncated",
           std::string{char(fmt | 2), 1, 2, 1} + bytes.substr(0, bytes.size() / 2));
  }
}

// ------------------------------------------------------------- Fashion-MNIST
std::string gzip(const std::string& raw) {
  const std::string path = (g_tmp / "x.gz").string();
  gzFile f = gzopen(path.c_str(), "wb9");
  gzwrite(f, raw.data(), static_cast<unsigned>(raw.size()));
  gzclose(f);
  return slurp(path);
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

void fashion_mnist_seeds() {
  for (uint32_t n : {1u, 2u, 4u}) {
    std::string images = be32(0x803) + be32(n) + be32(28) + be32(28), labels = be32(0x801) + be32(n);
    for (uint32_t i = 0; i < n; ++i) {
      images += as_string(test_image(28, 28, 1).pixels);
      labels += char(i * 3 % 10);
    }
    seed("fashion_mnist", "idx_n" + std::to_string(n), FdpWriter().byte(0).str(images).done(labels));
    if (n == 2) seed("fashion_mnist", "idx_gz_framing", FdpWriter().byte(3).str(gzip(images)).done(gzip(labels)));
  }
  std::string images = be32(0x803) + be32(1) + be32(28) + be32(28) + std::string(784, '\x7f');
  seed("fashion_mnist", "bad_label_10", FdpWriter().byte(0).str(images).done(be32(0x801) + be32(1) + "\x0a"));
  seed("fashion_mnist", "bad_rows",
       FdpWriter().byte(0).str(be32(0x803) + be32(1) + be32(27) + be32(28)).done(be32(0x801) + be32(1) + "\x01"));
}

// -------------------------------------------------------------------- config
void config_seeds(const fs::path& src) {
  for (const auto& e : fs::directory_iterator(src / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    seed("config", e.path().stem().string(), FdpWriter().byte(0).done(slurp(e.path())));
  }
  seed("config", "defaults_to_yaml", FdpWriter().byte(0).done(cnx::to_yaml(cnx::Config{})));
  seed("config", "overrides",
       FdpWriter()
           .byte(3)
           .str("optimizer.betas=[0.9,0.99]")
           .str("model.name=custom")
           .str("data.batch_size=8")
           .done("model:\n  depths: [1, 1, 2, 1]\n  dims: [8, 16, 32, 64]\n"));
  seed("config", "bad_unknown_key", FdpWriter().byte(1).str("data.nope=1").done("job:\n  idd: x\n"));
  seed("config", "bad_types", FdpWriter().byte(0).done("optimizer:\n  betas: [0.9]\nschedule:\n  epochs: -1\n"));
}

// ---------------------------------------------------------- coordinator RPCs
// Methods in coordinator_rpc_fuzz.cc's order; token kinds: 1 job, 2 operator.
enum Method {
  kRegister,
  kHeartbeat,
  kAcquire,
  kDone,
  kPart,
  kRegisterHost,
  kHostHeartbeat,
  kAcquireShards,
  kShardsDone,
  kParts,
  kLatest,
  kStatus,
  kRequestCkpt,
  kDrain,
  kMethodCount
};

class Session {
 public:
  Session& call(Method m, int who, uint8_t dt, const google::protobuf::Message& req) {
    w_.byte(static_cast<uint8_t>(m + kMethodCount * who)).byte(dt);
    w_.str(req.SerializeAsString());
    return *this;
  }
  std::string done() const { return w_.done(); }

 private:
  FdpWriter w_;
};

pb::WorkerRef ref(int rank, int64_t attempt = 1) {
  pb::WorkerRef r;
  r.set_job_id("fuzz-job");
  r.set_attempt(attempt);
  r.set_rank(rank);
  return r;
}

void coordinator_rpc_seeds() {
  Session s;
  for (int r = 0; r < 2; ++r) {
    pb::RegisterRequest q;
    q.set_job_id("fuzz-job");
    q.set_rank(r);
    q.set_world_size(2);
    q.set_host("host" + std::to_string(r));
    q.set_launch_id("L1");
    s.call(kRegister, 1, 1, q);
  }
  for (int r = 0; r < 2; ++r) {
    pb::HeartbeatRequest h;
    *h.mutable_worker() = ref(r);
    h.set_step(2);
    h.set_loss(0.5);
    s.call(kHeartbeat, 1, 2, h);
    pb::AcquireShardRequest a;
    *a.mutable_worker() = ref(r);
    a.set_epoch(0);
    a.set_position(0);
    s.call(kAcquire, 1, 1, a);
    pb::ShardDoneRequest d;
    *d.mutable_worker() = ref(r);
    d.set_epoch(0);
    d.set_position(0);
    d.set_consumed(2);
    s.call(kDone, 1, 1, d);
  }
  pb::RequestCheckpointRequest rc;
  rc.set_job_id("fuzz-job");
  s.call(kRequestCkpt, 2, 1, rc);
  const std::string registered = Session(s).done();
  for (int r = 0; r < 2; ++r) {
    pb::HeartbeatRequest h;
    *h.mutable_worker() = ref(r);
    h.set_step(6);
    s.call(kHeartbeat, 1, 1, h);
  }
  for (int r = 0; r < 2; ++r) {
    pb::CheckpointPartRequest p;
    *p.mutable_worker() = ref(r);
    p.set_plan_id(1);
    p.set_step(6);
    auto* f = p.add_files();
    f->set_path(r == 0 ? "model.pt" : "rank-00001.json");
    f->set_sha256(std::string(64, 'c'));
    f->set_bytes(100);
    p.mutable_progress()->set_epoch(0);
    p.mutable_progress()->set_next_position(1);
    p.set_data_cursor("{\"kind\":\"leases\"}");
    s.call(kPart, 1, 1, p);
  }
  pb::LatestCheckpointRequest l;
  l.set_job_id("fuzz-job");
  s.call(kLatest, 1, 1, l);
  pb::StatusRequest st;
  st.set_job_id("fuzz-job");
  s.call(kStatus, 2, 1, st);
  pb::DrainRequest dr;
  dr.set_job_id("fuzz-job");
  dr.set_checkpoint(true);
  s.call(kDrain, 2, 1, dr);
  seed("coordinator_rpc", "register_lease_checkpoint_drain", s.done());
  seed("coordinator_rpc", "register_and_request_checkpoint", registered);
  // The host speaker protocol: one host serving ranks 0 and 1.
  Session h;
  pb::RegisterHostRequest rh;
  rh.set_job_id("fuzz-job");
  rh.add_ranks(0);
  rh.add_ranks(1);
  rh.set_world_size(2);
  rh.set_host("hostA");
  rh.set_launch_id("L1");
  h.call(kRegisterHost, 1, 1, rh);
  pb::HostRef hr;
  hr.set_job_id("fuzz-job");
  hr.set_attempt(1);
  hr.set_host("hostA");
  pb::HostHeartbeatRequest hh;
  *hh.mutable_host() = hr;
  for (int r = 0; r < 2; ++r) {
    auto* b = hh.add_ranks();
    b->set_rank(r);
    b->set_step(2);
  }
  h.call(kHostHeartbeat, 1, 1, hh);
  pb::AcquireShardsRequest as;
  *as.mutable_host() = hr;
  for (int r = 0; r < 2; ++r)
    for (int pos = 0; pos < 2; ++pos) {
      auto* a = as.add_asks();
      a->set_rank(r);
      a->set_epoch(0);
      a->set_position(pos);
    }
  h.call(kAcquireShards, 1, 1, as);
  pb::ShardsDoneRequest sd;
  *sd.mutable_host() = hr;
  for (int r = 0; r < 2; ++r) {
    auto* d = sd.add_done();
    d->set_rank(r);
    d->set_epoch(0);
    d->set_position(0);
    d->set_consumed(1);
  }
  h.call(kShardsDone, 1, 1, sd);
  pb::RequestCheckpointRequest rc2;
  rc2.set_job_id("fuzz-job");
  h.call(kRequestCkpt, 2, 1, rc2);
  for (int r = 0; r < 2; ++r) h.call(kHostHeartbeat, 1, 1, hh);
  pb::CheckpointPartsRequest cp;
  *cp.mutable_host() = hr;
  cp.set_plan_id(1);
  cp.set_step(6);
  for (int r = 0; r < 2; ++r) {
    auto* part = cp.add_parts();
    part->set_rank(r);
    auto* f = part->add_files();
    f->set_path(r == 0 ? "model.pt" : "rank-00001.json");
    f->set_sha256(std::string(64, 'd'));
    f->set_bytes(10);
    part->mutable_progress()->set_next_position(1);
  }
  h.call(kParts, 1, 1, cp);
  seed("coordinator_rpc", "host_speaker_session", h.done());
  // Refusals of tests/coordinator/security_test.cc: no token, the job token
  // on an operator call, the operator token on a worker call, a job_id too long.
  Session bad;
  pb::DrainRequest d2;
  d2.set_job_id("fuzz-job");
  bad.call(kDrain, 0, 0, d2).call(kDrain, 1, 0, d2);
  pb::RegisterRequest q;
  q.set_job_id(std::string(300, 'j'));
  q.set_world_size(1);
  bad.call(kRegister, 2, 0, q).call(kRegister, 1, 0, q);
  seed("coordinator_rpc", "bad_tokens_and_job_id", bad.done());
}

// --------------------------------------------------------------- state store
co::SchedulerOptions store_options() {  // as state_store_fuzz.cc
  co::SchedulerOptions o;
  o.job_id = "fuzz-job";
  o.seed = 5;
  o.max_epochs = 4;
  o.checkpoint_root = "/ckpt";
  o.every_steps = 3;
  o.keep = 2;
  return o;
}

cnx::data::ShardIndex store_index() {
  cnx::data::ShardIndex idx;
  for (int i = 0; i < 4; ++i) {
    cnx::data::ShardInfo s;
    s.name = "train-" + std::to_string(i) + ".tar";
    s.samples = 3 + i;
    s.sha256 = std::string(64, 'a' + i);
    idx.shards.push_back(s);
    idx.total_samples += s.samples;
  }
  return idx;
}

// The state database after `steps` stages of a 2-rank job (as
// tests/coordinator/restore_test.cc builds one), VACUUMed into one file.
std::string job_db(int stages) {
  const fs::path db = g_tmp / ("job" + std::to_string(stages) + ".sqlite");
  co::Scheduler s(store_options(), store_index());
  {
    co::Store store(db.string());
    if (stages >= 1)
      for (int r = 0; r < 2; ++r) s.register_worker("fuzz-job", r, 2, "h" + std::to_string(r), "L", 100);
    if (stages >= 2) {
      for (int r = 0; r < 2; ++r) {
        co::HeartbeatInfo hb;
        hb.step = 5;
        s.heartbeat({"fuzz-job", 1, r}, hb, 101);
      }
      s.acquire({"fuzz-job", 1, 0}, 0, 0, 101);
    }
    if (stages >= 3) {
      const co::CheckpointPlan p = s.request_checkpoint("fuzz-job", 102);
      for (int r = 0; r < 2; ++r) {
        co::RankPart part;
        part.files = {{"model.pt", std::string(64, 'a'), 1}};
        part.progress.next_position = r == 0 ? 1 : 0;
        s.report_part({"fuzz-job", 1, r}, p.id, p.step, part, 103);
      }
      const co::CheckpointPlan pending = s.request_checkpoint("fuzz-job", 104);
      store.apply(s.take_changes());
      co::RankPart part;
      part.files = {{"model.pt", std::string(64, 'b'), 1}};
      part.progress.next_position = 1;
      s.report_part({"fuzz-job", 1, 0}, pending.id, pending.step, part, 105);
    }
    store.apply(s.take_changes());
  }
  // Fold the WAL into the main file: the seed is one self-contained file.
  sqlite3* h = nullptr;
  const bool ok = sqlite3_open(db.string().c_str(), &h) == SQLITE_OK &&
                  sqlite3_exec(h, "PRAGMA journal_mode=DELETE; VACUUM;", nullptr, nullptr, nullptr) == SQLITE_OK;
  sqlite3_close(h);
  if (!ok) throw std::runtime_error("cannot fold the WAL of " + db.string());
  return slurp(db);
}

void state_store_seeds() {
  seed("state_store", "empty_store", job_db(0));
  seed("state_store", "registered", job_db(1));
  seed("state_store", "leases", job_db(2));
  seed("state_store", "checkpoints_committed_and_pending", job_db(3));
  seed("state_store", "bad_not_sqlite", "SQLite format 3\0garbage");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: cnx-fuzz-corpus OUT_DIR SOURCE_DIR\n";
    return 2;
  }
  g_out = argv[1];
  const fs::path src = argv[2];
  g_tmp = fs::temp_directory_path() / ("cnx-fuzz-corpus-" + std::to_string(::getpid()));
  fs::create_directories(g_tmp);
  try {
    safetensors_seeds(src);
    pt_seeds();
    checkpoint_seeds();
    shard_index_seeds();
    tar_seeds();
    image_seeds();
    fashion_mnist_seeds();
    config_seeds(src);
    coordinator_rpc_seeds();
    state_store_seeds();
  } catch (const std::exception& e) {
    std::cerr << "cnx-fuzz-corpus: " << e.what() << "\n";
    fs::remove_all(g_tmp);
    return 1;
  }
  fs::remove_all(g_tmp);
  return 0;
}
