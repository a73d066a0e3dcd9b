// strata/comm/detail/memory.hpp — telling GPU buffers from host buffers, and copying either.
//
// The host-side communicators (solo, mpi) accept device buffers in the CUDA build and move them
// with cudaMemcpy; everything else they touch is host memory. In the host build the emulated
// device is host memory, so plain copies reach it and nothing here needs CUDA.
#pragma once

#include <strata/core/config.hpp>

#include <cstddef>
#include <cstring>
#include <string>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

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
/// is GPU memory (then cudaMemcpy, which finds the direction itself); host copies may overlap.
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

}  // namespace comm::detail
STRATA_NAMESPACE_END
