#include "comm/mpi/mpi_bootstrap.h"

#include <climits>

#include "comm/mpi/mpi_communicator.h"
#include "common/check.h"

namespace cnx::comm {

namespace {

class MpiBootstrap final : public Bootstrap {
 public:
  explicit MpiBootstrap(std::shared_ptr<MpiRuntime> runtime)
      : comm_(std::move(runtime), MPI_COMM_WORLD, MpiWaitMode::kBlocking) {}

  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  int local_rank() const override { return comm_.local_rank(); }
  int local_size() const override { return comm_.local_size(); }
  std::string describe() const override { return "mpi"; }

  std::string broadcast(const std::string& blob, int root) override {
    if (root < 0 || root >= size()) {
      throw CommError(cnx::str("bootstrap broadcast on rank ", rank(), ": root ", root, " not in [0, ", size(), ")"));
    }
    if (blob.size() > static_cast<size_t>(INT_MAX)) {
      throw CommError(cnx::str("bootstrap broadcast: ", blob.size(), " bytes is too large"));
    }
    std::string out = blob;
    comm_.run_on_comm_thread([&out, root](MPI_Comm comm) {
      int len = static_cast<int>(out.size());
      CNX_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, root, comm));
      out.resize(static_cast<size_t>(len));
      if (len > 0) CNX_MPI_CHECK(MPI_Bcast(out.data(), len, MPI_CHAR, root, comm));
    });
    return out;
  }

  std::vector<std::string> allgather(const std::string& mine) override { return comm_.allgather(mine); }
  void barrier() override { comm_.barrier(); }

 private:
  MpiCommunicator comm_;
};

}  // namespace

std::unique_ptr<Bootstrap> make_mpi_bootstrap(std::shared_ptr<MpiRuntime> runtime) {
  return std::make_unique<MpiBootstrap>(std::move(runtime));
}

}  // namespace cnx::comm
