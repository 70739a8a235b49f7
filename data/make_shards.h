#pragma once
// Building shards (the library behind cnx-make-shards).
//
// Output is deterministic: the same input files and options give
// byte-identical shards and index. Samples are keyed by their output
// ordinal ("%09d"), so members are in sorted order inside each tar; with
// `shuffle` the source order is permuted first by a seeded shuffle (shards
// then mix classes, which a shuffle buffer alone would not do).
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
  bool force = false;             // replace an existing index and "<prefix>-*.tar"
  bool shuffle = true;
  uint64_t seed = 0;
  int64_t limit = 0;  // keep only the first `limit` samples (after shuffling); 0 = all
  // Called after each sample with (done, total); from the calling thread.
  std::function<void(int64_t, int64_t)> progress;
};

// root/<class>/**/<image>.{jpg,jpeg,png} (ImageFolder layout; classes are the
// sorted sub-folder names, label = class position). Image bytes are copied
// unchanged; other files are skipped with a warning. Throws DataError.
ShardIndex make_shards_from_folder(const std::string& root, const MakeShardsOptions& opt);

// Fashion-MNIST IDX files "<dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz";
// split is "train" or "test". Each image becomes a 28x28 grayscale PNG with
// its label; classes are the ten Fashion-MNIST names. Throws DataError.
ShardIndex make_shards_from_fashion_mnist(const std::string& dir, const std::string& split,
                                          const MakeShardsOptions& opt);

// The ten Fashion-MNIST class names, in label order.
const std::vector<std::string>& fashion_mnist_classes();

}  // namespace cnx::data
