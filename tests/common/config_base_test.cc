// Config inheritance (`base:`, common/config.h): the merge rules, chains,
// paths relative to the naming file, every refused case with a message that
// names the key and the files, and the shipped configs/ablations/*.yaml,
// each checked to be exactly the main job's config plus its documented
// change and its own paths.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/config.h"

namespace fs = std::filesystem;

namespace {

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

fs::path source_dir() {
  const char* s = std::getenv("CNX_SOURCE_DIR");
  return s ? fs::path(s) : fs::path(CNX_TEST_SOURCE_DIR);
}

// A fresh folder per test, removed at the end.
class ConfigBase : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "cnx_config_base.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Writes `text` to dir_/name (folders made) and returns the full path.
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
  // The ConfigError message of loading `path`, or a test failure.
  static std::string error_of(const std::string& path, const std::vector<std::string>& overrides = {}) {
    try {
      cnx::load_config(path, overrides);
    } catch (const cnx::UsageError& e) {  // ConfigError is a UsageError: exit 2 in every program
      EXPECT_NE(dynamic_cast<const cnx::ConfigError*>(&e), nullptr);
      return e.what();
    }
    ADD_FAILURE() << "expected a ConfigError for " << path;
    return "";
  }
  fs::path dir_;
};

// Restores the working directory at the end of a scope.
struct Cwd {
  explicit Cwd(const fs::path& to) : before(fs::current_path()) { fs::current_path(to); }
  ~Cwd() { fs::current_path(before); }
  fs::path before;
};

}  // namespace

TEST_F(ConfigBase, MapsMergeKeyByKeyScalarsAndSequencesReplace) {
  write("base.yaml", R"(
model: {name: atto, init: std02, encoder: sparse}
optimizer: {blr: 0.001, betas: [0.9, 0.95], no_decay: [a, b]}
data: {batch_size: 16, crop_scale: [0.35, 1.0], mean: [0.1, 0.2, 0.3]}
schedule: {epochs: 2, warmup_epochs: 1}
)");
  const std::string child = write("child.yaml", R"(
base: base.yaml
model: {block: v1}
optimizer: {no_decay: [c], betas: [0.8, 0.9]}
data:
  batch_size: 8
schedule:
mask: {ratio: 0.4}
)");
  const cnx::Config c = cnx::load_config(child);
  EXPECT_EQ(c.model.block, "v1");                                    // added in a merged section
  EXPECT_EQ(c.model.init, "std02");                                  // kept from the base
  EXPECT_EQ(c.optimizer.no_decay, (std::vector<std::string>{"c"}));  // a sequence replaces, not appends
  EXPECT_EQ(c.optimizer.betas, (std::vector<double>{0.8, 0.9}));     // replaces
  EXPECT_DOUBLE_EQ(c.optimizer.blr, 0.001);                          // kept
  EXPECT_EQ(c.data.batch_size, 8);                                   // a scalar replaces
  EXPECT_EQ(c.data.crop_scale, (std::vector<double>{0.35, 1.0}));    // kept
  EXPECT_EQ(c.data.mean, (std::vector<double>{0.1, 0.2, 0.3}));      // kept
  EXPECT_DOUBLE_EQ(c.schedule.epochs, 2);                            // an empty section changes nothing
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.4);                               // a section only the file has
  // The same settings written out flat load to the same effective config,
  // and to_yaml has no `base`.
  const cnx::Config flat = cnx::load_config_text(R"(
model: {name: atto, init: std02, encoder: sparse, block: v1}
optimizer: {blr: 0.001, betas: [0.8, 0.9], no_decay: [c]}
data: {batch_size: 8, crop_scale: [0.35, 1.0], mean: [0.1, 0.2, 0.3]}
schedule: {epochs: 2, warmup_epochs: 1}
mask: {ratio: 0.4}
)",
                                                 "flat.yaml");
  EXPECT_EQ(cnx::to_yaml(c), cnx::to_yaml(flat));
  EXPECT_EQ(cnx::to_yaml(c).find("base"), std::string::npos) << cnx::to_yaml(c);
}

TEST_F(ConfigBase, NullClearsAListAsInAFlatFile) {
  write("base.yaml", "optimizer: {no_decay: [a, b]}\ndata: {mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}\n");
  const std::string child = write("child.yaml", "base: base.yaml\noptimizer: {no_decay: ~}\n");
  EXPECT_TRUE(cnx::load_config(child).optimizer.no_decay.empty());  // null clears a list, as in a flat file
  EXPECT_EQ(cnx::load_config(child).data.std, (std::vector<double>{0.2, 0.2, 0.2}));
}

TEST_F(ConfigBase, ChainedBasesNearestWins) {
  write("a.yaml", "job: {id: from-a, seed: 1}\nmask: {ratio: 0.1}\ndata: {batch_size: 4}\n");
  write("b.yaml", "base: a.yaml\njob: {id: from-b}\nmask: {ratio: 0.2}\n");
  const std::string c = write("c.yaml", "base: b.yaml\nmask: {ratio: 0.3}\n");
  const cnx::Config cfg = cnx::load_config(c);
  EXPECT_EQ(cfg.job.id, "from-b");
  EXPECT_EQ(cfg.job.seed, 1);
  EXPECT_DOUBLE_EQ(cfg.mask.ratio, 0.3);
  EXPECT_EQ(cfg.data.batch_size, 4);
  EXPECT_DOUBLE_EQ(cnx::load_config((dir_ / "b.yaml").string()).mask.ratio, 0.2);
}

TEST_F(ConfigBase, PathIsRelativeToTheNamingFileNotTheCwd) {
  // dir/base.yaml is a decoy: a path resolved against the working directory
  // (dir/work) would find it; the right one is next to the naming file's
  // folder (dir/configs/base.yaml), and its own base is relative to itself.
  write("base.yaml", "mask: {ratio: 0.1}\n");
  write("configs/shared/root.yaml", "job: {seed: 7}\n");
  write("configs/base.yaml", "base: shared/root.yaml\nmask: {ratio: 0.3}\n");
  const std::string child = write("configs/ablations/x.yaml", "base: ../base.yaml\njob: {id: x}\n");
  fs::create_directories(dir_ / "work");
  Cwd cwd(dir_ / "work");
  for (const std::string& path : {child, std::string("../configs/ablations/x.yaml")}) {
    SCOPED_TRACE(path);
    const cnx::Config c = cnx::load_config(path);
    EXPECT_DOUBLE_EQ(c.mask.ratio, 0.3);
    EXPECT_EQ(c.job.seed, 7);
    EXPECT_EQ(c.job.id, "x");
  }
  // An absolute base is taken as it is.
  const std::string abs = write("elsewhere/y.yaml", "base: " + (dir_ / "base.yaml").string() + "\n");
  EXPECT_DOUBLE_EQ(cnx::load_config(abs).mask.ratio, 0.1);
}

TEST_F(ConfigBase, SetOverridesApplyOnTop) {
  write("base.yaml", "mask: {ratio: 0.2}\nmodel: {block: v1}\n");
  const std::string child = write("child.yaml", "base: base.yaml\nmask: {ratio: 0.3}\n");
  const cnx::Config c = cnx::load_config(child, {"mask.ratio=0.9", "model.block=v2", "job.seed=5"});
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.9);
  EXPECT_EQ(c.model.block, "v2");
  EXPECT_EQ(c.job.seed, 5);
  // An override's mistake still names the key.
  EXPECT_HAS(error_of(child, {"mask.ratoi=1"}), "mask.ratoi: unknown key");
  // base comes from files only.
  const std::string m = error_of(child, {"base=other.yaml"});
  EXPECT_HAS(m, "--set base");
  EXPECT_HAS(m, "config file");
}

TEST_F(ConfigBase, BaseThatIsNoPathIsRefused) {
  for (const char* bad : {"[a.yaml]", "{x: 1}", "~", "''"}) {
    SCOPED_TRACE(bad);
    const std::string p = write("bad.yaml", std::string("base: ") + bad + "\n");
    const std::string m = error_of(p);
    EXPECT_HAS(m, p + ": base: expected the path of a config file");
  }
}

TEST_F(ConfigBase, MissingOrFolderBaseNamesBothFiles) {
  const std::string missing = write("sub/a.yaml", "base: ../nowhere.yaml\n");
  std::string m = error_of(missing);
  EXPECT_HAS(m, missing + ": base: cannot open '" + (dir_ / "nowhere.yaml").string() + "'");
  fs::create_directories(dir_ / "folder.yaml");
  const std::string folder = write("b.yaml", "base: folder.yaml\n");
  m = error_of(folder);
  EXPECT_HAS(m, folder + ": base: '" + (dir_ / "folder.yaml").string() + "' is a folder");
  // The same one level further down: the message names the base that names it.
  write("c.yaml", "base: b.yaml\n");
  EXPECT_HAS(error_of((dir_ / "c.yaml").string()), folder + ": base: '");
}

TEST_F(ConfigBase, CyclesAreRefused) {
  const std::string a = write("a.yaml", "base: b.yaml\n");
  const std::string b = write("b.yaml", "base: a.yaml\n");
  std::string m = error_of(a);
  EXPECT_HAS(m, b + ": base: 'a.yaml' makes a cycle: " + a + " -> " + b + " -> " + a);
  const std::string self = write("self.yaml", "base: ./self.yaml\n");
  m = error_of(self);
  EXPECT_HAS(m, "makes a cycle: " + self + " -> " + self);
  // A cycle below the named file: x -> a -> b -> a.
  const std::string x = write("x.yaml", "base: a.yaml\n");
  m = error_of(x);
  EXPECT_HAS(m, "makes a cycle: " + a + " -> " + b + " -> " + a);
}

TEST_F(ConfigBase, DepthIsBounded) {
  // f0 <- f1 <- ... <- fN: fN has N bases above it.
  write("f0.yaml", "mask: {ratio: 0.5}\n");
  for (int i = 1; i <= 9; ++i) write("f" + std::to_string(i) + ".yaml", "base: f" + std::to_string(i - 1) + ".yaml\n");
  EXPECT_DOUBLE_EQ(cnx::load_config((dir_ / "f8.yaml").string()).mask.ratio, 0.5);  // 8 bases: fine
  const std::string m = error_of((dir_ / "f9.yaml").string());
  EXPECT_HAS(m, "base: more than 8 bases above the config file");
  EXPECT_HAS(m, (dir_ / "f9.yaml").string() + " -> ");
}

TEST_F(ConfigBase, EveryFileIsCheckedForDuplicatesAndKeys) {
  const std::string base = write("base.yaml", "data:\n  batch_size: 2\n  batch_size: 4\n");
  const std::string child = write("child.yaml", "base: base.yaml\n");
  EXPECT_HAS(error_of(child), base + ": data.batch_size: duplicate key at line 3");
  const std::string dup_child = write("dup.yaml", "base: ok.yaml\nmask: {ratio: 0.1}\nbase: ok.yaml\n");
  write("ok.yaml", "");
  EXPECT_HAS(error_of(dup_child), dup_child + ": base: duplicate key at line 3");
  // A wrong key in a base is reported with the chain in the origin.
  write("typo.yaml", "optimizer: {nonsense: 1}\n");
  const std::string over = write("over.yaml", "base: typo.yaml\n");
  const std::string m = error_of(over);
  EXPECT_HAS(m, "optimizer.nonsense: unknown key");
  EXPECT_HAS(m, over + " (merged over its base " + (dir_ / "typo.yaml").string() + ")");
  // A base that is no mapping.
  write("list.yaml", "- a\n- b\n");
  EXPECT_HAS(error_of(write("l.yaml", "base: list.yaml\n")), "list.yaml: expected a mapping of sections");
  // base below the top level is an unknown key like any other.
  EXPECT_HAS(error_of(write("nested.yaml", "model: {base: ok.yaml}\n")), "model.base: unknown key");
}

TEST(ConfigBaseText, TextWithABaseIsRefused) {
  try {
    cnx::load_config_text("base: ../fcmae_fashion_mnist.yaml\nmask: {ratio: 0.4}\n", "inline.yaml");
    FAIL() << "base in text loaded";
  } catch (const cnx::ConfigError& e) {
    EXPECT_HAS(e.what(), "inline.yaml: base: needs a config file");
  }
}

// Every configs/ablations/*.yaml is the main job's config plus exactly its
// documented change and its own id, paths and ports.
TEST(ConfigAblations, EachIsTheMainJobPlusItsChange) {
  const fs::path configs = source_dir() / "configs";
  const std::string main_job = (configs / "fcmae_fashion_mnist.yaml").string();
  const std::map<std::string, std::pair<std::vector<std::string>, int>> documented = {
      // variant -> (the change, index of its ports)
      {"baseline", {{}, 1}},
      {"dense_masked", {{"model.encoder=dense_masked"}, 2}},
      {"v1", {{"model.block=v1"}, 3}},
      {"mask0.4", {{"mask.ratio=0.4"}, 4}},
      {"mask0.8", {{"mask.ratio=0.8"}, 5}},
      {"dense", {{"model.encoder=dense"}, 6}},
  };
  std::set<std::string> found;
  for (const auto& e : fs::directory_iterator(configs / "ablations")) {
    if (e.path().extension() == ".yaml") found.insert(e.path().stem().string());
  }
  std::set<std::string> expected;
  for (const auto& [v, _] : documented) expected.insert(v);
  EXPECT_EQ(found, expected) << "a file in configs/ablations without a documented change here, or one missing";

  const cnx::Config main_config = cnx::load_config(main_job);
  auto ports = [](const cnx::Config& c) {
    std::vector<int64_t> p{c.metrics.coordinator_port};
    for (int r = 0; r < 8; ++r) p.push_back(c.metrics.worker_port + r);
    return p;
  };
  std::set<int64_t> taken;
  for (int64_t port : ports(main_config)) taken.insert(port);
  std::set<std::string> roots, dbs, listens;
  for (const auto& [v, spec] : documented) {
    SCOPED_TRACE(v);
    const std::string d = "runs/ablations/" + v;
    std::vector<std::string> sets = spec.first;
    const int i = spec.second;
    for (const std::string& s :
         {"job.id=fcmae-fashion-mnist-" + v, "checkpoint.root=" + d + "/checkpoints",
          "coordinator.state_db=" + d + "/coordinator.sqlite", "coordinator.token_file=" + d + "/job.token",
          "coordinator.listen=127.0.0.1:" + std::to_string(50060 + i),
          "metrics.coordinator_port=" + std::to_string(9400 + 10 * i),
          "metrics.worker_port=" + std::to_string(9401 + 10 * i)})
      sets.push_back(s);
    const cnx::Config c = cnx::load_config((configs / "ablations" / (v + ".yaml")).string());
    EXPECT_EQ(cnx::to_yaml(c), cnx::to_yaml(cnx::load_config(main_job, sets)));
    // Never the main job's state: a run neither resumes nor overwrites it.
    EXPECT_NE(c.job.id, main_config.job.id);
    EXPECT_NE(c.checkpoint.root, main_config.checkpoint.root);
    EXPECT_NE(c.coordinator.state_db, main_config.coordinator.state_db);
    EXPECT_NE(c.coordinator.token_file, main_config.coordinator.token_file);
    EXPECT_NE(c.coordinator.listen, main_config.coordinator.listen);
    EXPECT_EQ(c.checkpoint.root.rfind(d + "/", 0), 0u) << c.checkpoint.root;
    // Metrics ports (the coordinator's, ranks 0..7 on a host): none is the
    // main job's or another variant's.
    for (int64_t port : ports(c)) EXPECT_TRUE(taken.insert(port).second) << "port " << port << " is taken";
    roots.insert(c.checkpoint.root);
    dbs.insert(c.coordinator.state_db);
    listens.insert(c.coordinator.listen);
  }
  // ... nor each other's.
  EXPECT_EQ(roots.size(), documented.size());
  EXPECT_EQ(dbs.size(), documented.size());
  EXPECT_EQ(listens.size(), documented.size());
}
