// strata/core/config.hpp — build-mode switches and the few public macros.
//
// What lives here: STRATA_ENABLE_CUDA (host build = 0, cuda-runtime / cuda-device builds = 1),
// the inline ABI namespace that keeps host-mode and CUDA-mode translation units from ever
// linking against each other's symbols, and STRATA_HOST_DEVICE for functions that kernels use.
// What does not: anything that needs a CUDA header (see exec/ and memory/ for that).
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(STRATA_ENABLE_CUDA)
#  if defined(__CUDACC__)
#    define STRATA_ENABLE_CUDA 1
#  else
#    define STRATA_ENABLE_CUDA 0
#  endif
#endif

// The mode is part of every symbol's mangled name: a host-mode object file and a CUDA-mode
// object file that both use strata link without clashing, and never silently share a type
// whose layout or behaviour differs between the modes.
#if STRATA_ENABLE_CUDA
#  define STRATA_ABI_NAMESPACE cuda_v0
#else
#  define STRATA_ABI_NAMESPACE host_v0
#endif

#define STRATA_NAMESPACE_BEGIN                                                                     \
  namespace strata {                                                                               \
  inline namespace STRATA_ABI_NAMESPACE {
#define STRATA_NAMESPACE_END                                                                       \
  }                                                                                                \
  }

// Functions usable from both host code and device kernels (conversions, shape arithmetic).
#if defined(__CUDACC__)
#  define STRATA_HOST_DEVICE __host__ __device__
#else
#  define STRATA_HOST_DEVICE
#endif

#define STRATA_VERSION_MAJOR 0
#define STRATA_VERSION_MINOR 1
#define STRATA_VERSION_PATCH 0

STRATA_NAMESPACE_BEGIN
/// True when tier::device is a real GPU, false when it is the emulated device arena.
inline constexpr bool cuda_enabled = STRATA_ENABLE_CUDA != 0;
STRATA_NAMESPACE_END
