#include "data/make_shards.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <regex>
#include <thread>

#include "common/check.h"
#include "common/logging.h"
#include "common/rng.h"
#include "data/image_codec.h"
#include "data/tar_io.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

constexpr const char* kSkippedFile = "skipped.tsv";

// One input sample: image bytes + extension + label (-1 = none). `skip` set
// by the source (e.g. a bad label) means: report, do not pack.
struct Candidate {
  std::string origin;
  std::vector<uint8_t> image;
  std::string ext;
  int64_t label = -1;
  std::string skip;
};
// Fills *c with the next input in packing order; false when there is none.
using Producer = std::function<bool(Candidate*)>;

void check_common(const MakeShardsOptions& opt) {
  if (opt.shard_size_mb < 0 || opt.samples_per_shard < 0 || opt.limit < 0 || opt.max_pixels <= 0 || opt.threads < 0)
    throw DataError("make-shards: shard size, samples per shard, limit and threads must be >= 0, max pixels > 0");
}

void prepare_out_dir(const MakeShardsOptions& opt) {
  if (opt.out_dir.empty()) throw DataError("make-shards: no output folder given");
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec) throw DataError(str("make-shards: cannot create ", opt.out_dir, ": ", ec.message()));
  const std::regex shard_re(std::regex_replace(opt.prefix, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                            R"(-\d{6}\.tar)");
  std::vector<fs::path> existing;
  for (const auto& e : fs::directory_iterator(opt.out_dir)) {
    const std::string name = e.path().filename().string();
    if (name == opt.index_name || name == kSkippedFile || std::regex_match(name, shard_re))
      existing.push_back(e.path());
  }
  if (existing.empty()) return;
  std::sort(existing.begin(), existing.end());
  if (!opt.force) {
    throw DataError(str("make-shards: ", opt.out_dir, " already holds ", existing.front().filename().string(),
                        existing.size() > 1 ? str(" and ", existing.size() - 1, " more") : std::string(),
                        "; pass --force to replace them"));
  }
  for (const auto& p : existing) fs::remove(p);
}

bool has_magic(const std::vector<uint8_t>& b, std::initializer_list<uint8_t> magic) {
  if (b.size() < magic.size()) return false;
  return std::equal(magic.begin(), magic.end(), b.begin());
}

// Decodes candidates[i] (unless already marked) on `threads` threads; sets
// `skip` for the ones that fail and fixes `ext` to the bytes' format.
void check_all(std::vector<Candidate>& batch, int64_t max_pixels, int threads, int64_t* ext_fixed) {
  std::vector<char> fixed(batch.size(), 0);
  auto work = [&](size_t first, size_t step) {
    for (size_t i = first; i < batch.size(); i += step) {
      Candidate& c = batch[i];
      if (!c.skip.empty()) continue;
      std::string ext = c.ext;
      c.skip = check_image(c.image, max_pixels, &ext);
      if (c.skip.empty() && ext != c.ext) {
        c.ext = ext;
        fixed[i] = 1;
      }
    }
  };
  const size_t t = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(threads), batch.size()));
  std::vector<std::thread> pool;
  for (size_t k = 1; k < t; ++k) pool.emplace_back(work, k, t);
  work(0, t);
  for (auto& th : pool) th.join();
  for (char f : fixed) *ext_fixed += f;
}

void write_report_file(const MakeShardsReport& r, const MakeShardsOptions& opt) {
  if (r.bad.empty() && r.not_images.empty()) return;
  const std::string path = opt.out_dir + "/" + kSkippedFile;
  std::ofstream out(path);
  for (const auto* list : {&r.bad, &r.not_images})
    for (const auto& s : *list) out << s.reason << '\t' << s.origin << '\n';
  out.close();
  if (!out) throw DataError(str("make-shards: cannot write ", path));
}

// Packs the producer's samples (in its order) until it is exhausted or
// `opt.limit` samples are packed; `expected` is the progress total.
ShardIndex write_shards(int64_t expected, const Producer& next, std::vector<std::string> classes,
                        const std::string& dataset, const MakeShardsOptions& opt, MakeShardsReport* report) {
  check_common(opt);
  prepare_out_dir(opt);
  MakeShardsReport& rep = *report;
  const int64_t max_bytes = opt.shard_size_mb > 0 ? static_cast<int64_t>(opt.shard_size_mb * 1048576.0) : 0;
  const int threads =
      opt.threads > 0 ? opt.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t total = opt.limit > 0 ? std::min(opt.limit, expected) : expected;

  ShardIndex index;
  index.dataset = opt.dataset.empty() ? dataset : opt.dataset;
  index.classes = std::move(classes);
  std::unique_ptr<TarWriter> tar;
  ShardInfo cur;
  int64_t cur_bytes = 0;
  auto finish = [&]() {
    tar->close();
    tar.reset();
    const std::string path = opt.out_dir + "/" + cur.name;
    cur.bytes = static_cast<int64_t>(fs::file_size(path));
    cur.sha256 = sha256_file(path);
    index.total_samples += cur.samples;
    index.shards.push_back(cur);
  };
  char key[32];
  int64_t done = 0;
  bool more = true;
  while (more && (opt.limit == 0 || rep.written < opt.limit)) {
    // Read at most what the limit still needs: a skipped one is replaced by the next batch.
    int64_t want = int64_t{64} * threads;
    if (opt.limit > 0) want = std::min(want, opt.limit - rep.written);
    std::vector<Candidate> batch;
    while (static_cast<int64_t>(batch.size()) < want) {
      Candidate c;
      if (!next(&c)) {
        more = false;
        break;
      }
      batch.push_back(std::move(c));
    }
    check_all(batch, opt.max_pixels, threads, &rep.extension_fixed);
    for (Candidate& s : batch) {
      ++rep.inputs;
      if (!s.skip.empty()) {
        rep.bad.push_back({s.origin, s.skip});
      } else {
        std::snprintf(key, sizeof(key), "%09lld", static_cast<long long>(rep.written));
        const std::string label = s.label >= 0 ? std::to_string(s.label) : std::string();
        const int64_t bytes =
            TarWriter::member_bytes(s.image.size()) + (label.empty() ? 0 : TarWriter::member_bytes(label.size()));
        if (tar && ((max_bytes > 0 && cur_bytes + bytes + 1024 > max_bytes) ||
                    (opt.samples_per_shard > 0 && cur.samples >= opt.samples_per_shard))) {
          finish();
        }
        if (!tar) {
          char name[64];
          std::snprintf(name, sizeof(name), "-%06zu.tar", index.shards.size());
          cur = ShardInfo();
          cur.name = opt.prefix + name;
          tar = std::make_unique<TarWriter>(opt.out_dir + "/" + cur.name);
          cur_bytes = 0;
        }
        // Sorted member order: "<key>.cls" < "<key>.jpg" < "<key>.png".
        if (!label.empty()) tar->add(str(key, ".cls"), label.data(), label.size());
        tar->add(str(key, ".", s.ext), s.image.data(), s.image.size());
        cur.samples += 1;
        cur_bytes += bytes;
        ++rep.written;
      }
      done = opt.limit > 0 ? rep.written : rep.inputs;
      if (opt.progress) opt.progress(std::min(done, total), total);
    }
  }
  if (opt.progress && done < total) opt.progress(done, done);  // fewer than expected (skips): end the bar
  if (tar) finish();
  if (index.shards.empty())
    throw DataError(str("make-shards: no image could be packed (", rep.inputs, " considered, ", rep.bad.size(),
                        " bad, ", rep.not_images.size(), " not images",
                        rep.bad.empty() ? "" : str("; first: ", rep.bad[0].origin, ": ", rep.bad[0].reason), ")"));
  save_index(index, opt.out_dir + "/" + opt.index_name);
  write_report_file(rep, opt);
  return index;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw DataError(str("make-shards: cannot read ", p.string()));
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw DataError(str("make-shards: cannot open ", path));
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  int n;
  while ((n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0)
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string what = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) throw DataError(str("make-shards: bad gzip ", path, ": ", what));
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t off) {
  return (uint32_t{b[off]} << 24) | (uint32_t{b[off + 1]} << 16) | (uint32_t{b[off + 2]} << 8) | uint32_t{b[off + 3]};
}

// Lowercase extension without the dot; "jpeg" becomes "jpg".
std::string image_ext(const fs::path& f) {
  std::string ext = f.extension().string();
  if (!ext.empty()) ext = ext.substr(1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext == "jpeg" ? "jpg" : ext;
}

struct FileItem {
  fs::path path;
  std::string ext;
  int64_t label;
};

// Regular files under `dir` (recursively, sorted); images go to `items`
// with `label`, the rest to report->not_images.
void collect_images(const fs::path& dir, int64_t label, std::vector<FileItem>* items, MakeShardsReport* report) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string ext = image_ext(f);
    if (format_from_extension(ext) == ImageFormat::kUnknown) {
      report->not_images.push_back(
          {f.string(),
           str("not an image (", f.extension().string().empty() ? std::string("no extension") : f.extension().string(),
               ")")});
      continue;
    }
    items->push_back({f, ext, label});
  }
}

// 0..count-1, in a seeded Fisher-Yates shuffle (from the end) with
// opt.shuffle. tests/tools/torch_plain_recipe.py reproduces this order.
std::vector<int64_t> packing_order(int64_t count, const MakeShardsOptions& opt) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (opt.shuffle) {
    SplitMix64 rng(mix_seed(opt.seed, 0x6d616b65ULL));
    for (int64_t i = count - 1; i > 0; --i)
      std::swap(order[i], order[static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
  }
  return order;
}

// Packs files in a seeded shuffle of their sorted order.
ShardIndex write_files(const std::vector<FileItem>& items, std::vector<std::string> classes, const std::string& root,
                       const MakeShardsOptions& opt, MakeShardsReport* report) {
  const int64_t count = static_cast<int64_t>(items.size());
  const std::vector<int64_t> order = packing_order(count, opt);
  size_t pos = 0;
  const std::string name = fs::path(root).lexically_normal().filename().string();
  return write_shards(
      count,
      [&](Candidate* c) {
        if (pos >= order.size()) return false;
        const FileItem& it = items[static_cast<size_t>(order[pos++])];
        c->origin = it.path.string();
        c->image = read_file(it.path);
        c->ext = it.ext;
        c->label = it.label;
        return true;
      },
      std::move(classes), name.empty() ? std::string("images") : name, opt, report);
}

}  // namespace

std::string check_image(const std::vector<uint8_t>& bytes, int64_t max_pixels, std::string* ext) {
  if (bytes.empty()) return "empty_file: zero bytes";
  ImageFormat fmt;
  if (has_magic(bytes, {0xFF, 0xD8, 0xFF})) {
    fmt = ImageFormat::kJpeg;
    *ext = "jpg";
  } else if (has_magic(bytes, {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A})) {
    fmt = ImageFormat::kPng;
    *ext = "png";
  } else {
    return "not_an_image: the bytes are neither JPEG nor PNG";
  }
  // JPEG at 1/8 scale: the whole entropy-coded stream is still decoded (a
  // corrupt or truncated one fails the same way), the IDCT is 64x cheaper.
  Image im;
  std::string error;
  const ScaleFactor scale = fmt == ImageFormat::kJpeg ? ScaleFactor{1, 8} : ScaleFactor{1, 1};
  const DecodeStatus st = decode_image(bytes.data(), bytes.size(), fmt, max_pixels, scale, &im, &error);
  if (st == DecodeStatus::kOk) return "";
  return str(decode_status_name(st), ": ", error);
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> k = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return k;
}

ShardIndex make_shards_from_folder(const std::string& root, const MakeShardsOptions& opt, MakeShardsReport* report) {
  MakeShardsReport local;
  if (!report) report = &local;
  *report = MakeShardsReport();
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw DataError(str("make-shards: ", root, " is not a folder"));
  std::vector<std::string> classes;
  std::vector<fs::path> loose_images;
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) {
      classes.push_back(e.path().filename().string());
    } else if (e.is_regular_file()) {
      if (format_from_extension(image_ext(e.path())) != ImageFormat::kUnknown)
        loose_images.push_back(e.path());
      else
        report->not_images.push_back({e.path().string(), "not an image, beside the class folders"});
    }
  }
  std::sort(classes.begin(), classes.end());
  std::sort(loose_images.begin(), loose_images.end());
  if (classes.empty())
    throw DataError(str("make-shards: ", root,
                        " has no class sub-folders (expected root/<class>/<image>); for a folder of unlabelled "
                        "images use --source images"));
  if (!loose_images.empty()) {
    std::string names;
    for (size_t i = 0; i < loose_images.size() && i < 3; ++i)
      names += str(i ? ", " : "", loose_images[i].filename().string());
    throw DataError(str("make-shards: ", root, " holds ", loose_images.size(), " image(s) beside its class folders (",
                        names, loose_images.size() > 3 ? ", ..." : "",
                        ") that would have no class: move them into a class folder, or pack the whole tree "
                        "unlabelled with --source images"));
  }
  std::vector<FileItem> items;
  for (size_t c = 0; c < classes.size(); ++c)
    collect_images(fs::path(root) / classes[c], static_cast<int64_t>(c), &items, report);
  return write_files(items, classes, root, opt, report);
}

ShardIndex make_shards_from_images(const std::string& root, const MakeShardsOptions& opt, MakeShardsReport* report) {
  MakeShardsReport local;
  if (!report) report = &local;
  *report = MakeShardsReport();
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw DataError(str("make-shards: ", root, " is not a folder"));
  std::vector<FileItem> items;
  collect_images(root, -1, &items, report);
  if (items.empty())
    throw DataError(str("make-shards: ", root, " holds no .jpg/.jpeg/.png files (searched recursively; ",
                        report->not_images.size(), " other files)"));
  return write_files(items, {}, root, opt, report);
}

namespace {

// The tars named by `input` (one .tar, or a folder searched recursively), sorted.
std::vector<fs::path> list_tars(const std::string& input, MakeShardsReport* report) {
  std::error_code ec;
  std::vector<fs::path> tars;
  if (fs::is_regular_file(input, ec)) {
    tars.push_back(input);
  } else if (fs::is_directory(input, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(input))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      if (image_ext(f) == "tar")
        tars.push_back(f);
      else
        report->not_images.push_back({f.string(), "not a .tar file"});
    }
  } else {
    throw DataError(str("make-shards: ", input, " is neither a .tar file nor a folder"));
  }
  if (tars.empty()) throw DataError(str("make-shards: no .tar files in ", input));
  return tars;
}

bool is_image_ext(const std::string& ext) {
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

}  // namespace

ShardIndex make_shards_from_tars(const std::string& input, const MakeShardsOptions& opt, MakeShardsReport* report) {
  MakeShardsReport local;
  if (!report) report = &local;
  *report = MakeShardsReport();
  const std::vector<fs::path> tars = list_tars(input, report);
  // Repacking into the folder of the input would replace the tars being read (--force).
  std::error_code ec;
  const fs::path out = fs::weakly_canonical(fs::absolute(opt.out_dir), ec);
  for (const auto& t : tars) {
    if (fs::weakly_canonical(fs::absolute(t), ec).parent_path() == out)
      throw DataError(str("make-shards: the output folder ", opt.out_dir, " holds the input ", t.string(),
                          "; write the repacked shards to another folder"));
  }
  constexpr int64_t kMaxMember = int64_t{256} << 20;
  // Pass 1 (headers only): how many samples, and whether the set is labelled.
  int64_t samples = 0, labelled = 0;
  for (const auto& t : tars) {
    try {
      TarSampleReader r(t.string(), kMaxMember);
      while (auto s = r.next(false)) {
        ++samples;
        for (const auto& m : s->members)
          if (m.ext == "cls") {
            ++labelled;
            break;
          }
      }
    } catch (const DataError&) {
      // Reported with the samples before the break in pass 2.
    }
  }
  if (opt.shuffle) CNX_LOG_INFO("make-shards: tar input is repacked in its own order (no shuffle)");
  size_t ti = 0;
  std::unique_ptr<TarSampleReader> reader;
  auto next = [&](Candidate* c) {
    while (true) {
      if (!reader) {
        if (ti >= tars.size()) return false;
        try {
          reader = std::make_unique<TarSampleReader>(tars[ti].string(), kMaxMember);
        } catch (const DataError& e) {
          report->bad.push_back({tars[ti].string(), str("broken_tar: ", e.what())});
          ++ti;
          continue;
        }
      }
      std::optional<TarSample> s;
      try {
        s = reader->next(true);
      } catch (const DataError& e) {
        report->bad.push_back({tars[ti].string(), str("broken_tar (the rest of this tar is lost): ", e.what())});
        s.reset();
      }
      if (!s) {
        reader.reset();
        ++ti;
        continue;
      }
      c->origin = str(tars[ti].string(), ":", s->key);
      const TarMember* img = nullptr;
      const TarMember* cls = nullptr;
      int images = 0;
      std::vector<std::string> others;
      for (const auto& m : s->members) {
        if (is_image_ext(m.ext)) {
          ++images;
          img = &m;
        } else if (m.ext == "cls") {
          cls = &m;
        } else {
          others.push_back(m.ext);
        }
      }
      if (images == 0) {  // reported once, as a bad input
        std::string exts;
        for (const auto& e : others) exts += str(exts.empty() ? "" : ", ", ".", e);
        ++report->inputs;
        report->bad.push_back(
            {c->origin, str("no .jpg/.jpeg/.png member (has: ", exts.empty() ? std::string("only .cls") : exts, ")")});
        continue;
      }
      for (const auto& e : others)
        report->not_images.push_back({str(c->origin, ".", e), str("not an image (.", e, "), ignored")});
      if (images > 1) c->skip = str("several image members (", images, "): ambiguous");
      if (img->too_large) c->skip = str("member larger than ", kMaxMember >> 20, " MiB");
      c->image = img->data;
      c->ext = img->ext == "jpeg" ? "jpg" : img->ext;
      if (labelled > 0 && c->skip.empty()) {
        int64_t label = -1;
        if (!cls)
          c->skip = str("no .cls label (", labelled, " other samples have one)");
        else if (!parse_label(cls->data, &label))
          c->skip = "bad .cls label (expected a decimal integer >= 0)";
        c->label = label;
      }
      return true;
    }
  };
  const std::string name = fs::path(input).lexically_normal().filename().string();
  MakeShardsOptions o = opt;
  o.shuffle = false;
  return write_shards(samples, next, {}, fs::path(name).stem().string(), o, report);
}

ShardIndex make_shards_from_fashion_mnist(const std::string& dir, const std::string& split,
                                          const MakeShardsOptions& opt, MakeShardsReport* report) {
  MakeShardsReport local;
  if (!report) report = &local;
  *report = MakeShardsReport();
  if (split != "train" && split != "test")
    throw DataError(str("make-shards: split must be train or test, got ", split));
  const std::string stem = split == "train" ? "train" : "t10k";
  const std::string img_path = dir + "/" + stem + "-images-idx3-ubyte.gz";
  const std::string lab_path = dir + "/" + stem + "-labels-idx1-ubyte.gz";
  const std::vector<uint8_t> imgs = read_gzip(img_path);
  const std::vector<uint8_t> labs = read_gzip(lab_path);
  if (imgs.size() < 16 || be32(imgs, 0) != 0x00000803)
    throw DataError(str("make-shards: ", img_path, " is not an IDX3 uint8 file"));
  if (labs.size() < 8 || be32(labs, 0) != 0x00000801)
    throw DataError(str("make-shards: ", lab_path, " is not an IDX1 uint8 file"));
  const int64_t n = be32(imgs, 4), rows = be32(imgs, 8), cols = be32(imgs, 12);
  if (rows != 28 || cols != 28)
    throw DataError(str("make-shards: ", img_path, " holds ", rows, "x", cols, " images, expected 28x28"));
  if (static_cast<int64_t>(imgs.size()) != 16 + n * rows * cols)
    throw DataError(str("make-shards: ", img_path, " is truncated"));
  if (be32(labs, 4) != n || static_cast<int64_t>(labs.size()) != 8 + n) {
    throw DataError(str("make-shards: ", lab_path, " does not hold ", n, " labels"));
  }
  const std::vector<int64_t> order = packing_order(n, opt);
  size_t pos = 0;
  return write_shards(
      n,
      [&](Candidate* c) {
        if (pos >= order.size()) return false;
        const int64_t i = order[pos++];
        Image im;
        im.width = static_cast<int>(cols);
        im.height = static_cast<int>(rows);
        im.channels = 1;
        im.pixels.assign(imgs.begin() + 16 + i * rows * cols, imgs.begin() + 16 + (i + 1) * rows * cols);
        c->origin = str(img_path, "#", i);
        c->image = encode_png(im);
        c->ext = "png";
        c->label = labs[8 + i];
        if (c->label > 9)
          throw DataError(str("make-shards: ", lab_path, ": label ", c->label, " of sample ", i, " is not in 0..9"));
        return true;
      },
      fashion_mnist_classes(), "fashion-mnist-" + split, opt, report);
}

}  // namespace cnx::data
