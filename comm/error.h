#pragma once
// The communication layer's error type, in a header free of LibTorch so that
// the rendezvous store and its tools can use it cheaply.
#include <stdexcept>

namespace cnx::comm {

// Errors from the communication layer (bad input, MPI/NCCL failures,
// rendezvous failures). The message names the rank, the operation and what
// was wrong.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace cnx::comm
