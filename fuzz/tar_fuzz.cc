// Fuzz target: shard tar files (data/tar_io.h: TarSampleReader, parse_label)
// as the input pipeline reads them, with the pipeline's member bound.
//
// Contract: DataError, or a sequence of samples whose members stay within
// the bound (larger ones flagged too_large, data dropped); reading again
// with keep_data = false (the pipeline's fast-forward) yields the same keys
// and members up to the first error; every ".cls" member parses exactly
// when it is optional whitespace (space, tab, CR, LF) around 1..18 decimal digits, to that value.
#include <optional>

#include "data/shard_index.h"
#include "data/tar_io.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace d = cnx::data;
constexpr int64_t kMaxMember = int64_t{64} << 20;  // data/pipeline.h DataOptions::max_member_bytes

// The documented grammar of a label, checked independently of parse_label.
std::optional<int64_t> label_oracle(const std::vector<uint8_t>& b) {
  size_t i = 0, n = b.size();
  auto space = [](uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (i < n && space(b[i])) ++i;
  size_t j = n;
  while (j > i && space(b[j - 1])) --j;
  if (j == i || j - i > 18) return std::nullopt;
  int64_t v = 0;
  for (size_t k = i; k < j; ++k) {
    if (b[k] < '0' || b[k] > '9') return std::nullopt;
    v = v * 10 + (b[k] - '0');
  }
  return v;
}

struct Seen {
  std::vector<std::string> keys;  // "key:ext,ext"
  bool error = false;
};

Seen read_all(const std::string& path, bool keep_data) {
  Seen seen;
  try {
    d::TarSampleReader reader(path, kMaxMember);
    while (auto s = reader.next(keep_data)) {
      std::string line = s->key + ":";
      FUZZ_REQUIRE(!s->members.empty(), "sample '" + s->key + "' without members");
      for (const auto& m : s->members) {
        line += m.ext + ",";
        FUZZ_REQUIRE(static_cast<int64_t>(m.data.size()) <= kMaxMember, "member above the bound kept");
        if (!keep_data) FUZZ_REQUIRE(m.data.empty() && !m.too_large, "fast-forward kept data");
        if (m.too_large) FUZZ_REQUIRE(m.data.empty(), "too_large member kept its data");
        if (m.ext == "cls" && keep_data) {
          int64_t label = -1;
          const bool ok = d::parse_label(m.data, &label);
          const auto want = label_oracle(m.data);
          FUZZ_REQUIRE(ok == want.has_value() && (!ok || label == *want), "parse_label disagrees with the grammar");
        }
      }
      seen.keys.push_back(line);
    }
  } catch (const d::DataError&) {
    seen.error = true;
  }
  return seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = cnx::fuzz::scratch_dir() + "/shard.tar";
  cnx::fuzz::write_file(path, data, size);
  const Seen full = read_all(path, true);
  const Seen skim = read_all(path, false);
  // Skipping data cannot see a broken member body, so only the common
  // prefix must agree, and a skim can only get further than a full read.
  const size_t common = std::min(full.keys.size(), skim.keys.size());
  for (size_t i = 0; i + 1 < common; ++i)
    FUZZ_REQUIRE(full.keys[i] == skim.keys[i], "sample " + std::to_string(i) + " differs between full and skim reads");
  if (!full.error) FUZZ_REQUIRE(!skim.error && full.keys == skim.keys, "skim read differs from a clean full read");
  return 0;
}
