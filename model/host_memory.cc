#include "model/host_memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cnx::model {

bool keep_freed_tensor_memory() {
#if defined(__GLIBC__)
  // No mmap-per-block (every block from the heap), and no trimming of the
  // heap's top after frees.
  const bool no_mmap = mallopt(M_MMAP_MAX, 0) == 1;
  const bool no_trim = mallopt(M_TRIM_THRESHOLD, -1) == 1;
  return no_mmap && no_trim;
#else
  return false;
#endif
}

}  // namespace cnx::model
