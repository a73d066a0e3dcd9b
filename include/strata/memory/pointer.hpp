// strata/memory/pointer.hpp — what a raw pointer points at (GPU or host memory), and a copy
// that works for either.
//
// What lives here: is_device_memory(p) and copy_bytes(), for code that is handed buffers it did
// not allocate — the host-side communicators (comm::solo, comm::threads, comm::mpi) accept GPU
// buffers in the CUDA build and move them with cudaMemcpy, and optim's gradient statistics
// reach CUDA's headers through this one. In the host build the emulated device is host memory,
// so plain copies reach it and nothing here needs CUDA.
// What does not: tier-aware copies with queues and budgets (exec/copy_engine.hpp), memory
// resources (resource.hpp).
#pragma once

#include <strata/core/config.hpp>

#include <cstddef>
#include <cstring>
#include <string>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

STRATA_NAMESPACE_BEGIN

/// True when p points into GPU memory. Any error from the query (a pointer CUDA never saw, no
/// driver) means host memory. Always false in the host build.
inline bool is_device_memory(const void* p) noexcept {
#if STRATA_ENABLE_CUDA
  if (p == nullptr) return false;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();  // clear the status so later calls are not poisoned by it
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice;
#else
  (void)p;
  return false;
#endif
}

/// Copies `bytes` from src to dst and returns when they are there. `device` says that one side
/// is GPU memory (then cudaMemcpy, which finds the direction itself; callers ask
/// is_device_memory once per buffer, not once per copy); host copies may overlap. `what` names
/// the copy in a CUDA error's message.
inline void copy_bytes(void* dst, const void* src, std::size_t bytes, bool device,
                       const char* what) {
  if (bytes == 0 || dst == src) return;
#if STRATA_ENABLE_CUDA
  if (device) {
    check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), what);
    return;
  }
#else
  (void)device, (void)what;
#endif
  std::memmove(dst, src, bytes);
}

STRATA_NAMESPACE_END
