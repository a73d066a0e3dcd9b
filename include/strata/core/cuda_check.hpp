// strata/core/cuda_check.hpp — turning CUDA runtime status codes into strata::cuda_error.
//
// Only included when STRATA_ENABLE_CUDA is 1 (cuda-runtime and cuda-device builds).
#pragma once

#include <strata/core/error.hpp>

#include <cuda_runtime_api.h>

#include <string>

STRATA_NAMESPACE_BEGIN

/// Throws cuda_error("<what>: <cuda message>") unless `status` is cudaSuccess.
inline void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess)
    throw cuda_error(static_cast<int>(status),
                     what + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                         ")");
}

/// How many GPUs this process can use. Any error from device discovery — including the
/// "insufficient driver" that a machine with the toolkit but no driver answers — means none.
inline int cuda_device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky status so later calls are not poisoned by it
    return 0;
  }
  return n;
}

STRATA_NAMESPACE_END
