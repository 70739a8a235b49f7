// One rank of the multi-process rendezvous tests (store_test.cc starts
// several). Reads its place from the environment (comm/rendezvous.h), then
// over the store bootstrap: broadcasts a 128-byte blob from rank 0 (the size
// of an NCCL unique id), allgathers "r<rank>", and passes a barrier. Prints
//   rank=<r> size=<n> local=<lr>/<ls> via=<store> blob=<hex of the blob sum> gather=<a,b,...>
// and exits 0; on any error prints it to stderr and exits 3.
#include <cstdio>
#include <exception>
#include <string>

#include "comm/rendezvous.h"

int main() {
  try {
    const cnx::comm::RendezvousEnv env = cnx::comm::read_rendezvous_env();
    auto store = cnx::comm::make_store_from_env(env);
    if (!store) {
      std::fprintf(stderr, "store_rank: set CNX_MASTER_ADDR/CNX_MASTER_PORT or CNX_STORE_DIR\n");
      return 2;
    }
    auto boot = cnx::comm::make_store_bootstrap(std::move(store), env);
    std::string blob(128, '\0');
    if (boot->rank() == 0) {
      for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>((i * 37 + 11) & 0xff);
    }
    const std::string got = boot->broadcast(blob, 0);
    unsigned long sum = 0;
    for (unsigned char c : got) sum = sum * 131 + c;
    const auto all = boot->allgather("r" + std::to_string(boot->rank()));
    boot->barrier();
    std::string joined;
    for (const auto& s : all) joined += (joined.empty() ? "" : ",") + s;
    std::printf("rank=%d size=%d local=%d/%d via=%s blob=%zu:%lx gather=%s\n", boot->rank(), boot->size(),
                boot->local_rank(), boot->local_size(), boot->describe().c_str(), got.size(), sum, joined.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "store_rank: %s\n", e.what());
    return 3;
  }
}
