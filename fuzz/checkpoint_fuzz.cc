// Fuzz target: what a trainer reads back from a checkpoint folder
// (worker/checkpoint_files.h, worker/checkpoint.h): MANIFEST.json,
// trainer.json and rank-<r>.json.
//
// The input is split in three strings (FuzzedDataProvider): a manifest, a
// trainer.json and a rank-00000.json. The manifest goes to
// manifest_from_json; trainer.json and the rank file go into a real folder
// next to valid model.pt / optimizer.pt, with a MANIFEST.json whose digests
// match (so verification passes and the JSON parsers are reached), and the
// folder is read with read_checkpoint(dir, 0); a restored generator state is
// applied as the trainer does (set_cpu_rng_state), and the data cursor is
// parsed by both cursor readers a trainer may use (the input pipeline's
// data::Cursor, the coordinator mode's worker::LeaseCursor).
//
// Contract: CheckpointError, or: a manifest that manifest_to_json ->
// manifest_from_json reproduces; a checkpoint whose rank state the CPU
// generator accepts; a cursor that is refused with its reader's error type
// (DataError, std::invalid_argument) or that to_string -> from_string
// reproduces, and whose lease arithmetic (progress, used_of) is defined.
#include <ATen/ATen.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <cstring>

#include "data/pipeline.h"
#include "fuzz/fuzz_util.h"
#include "model/tensor_file.h"
#include "worker/checkpoint.h"
#include "worker/lease_protocol.h"

namespace {

namespace w = cnx::worker;

struct Folder {
  std::string dir;
  w::Manifest fixed;  // model.pt and optimizer.pt
  at::Tensor initial_rng;
};

const Folder& folder() {
  static const Folder f = [] {
    Folder out;
    out.dir = cnx::fuzz::scratch_dir() + "/step-00000007";
    std::filesystem::create_directories(out.dir);
    const cnx::model::NamedTensors model = {{"w", at::arange(6, at::kFloat).reshape({2, 3})}};
    const cnx::model::NamedTensors opt = {{"state.w.exp_avg", at::zeros({2, 3})}};
    for (const auto& [name, tensors] : {std::pair{w::kModelFile, model}, std::pair{w::kOptimizerFile, opt}}) {
      const std::vector<char> bytes = cnx::model::pickle_tensors(tensors);
      cnx::fuzz::write_file(out.dir + "/" + name, bytes.data(), bytes.size());
      out.fixed[name] = w::digest_file(out.dir + "/" + name);
    }
    out.initial_rng = w::cpu_rng_state();
    return out;
  }();
  return f;
}

void put(const std::string& dir, w::Manifest* m, const std::string& name, const std::string& text) {
  cnx::fuzz::write_file(dir + "/" + name, text.data(), text.size());
  (*m)[name] = w::FileDigest{cnx::sha256_hex(text), static_cast<int64_t>(text.size())};
}

void check_cursor(const std::string& text) {
  try {
    const cnx::data::Cursor c = cnx::data::Cursor::from_string(text);
    FUZZ_REQUIRE(cnx::data::Cursor::from_string(c.to_string()) == c, "pipeline cursor round trip differs");
  } catch (const cnx::data::DataError&) {
  }
  try {
    const w::LeaseCursor c = w::LeaseCursor::from_string(text);
    const w::LeaseCursor again = w::LeaseCursor::from_string(c.to_string());
    FUZZ_REQUIRE(again.to_string() == c.to_string(), "lease cursor round trip differs");
    c.progress();
    for (size_t i = 0; i < c.items.size(); ++i) c.used_of(i);
  } catch (const std::invalid_argument&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string manifest_text = in.ConsumeRandomLengthString(4096);
  const std::string trainer_text = in.ConsumeRandomLengthString(4096);
  const std::string rank_text = in.ConsumeRemainingBytesAsString();

  // 1. MANIFEST.json on its own.
  try {
    int64_t step = -1;
    const w::Manifest m = w::manifest_from_json(manifest_text, "MANIFEST.json", &step);
    FUZZ_REQUIRE(step >= 0, "negative step accepted");
    int64_t step2 = -1;
    const w::Manifest again = w::manifest_from_json(w::manifest_to_json(step, m), "round trip", &step2);
    FUZZ_REQUIRE(step2 == step && again.size() == m.size(), "manifest round trip differs");
    for (const auto& [name, d] : m) {
      FUZZ_REQUIRE(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
                   "file name '" + name + "' is not a plain name");
      FUZZ_REQUIRE(d.bytes >= 0 && d.sha256.size() == 64, "bad digest of '" + name + "'");
      FUZZ_REQUIRE(again.at(name).sha256 == d.sha256 && again.at(name).bytes == d.bytes, "round trip changed " + name);
    }
  } catch (const w::CheckpointError&) {
  }

  // 2. trainer.json and rank-00000.json inside a verified folder.
  const Folder& f = folder();
  w::Manifest m = f.fixed;
  put(f.dir, &m, w::kTrainerFile, trainer_text);
  put(f.dir, &m, w::rank_file_name(0), rank_text);
  const std::string manifest = w::manifest_to_json(7, m);
  cnx::fuzz::write_file(f.dir + "/MANIFEST.json", manifest.data(), manifest.size());
  try {
    const w::LoadedCheckpoint c = w::read_checkpoint(f.dir, 0);
    FUZZ_REQUIRE(c.trainer.step == 7, "trainer.json step differs from the manifest's");
    FUZZ_REQUIRE(c.model.size() == 1 && c.optimizer.size() == 1, "model / optimizer tensors lost");
    if (c.rank_state) {
      w::set_cpu_rng_state(c.rank_state->cpu_rng);
      w::set_cpu_rng_state(f.initial_rng);
      check_cursor(c.rank_state->cursor);
    }
  } catch (const w::CheckpointError&) {
  }
  return 0;
}
