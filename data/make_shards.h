#pragma once
// Building shards (the library behind cnx-make-shards). The shard and index
// format is described in docs/data.md.
//
// Sources: an ImageFolder tree (labels from class sub-folders), a plain
// folder of images (unlabelled, searched recursively), existing
// WebDataset-style tar shards (repacked), and Fashion-MNIST's IDX files.
//
// Every image is decoded at packing time (libjpeg-turbo / libpng, the same
// decoders and pixel bound as the training pipeline); one that does not
// decode is skipped and listed in the MakeShardsReport, never packed and
// never dropped silently. Files that are not images are listed there too.
//
// Output is deterministic: the same input files and options give
// byte-identical shards and index. Samples are keyed by their output
// ordinal ("%09d"), so members are in sorted order inside each tar; with
// `shuffle` the source order is permuted first by a seeded shuffle (shards
// then mix classes, which a shuffle buffer alone would not do). Tar input is
// repacked in its own order (shuffle does not apply: it would need random
// access into the tars).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/shard_index.h"

namespace cnx::data {

struct MakeShardsOptions {
  std::string out_dir;
  std::string prefix = "shard";  // shard files "<prefix>-000000.tar"
  std::string dataset;           // index "dataset"; default: the source's name
  std::string index_name = "index.json";
  double shard_size_mb = 256;     // roll to a new shard before exceeding this (0 = no bound)
  int64_t samples_per_shard = 0;  // and/or after this many samples (0 = no bound)
  bool force = false;             // replace an existing index, "<prefix>-*.tar" and skipped.tsv
  bool shuffle = true;
  uint64_t seed = 0;
  // Keep only the first `limit` good samples (after shuffling; a skipped
  // image is replaced by the next one); 0 = all.
  int64_t limit = 0;
  int64_t max_pixels = int64_t{1} << 26;  // as DataOptions::max_pixels: larger images are skipped
  int threads = 0;                        // decode checks in parallel; 0 = one per core
  // Called after each input sample with (done, total); from the calling thread.
  std::function<void(int64_t, int64_t)> progress;
};

// An input left out of the shards, and why.
struct SkippedInput {
  std::string origin;  // file path, or "<tar>:<key>" for tar input
  std::string reason;  // e.g. "corrupt_image: Not a JPEG file", "not an image (.txt)"
};

// What a make_shards_* call packed and what it left out. When anything was
// left out, the same list is written to "<out_dir>/skipped.tsv"
// (reason<TAB>origin per line).
struct MakeShardsReport {
  int64_t inputs = 0;                    // images (or tar samples) considered
  int64_t written = 0;                   // samples packed
  int64_t extension_fixed = 0;           // packed under the format their bytes hold (e.g. a PNG named .jpg)
  std::vector<SkippedInput> bad;         // images that did not decode, bad labels, broken tars: skipped
  std::vector<SkippedInput> not_images;  // files / tar members that are not images: ignored
};

// root/<class>/**/<image>.{jpg,jpeg,png} (ImageFolder layout; classes are the
// sorted sub-folder names, label = class position). Image bytes are copied
// unchanged. Images lying directly in `root` (beside the class folders) are
// refused with a DataError naming them; other non-image files are ignored
// and reported. Throws DataError.
ShardIndex make_shards_from_folder(const std::string& root, const MakeShardsOptions& opt,
                                   MakeShardsReport* report = nullptr);

// root/**/<image>.{jpg,jpeg,png}, unlabelled (no ".cls" members, no
// classes): the usual input of self-supervised pretraining. Throws DataError.
ShardIndex make_shards_from_images(const std::string& root, const MakeShardsOptions& opt,
                                   MakeShardsReport* report = nullptr);

// WebDataset-style tar shards: `input` is one .tar file or a folder searched
// recursively for *.tar. A sample is "<key>.jpg|jpeg|png" plus an optional
// "<key>.cls" (decimal label); other members (.json, .txt, ...) are ignored
// and reported. When some samples carry a .cls, the output is labelled and
// samples without one are skipped (reported). Index "classes" stay empty
// (the tars carry no class names). A tar that breaks part-way is reported
// and the samples before the break are kept. Throws DataError.
ShardIndex make_shards_from_tars(const std::string& input, const MakeShardsOptions& opt,
                                 MakeShardsReport* report = nullptr);

// Fashion-MNIST IDX files "<dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz";
// split is "train" or "test". Each image becomes a 28x28 grayscale PNG with
// its label; classes are the ten Fashion-MNIST names. Throws DataError.
ShardIndex make_shards_from_fashion_mnist(const std::string& dir, const std::string& split,
                                          const MakeShardsOptions& opt, MakeShardsReport* report = nullptr);

// The ten Fashion-MNIST class names, in label order.
const std::vector<std::string>& fashion_mnist_classes();

// Checks that `bytes` hold a decodable JPEG or PNG of at most `max_pixels`
// pixels. The format is taken from the bytes (magic number); *ext is set to
// "jpg" or "png" accordingly. Returns "" when fine, else the reason
// ("corrupt_image: ...", "truncated_image: ...", "not a JPEG or PNG", ...).
std::string check_image(const std::vector<uint8_t>& bytes, int64_t max_pixels, std::string* ext);

}  // namespace cnx::data
