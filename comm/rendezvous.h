#pragma once
// How a process learns its place in the job (rank, world size, local rank)
// and exchanges the few blobs a backend needs before it can communicate
// (the NCCL unique id), without any communication backend.
//
// Environment (read by read_rendezvous_env; CNX_* wins over OMPI_*):
//   CNX_RANK, CNX_WORLD_SIZE         this process's rank, the number of ranks
//                                    (else OMPI_COMM_WORLD_RANK / _SIZE under
//                                    mpirun; else rank 0 of 1)
//   CNX_LOCAL_RANK, CNX_LOCAL_WORLD_SIZE   rank among, and number of, the
//                                    ranks on this host (else
//                                    OMPI_COMM_WORLD_LOCAL_RANK / _LOCAL_SIZE;
//                                    else found by exchanging hostnames)
//   CNX_MASTER_ADDR, CNX_MASTER_PORT rank 0 serves a TCP store there
//   CNX_STORE_DIR                    or: a folder every rank shares (FileStore)
//   CNX_RENDEZVOUS_TIMEOUT_S         how long to wait for peers (default 300)
//
// Bootstrap: the blob exchange on top of a Store (or of MPI, see
// comm/factory.cc). Every rank must call the same methods in the same order
// (they are matched by a per-bootstrap sequence number). Not thread-safe.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/store.h"

namespace cnx::comm {

struct RendezvousEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = -1;  // -1: not given
  int local_size = -1;
  std::string master_addr;
  int master_port = 0;  // 0: not given
  std::string store_dir;
  double timeout_s = 300.0;
  bool under_mpirun = false;  // OMPI_COMM_WORLD_SIZE is set
  // Where rank and size came from: "CNX_RANK/CNX_WORLD_SIZE",
  // "OMPI_COMM_WORLD_RANK/SIZE" or "default".
  std::string source = "default";
};

using EnvLookup = std::function<const char*(const char*)>;

// Parses the variables above (lookup defaults to std::getenv). Throws
// CommError naming the variable for a malformed or inconsistent value.
RendezvousEnv read_rendezvous_env(const EnvLookup& lookup = {});

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  // "single", "mpi", "tcp://host:port", "file:DIR".
  virtual std::string describe() const = 0;
  // Returns `root`'s blob on every rank (others pass anything).
  virtual std::string broadcast(const std::string& blob, int root) = 0;
  virtual std::vector<std::string> allgather(const std::string& mine) = 0;
  virtual void barrier() = 0;
};

// Bootstrap over a Store shared by `env.world_size` processes. Local rank
// and size come from env when given, else from an exchange of hostnames.
// At destruction every rank checks out; rank 0 waits (at most the store's
// timeout, 30 s at most) until all have, so that its TCP server outlives their last
// request, then clears the store.
std::unique_ptr<Bootstrap> make_store_bootstrap(std::unique_ptr<Store> store, const RendezvousEnv& env);

// World of one: no store, no peers.
std::unique_ptr<Bootstrap> make_single_bootstrap();

// The store env names: file store if CNX_STORE_DIR, else TCP store if
// CNX_MASTER_ADDR (rank 0 serves); nullptr if neither is set.
std::unique_ptr<Store> make_store_from_env(const RendezvousEnv& env);

// The bootstrap for this process (comm/factory.cc, which knows whether MPI
// is built): a store when env names one; else a world of one; else MPI when
// it is built (under mpirun). Throws CommError listing the variables to set
// when there are several ranks and no way to reach them.
std::unique_ptr<Bootstrap> make_bootstrap(const RendezvousEnv& env);

}  // namespace cnx::comm
