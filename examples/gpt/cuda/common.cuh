// examples/gpt/cuda/common.cuh — what every CUDA file of the mini-GPT shares.
//
// What this is: the activation type switch (float or __nv_bfloat16: `T` in every kernel, with
// to_f32 / from_f32 so kernels always compute in fp32), the cudaDataType of each for cuBLASLt,
// a move-only device array that owns its cudaMalloc, host <-> device copies, and the launch
// check every kernel launch ends with.
// What it is not: kernels (kernels.cuh, attention.cuh), GEMMs (gemm.cuh), the model (model.cuh).
//
// Errors: CUDA runtime failures are strata::cuda_error (strata/core/cuda_check.hpp) with a
// message that names the call and the buffer; sizes that cannot work are std::invalid_argument,
// as in the host model.
#pragma once

#include <strata/core/cuda_check.hpp>

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <library_types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace gpt::gpu {

using bf16 = __nv_bfloat16;

/// The activation types the kernels are instantiated for: fp32 (the exact path the tests
/// compare with the host model) and bf16 (the fast path).
template <class T>
inline constexpr bool is_activation_type = std::is_same_v<T, float> || std::is_same_v<T, bf16>;

template <class T>
__host__ __device__ __forceinline__ float to_f32(T x) {
  static_assert(is_activation_type<T>, "activations are float or __nv_bfloat16");
  if constexpr (std::is_same_v<T, float>)
    return x;
  else
    return __bfloat162float(x);
}

/// Round to nearest even (bf16), as strata's to_bf16 and cuBLASLt's epilogues do.
template <class T>
__host__ __device__ __forceinline__ T from_f32(float x) {
  static_assert(is_activation_type<T>, "activations are float or __nv_bfloat16");
  if constexpr (std::is_same_v<T, float>)
    return x;
  else
    return __float2bfloat16_rn(x);
}

template <class T>
constexpr cudaDataType_t cuda_type_of() {
  static_assert(is_activation_type<T>, "activations are float or __nv_bfloat16");
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else
    return CUDA_R_16BF;
}

inline const char* cuda_type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return "f32";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_16F: return "f16";
    default: return "other";
  }
}

/// Throws strata::cuda_error naming `what` if the last launch failed (bad configuration,
/// too many resources). Asynchronous faults surface at the next synchronising call.
inline void check_launch(const char* what) {
  strata::check_cuda(cudaGetLastError(), std::string("kernel launch ") + what);
}

inline unsigned blocks_for(std::size_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

/// n elements of T in device memory, owned (cudaMalloc / cudaFree). Move-only.
template <class T>
class device_array {
public:
  device_array() = default;
  device_array(std::size_t n, const char* name) : n_(n) {
    if (n == 0) return;
    strata::check_cuda(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)),
                       std::string("cudaMalloc of ") + name + " (" + std::to_string(n * sizeof(T)) +
                           " bytes)");
  }
  ~device_array() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  device_array(device_array&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  device_array& operator=(device_array&& o) noexcept {
    if (this != &o) {
      if (ptr_ != nullptr) cudaFree(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;

  T* data() noexcept { return ptr_; }
  const T* data() const noexcept { return ptr_; }
  std::size_t size() const noexcept { return n_; }
  std::size_t bytes() const noexcept { return n_ * sizeof(T); }

private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

/// n zeros of T in device memory (synchronous).
template <class T>
device_array<T> zeroed_device_array(std::size_t n, const char* name) {
  device_array<T> a(n, name);
  strata::check_cuda(cudaMemset(a.data(), 0, a.bytes()), std::string("zeroing ") + name);
  strata::check_cuda(cudaStreamSynchronize(nullptr), std::string("zeroing ") + name);
  return a;
}

/// Host -> device, synchronous (pageable host memory).
template <class T>
void upload(T* dst, const T* src, std::size_t n, const char* what) {
  strata::check_cuda(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyHostToDevice),
                     std::string("upload of ") + what);
}

/// Device -> host, synchronous.
template <class T>
void download(T* dst, const T* src, std::size_t n, const char* what) {
  strata::check_cuda(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost),
                     std::string("download of ") + what);
}

template <class T>
std::vector<T> download(const T* src, std::size_t n, const char* what) {
  std::vector<T> out(n);
  download(out.data(), src, n, what);
  return out;
}

}  // namespace gpt::gpu
