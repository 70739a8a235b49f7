#pragma once
// Durable files and folders for checkpoints (no LibTorch here).
//
// Layout under a checkpoint root:
//   <root>/step-00000120/            a committed checkpoint (never modified)
//       MANIFEST.json                {"format": "cnx-checkpoint-v1", "step": 120,
//                                     "files": {"model.pt": {"sha256": ..., "bytes": ...}, ...}}
//       model.pt optimizer.pt trainer.json rank-00000.json ...
//   <root>/.tmp-step-00000120/       being written (ignored by readers)
//   <root>/latest                    "step-00000120\n", replaced atomically
//
// Durability protocol (local commit): each file is written, fsynced and
// closed; the temp folder is fsynced; it is renamed to its final name; the
// root is fsynced; only then `latest` is replaced (temp file + fsync +
// rename + fsync root). A crash at any point leaves either the old or the
// new checkpoint as `latest`, both complete. With a coordinator the rename
// and the registry update are the coordinator's (docs/protocols.md, "Checkpoint protocol").
//
// Errors: I/O failures throw CheckpointError naming the path and errno text;
// a corrupt or incomplete checkpoint throws CheckpointError naming the file
// and what did not match.
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/hash.h"  // sha256_hex

namespace cnx::worker {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FileDigest {
  std::string sha256;  // lowercase hex
  int64_t bytes = 0;
};
using Manifest = std::map<std::string, FileDigest>;  // file name -> digest

FileDigest digest_file(const std::string& path);

// Writes `data` to `path` (truncating), fsyncs and closes it. Returns its digest.
FileDigest write_file_durable(const std::string& path, const std::string& data);
FileDigest write_file_durable(const std::string& path, const void* data, size_t size);
std::string read_file(const std::string& path);
void fsync_dir(const std::string& path);

// "step-00000120"; and its parse (nullopt for anything else).
std::string checkpoint_name(int64_t step);
std::optional<int64_t> parse_checkpoint_name(const std::string& name);
std::string temp_checkpoint_name(int64_t step);

std::string manifest_to_json(int64_t step, const Manifest& manifest);
// Throws CheckpointError naming `origin` when the text is not a valid manifest.
Manifest manifest_from_json(const std::string& text, const std::string& origin, int64_t* step);

// Writes MANIFEST.json into `temp_dir`, fsyncs it and the folder, renames the
// folder to <root>/step-N, fsyncs root, then atomically points `latest` at it.
// Returns the final path. An existing committed folder of the same step is
// an error (checkpoints are immutable).
std::string commit_local(const std::string& root, const std::string& temp_dir, int64_t step, const Manifest& manifest);

// Replaces <root>/latest with `name` atomically.
void write_latest(const std::string& root, const std::string& name);

// The checkpoint `latest` points to, or nullopt when there is none (no root,
// no `latest`). Throws when `latest` names a folder that does not exist.
std::optional<std::string> latest_checkpoint(const std::string& root);

// Reads MANIFEST.json of `dir`, checks that every listed file exists with the
// recorded size and sha256 and that `required` files are listed. Returns the
// manifest; throws CheckpointError listing every problem.
Manifest verify_checkpoint(const std::string& dir, const std::vector<std::string>& required, int64_t* step);

// A folder named by the control plane (a coordinator's checkpoint plan or
// resume folder), accepted only when it lies strictly inside `root`: no ".."
// component, and after resolving symlinks of its existing part (and of
// root) it is still below root. Returns `dir` unchanged; throws
// CheckpointError naming `what`, the folder and the root otherwise. Relative
// paths are taken from the working directory, as every other path here.
std::string confined_to_root(const std::string& root, const std::string& dir, const std::string& what);

// Deletes committed step-* folders older than the newest `keep` (keep >= 1),
// never the one `latest` names. Returns the names deleted.
std::vector<std::string> apply_retention(const std::string& root, int64_t keep);

}  // namespace cnx::worker
