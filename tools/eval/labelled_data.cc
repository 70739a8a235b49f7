#include "tools/eval/labelled_data.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/logging.h"
#include "common/rng.h"
#include "data/shard_index.h"
#include "data/tar_io.h"

namespace cnx::eval {

namespace fs = std::filesystem;

LabelledSet read_labelled_shards(const ReadOptions& o) {
  if (o.world < 1 || o.rank < 0 || o.rank >= o.world)
    throw data::DataError("read_labelled_shards: rank " + std::to_string(o.rank) + " of world " +
                          std::to_string(o.world) + " is invalid");
  if (o.max_samples < 0) throw data::DataError("max_samples must be >= 0, got " + std::to_string(o.max_samples));
  if (o.skip < 0) throw data::DataError("skip must be >= 0, got " + std::to_string(o.skip));
  const data::ShardIndex index = data::load_index(o.index_path);
  const std::string root = o.shard_root.empty() ? fs::path(o.index_path).parent_path().string() : o.shard_root;
  LabelledSet set;
  set.classes = index.classes;
  const int64_t limit = o.max_samples > 0 ? o.max_samples : index.total_samples;
  int64_t to_skip = o.skip;
  for (const auto& shard : index.shards) {
    if (set.total >= limit) break;
    const std::string path = (root.empty() ? std::string(".") : root) + "/" + shard.name;
    if (o.verify_sha256) {
      const std::string digest = cnx::sha256_file(path);
      if (digest != shard.sha256)
        throw data::DataError("shard '" + path + "' has sha256 " + digest + ", the index '" + o.index_path +
                              "' records " + shard.sha256);
    }
    data::TarSampleReader reader(path, o.max_member_bytes);
    while (set.total < limit) {
      std::optional<data::TarSample> s = reader.next(true);
      if (!s) break;
      const data::TarMember* image = nullptr;
      const data::TarMember* cls = nullptr;
      for (const auto& m : s->members) {
        if (!image && !m.too_large && data::format_from_extension(m.ext) != data::ImageFormat::kUnknown) image = &m;
        if (m.ext == "cls") cls = &m;
      }
      int64_t label = -1;
      if (!image || !cls || !data::parse_label(cls->data, &label)) {
        ++set.unlabelled;
        continue;
      }
      if (to_skip > 0) {
        --to_skip;
        continue;
      }
      const int64_t pos = set.total++;
      set.max_label = std::max(set.max_label, label);
      if (pos % o.world != o.rank) continue;
      EncodedSample e;
      e.key = shard.name + "/" + s->key;
      e.position = pos;
      e.label = label;
      e.format = data::format_from_extension(image->ext);
      e.bytes = image->data;
      set.samples.push_back(std::move(e));
    }
  }
  if (set.unlabelled > 0)
    CNX_LOG_WARN("{}: {} samples without an image or a valid .cls label were skipped", o.index_path, set.unlabelled);
  return set;
}

int64_t num_classes(const LabelledSet& set) {
  if (!set.classes.empty()) return static_cast<int64_t>(set.classes.size());
  return set.max_label + 1;
}

DecodedBatch decode_samples(const LabelledSet& set, const std::vector<int64_t>& indices,
                            const data::TransformOptions& transform, uint64_t seed, int64_t epoch) {
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t sz = transform.size;
  std::vector<data::TransformResult> results(n);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const EncodedSample& s = set.samples.at(indices[i]);
      results[i] = data::decode_and_transform(s.bytes.data(), s.bytes.size(), s.format, sample_rng(seed, epoch, s.key),
                                              transform);
    }
  });
  DecodedBatch out;
  int64_t ok = 0;
  for (const auto& r : results) ok += r.status == data::DecodeStatus::kOk ? 1 : 0;
  out.images = at::empty({ok, 3, sz, sz}, at::kFloat);
  out.labels = at::empty({ok}, at::kLong);
  float* dst = out.images.data_ptr<float>();
  int64_t* lab = out.labels.data_ptr<int64_t>();
  int64_t j = 0;
  for (int64_t i = 0; i < n; ++i) {
    const EncodedSample& s = set.samples.at(indices[i]);
    if (results[i].status != data::DecodeStatus::kOk) {
      ++out.failed;
      CNX_LOG_WARN("skipping sample {}: {} ({})", s.key, data::decode_status_name(results[i].status), results[i].error);
      continue;
    }
    std::memcpy(dst + j * 3 * sz * sz, results[i].chw.data(), sizeof(float) * 3 * sz * sz);
    lab[j] = s.label;
    out.positions.push_back(s.position);
    ++j;
  }
  return out;
}

}  // namespace cnx::eval
