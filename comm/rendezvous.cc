#include "comm/rendezvous.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "common/check.h"

namespace cnx::comm {

namespace {

// Strict integer parse of an environment variable's value.
int parse_int(const char* name, const char* text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
    throw CommError(
        cnx::str("environment variable ", name, "='", text, "': expected an integer in [", lo, ", ", hi, "]"));
  }
  return static_cast<int>(v);
}

class SingleBootstrap final : public Bootstrap {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string describe() const override { return "single"; }
  std::string broadcast(const std::string& blob, int root) override {
    if (root != 0) throw CommError(cnx::str("bootstrap broadcast: root ", root, " in a world of 1"));
    return blob;
  }
  std::vector<std::string> allgather(const std::string& mine) override { return {mine}; }
  void barrier() override {}
};

constexpr std::chrono::milliseconds kCheckoutWait{30000};

class StoreBootstrap final : public Bootstrap {
 public:
  StoreBootstrap(std::unique_ptr<Store> store, const RendezvousEnv& env)
      : store_(std::move(store)), rank_(env.rank), size_(env.world_size) {
    if (env.local_rank >= 0 && env.local_size > 0) {
      local_rank_ = env.local_rank;
      local_size_ = env.local_size;
    } else {
      char host[256] = {0};
      ::gethostname(host, sizeof(host) - 1);
      const auto hosts = allgather(host);
      local_rank_ = 0;
      local_size_ = 0;
      for (int r = 0; r < size_; ++r) {
        if (hosts[r] != host) continue;
        if (r < rank_) ++local_rank_;
        ++local_size_;
      }
    }
  }

  ~StoreBootstrap() override {
    try {
      store_->add("cnx/checkout", 1);
      if (rank_ == 0) {
        // Bounded: a peer that died never checks out.
        const auto deadline =
            std::chrono::steady_clock::now() + std::min<std::chrono::milliseconds>(store_->timeout(), kCheckoutWait);
        while (store_->add("cnx/checkout", 0) < size_ && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        store_->remove_all();
      }
    } catch (...) {
      // A peer that died cannot be waited for; nothing to report from here.
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string describe() const override { return store_->describe(); }

  std::string broadcast(const std::string& blob, int root) override {
    if (root < 0 || root >= size_) {
      throw CommError(cnx::str("bootstrap broadcast on rank ", rank_, ": root ", root, " not in [0, ", size_, ")"));
    }
    const std::string key = cnx::str("cnx/", seq_++, "/b");
    if (rank_ == root) {
      store_->set(key, blob);
      return blob;
    }
    return store_->get(key);
  }

  std::vector<std::string> allgather(const std::string& mine) override {
    const std::string prefix = cnx::str("cnx/", seq_++, "/g/");
    store_->set(prefix + std::to_string(rank_), mine);
    std::vector<std::string> all(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      all[r] = r == rank_ ? mine : store_->get(prefix + std::to_string(r));
    }
    return all;
  }

  void barrier() override { allgather(std::string()); }

 private:
  std::unique_ptr<Store> store_;
  int rank_;
  int size_;
  int local_rank_ = 0;
  int local_size_ = 1;
  int64_t seq_ = 0;
};

}  // namespace

RendezvousEnv read_rendezvous_env(const EnvLookup& lookup) {
  const EnvLookup env = lookup ? lookup : EnvLookup([](const char* n) { return std::getenv(n); });
  RendezvousEnv out;
  const char* ompi_size = env("OMPI_COMM_WORLD_SIZE");
  out.under_mpirun = ompi_size && *ompi_size;

  const char* cnx_rank = env("CNX_RANK");
  const char* cnx_size = env("CNX_WORLD_SIZE");
  const bool has_cnx = (cnx_rank && *cnx_rank) || (cnx_size && *cnx_size);
  if (has_cnx) {
    if (!(cnx_rank && *cnx_rank) || !(cnx_size && *cnx_size)) {
      throw CommError("environment: set both CNX_RANK and CNX_WORLD_SIZE, or neither");
    }
    out.world_size = parse_int("CNX_WORLD_SIZE", cnx_size, 1, 1 << 24);
    out.rank = parse_int("CNX_RANK", cnx_rank, 0, out.world_size - 1);
    out.source = "CNX_RANK/CNX_WORLD_SIZE";
  } else if (out.under_mpirun) {
    const char* r = env("OMPI_COMM_WORLD_RANK");
    if (!(r && *r)) throw CommError("environment: OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not");
    out.world_size = parse_int("OMPI_COMM_WORLD_SIZE", ompi_size, 1, 1 << 24);
    out.rank = parse_int("OMPI_COMM_WORLD_RANK", r, 0, out.world_size - 1);
    out.source = "OMPI_COMM_WORLD_RANK/SIZE";
  }

  // Local rank and size: CNX_* first; OMPI_* only when rank and size came
  // from mpirun as well.
  auto local_var = [&](const char* cnx_name, const char* ompi_name) {
    const char* v = env(cnx_name);
    if (v && *v) return std::make_pair(cnx_name, v);
    v = has_cnx ? nullptr : env(ompi_name);
    return std::make_pair(ompi_name, (v && *v) ? v : nullptr);
  };
  const auto [ls_name, ls] = local_var("CNX_LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE");
  const auto [lr_name, lr] = local_var("CNX_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK");
  if (ls) out.local_size = parse_int(ls_name, ls, 1, out.world_size);
  if (lr) {
    out.local_rank = parse_int(lr_name, lr, 0, out.world_size - 1);
    if (out.local_size > 0 && out.local_rank >= out.local_size) {
      throw CommError(cnx::str("environment: ", lr_name, "=", out.local_rank, " is not below the local world size ",
                               out.local_size, " (", ls_name, ")"));
    }
  }
  if (out.world_size == 1) {
    out.local_rank = 0;
    out.local_size = 1;
  }

  if (const char* a = env("CNX_MASTER_ADDR"); a && *a) out.master_addr = a;
  if (const char* p = env("CNX_MASTER_PORT"); p && *p) out.master_port = parse_int("CNX_MASTER_PORT", p, 1, 65535);
  if (!out.master_addr.empty() && out.master_port == 0) {
    throw CommError("environment: CNX_MASTER_ADDR is set but CNX_MASTER_PORT is not (the port rank 0 serves on)");
  }
  if (const char* d = env("CNX_STORE_DIR"); d && *d) out.store_dir = d;
  if (const char* t = env("CNX_RENDEZVOUS_TIMEOUT_S"); t && *t) {
    out.timeout_s = parse_int("CNX_RENDEZVOUS_TIMEOUT_S", t, 1, 86400);
  }
  return out;
}

std::unique_ptr<Bootstrap> make_store_bootstrap(std::unique_ptr<Store> store, const RendezvousEnv& env) {
  return std::make_unique<StoreBootstrap>(std::move(store), env);
}

std::unique_ptr<Bootstrap> make_single_bootstrap() {
  return std::make_unique<SingleBootstrap>();
}

std::unique_ptr<Store> make_store_from_env(const RendezvousEnv& env) {
  if (!env.store_dir.empty()) return make_file_store(env.store_dir, env.timeout_s);
  if (!env.master_addr.empty()) {
    TcpStoreOptions o;
    o.host = env.master_addr;
    o.port = env.master_port;
    o.serve = env.rank == 0;
    o.timeout_s = env.timeout_s;
    return make_tcp_store(o);
  }
  return nullptr;
}

}  // namespace cnx::comm
