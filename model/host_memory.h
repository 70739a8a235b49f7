#pragma once
// Host memory policy for processes that train or evaluate on the CPU.
//
// LibTorch's CPU tensors come from glibc malloc, which maps every block above
// its mmap threshold (at most 32 MiB) freshly and unmaps it on free: each
// training step then page-faults and zeroes every large activation and
// gradient again (stage 0 of a ConvNeXt at 224 px, batch 32: 16-64 MiB each).
// keep_freed_tensor_memory() makes glibc serve all blocks from its heap and
// never trim it, so the next step reuses the pages already mapped. The
// process keeps its peak heap (a training loop returns to it every step).
// Measured (bench/model/README.md): the dense atto training step at 224 px
// needs ~35% less CPU time with LibTorch's kernels, ~15% less with ours.
namespace cnx::model {

// Process-wide; call once at start-up, before large allocations. Returns
// false where the C library offers no such control (not glibc).
bool keep_freed_tensor_memory();

}  // namespace cnx::model
