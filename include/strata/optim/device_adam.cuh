// strata/optim/device_adam.cuh — Adam/AdamW and gradient statistics on the GPU, for many
// tensors in one kernel launch (nvcc only: this header holds kernels).
//
// What lives here: device_adam_tensor (one tensor's master weights, moments, gradient and
// optional low-precision copy, all in device memory), adam_update_device() (the whole list in
// ONE launch), device_adam_batch (the same with the chunk table uploaded once, for a training
// loop that updates the same tensors every step), and the device gradient statistics
// (measure_gradients_device, device_grad_batch) that clipping and loss scaling need.
// What does not: the formula and its step scalars (optim/adam.hpp, which this follows to the
// bit), the host paths, the loss scaler's decisions (host code: loss_scaler.hpp), moving state
// between tiers.
//
// Multi-tensor apply: every tensor is cut into chunks of device_adam_chunk_elements elements;
// a table of (tensor, first element) entries has one entry per chunk, and the grid has one
// block per entry, so a model's hundreds of small tensors cost one launch instead of hundreds.
//
// Bitwise equal to the host scalar path (adam_update with simd_level::scalar, and so to every
// host path): each operation of the documented formula is spelled with a correctly rounded
// intrinsic (__fmul_rn, __fmaf_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn), which nvcc neither
// contracts into FMAs nor replaces under --use_fast_math, and f16 / bf16 conversions are
// core/dtype.hpp's exact integer routines. NaN payloads aside (the GPU returns a canonical NaN).
//
//   std::vector<optim::device_adam_tensor<bf16, bf16>> list = ...;     // device pointers
//   optim::device_adam_batch<bf16, bf16> batch(list);                  // uploads the table once
//   for (t = 1; ...) batch.step(optim::adam_step_scalars::make(params, t, unscale * clip), s);
#pragma once

#if !defined(__CUDACC__)
#  error "strata/optim/device_adam.cuh holds CUDA kernels: include it only from .cu files \
compiled by nvcc (host code uses strata/optim/adam.hpp and grad_stats.hpp)"
#endif

#include <strata/core/cuda_check.hpp>
#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>
#include <strata/optim/adam.hpp>
#include <strata/optim/grad_stats.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>

STRATA_NAMESPACE_BEGIN
namespace optim {

/// One tensor of a multi-tensor update. Every pointer is device memory (or memory the device
/// can address) holding n elements; copy is written unless P is no_copy (then leave it null).
/// The arrays must not overlap. G: float, bf16, f16; P: no_copy, float, bf16, f16.
template <class G, class P = no_copy>
struct device_adam_tensor {
  float* master = nullptr;  // (n) fp32 master weights, updated in place
  float* m = nullptr;       // (n) first moment
  float* v = nullptr;       // (n) second moment
  const G* grad = nullptr;  // (n)
  P* copy = nullptr;        // (n) the parameters in P, for the forward pass
  std::size_t n = 0;
};

/// Elements per chunk (one thread block's share). A multiple of 4, so the 16-byte vector loads
/// of an aligned tensor stay aligned in every chunk.
inline constexpr std::size_t device_adam_chunk_elements = std::size_t{1} << 15;

/// Updates every tensor of `tensors` with the scalars `k`, in one kernel launch on `stream`
/// (asynchronous: returns once it is queued). The chunk table travels in stream-ordered device
/// memory (cudaMallocAsync / cudaFreeAsync); the host list may be dropped on return. Zero
/// elements in all: nothing is launched. config_error for a tensor with n > 0 and a null
/// pointer (naming the tensor's index and the field), cuda_error for a failed launch.
template <class G, class P>
void adam_update_device(const adam_step_scalars& k,
                        std::span<const device_adam_tensor<G, P>> tensors, cudaStream_t stream);

/// A fixed list of tensors whose chunk table lives on the device: step() is one kernel launch
/// with no allocation or copy, which is what a training loop wants every step. Holds a device
/// allocation (moved, not copied); the tensors' memory stays the caller's.
template <class G, class P = no_copy>
class device_adam_batch {
public:
  /// Checks the list as adam_update_device does and uploads its table (synchronously).
  explicit device_adam_batch(std::span<const device_adam_tensor<G, P>> tensors);
  ~device_adam_batch();
  device_adam_batch(device_adam_batch&& o) noexcept;
  device_adam_batch& operator=(device_adam_batch&& o) noexcept;
  device_adam_batch(const device_adam_batch&) = delete;
  device_adam_batch& operator=(const device_adam_batch&) = delete;

  /// One launch on `stream` over every tensor; asynchronous.
  void step(const adam_step_scalars& k, cudaStream_t stream) const;

  std::size_t tensors() const noexcept { return tensors_; }
  std::size_t elements() const noexcept { return elements_; }
  std::size_t chunks() const noexcept { return chunks_; }

private:
  void* table_ = nullptr;  // device: the tensor list, then the chunk table
  std::size_t tensors_ = 0, elements_ = 0, chunks_ = 0, chunk_offset_ = 0;
};

// ---- gradient statistics on the device ------------------------------------------------------

/// One gradient tensor for the device statistics.
template <class G>
struct device_grad_tensor {
  const G* grad = nullptr;  // (n) device memory
  std::size_t n = 0;
};

/// Writes to *out (device memory, or any memory the device can write) the grad_stats of all
/// `tensors` together, as measure_gradient would on the host: sum of (multiplier * g)^2 over
/// the finite elements in double, and the count of Inf/NaN. Two kernels on `stream` (one
/// block per chunk reduces with cub::BlockReduce into a partial; one block adds the partials
/// in chunk order), so the result is deterministic run to run. It is not bitwise the host's
/// (another summation order): both are within the bound grad_stats.hpp states. Copy *out to
/// the host to decide about the step (loss_scaler::update, clip_coefficient), or keep it on
/// the device for kernels of your own. config_error for a non-finite multiplier or a null out.
template <class G>
void measure_gradients_device(std::span<const device_grad_tensor<G>> tensors, float multiplier,
                              grad_stats* out, cudaStream_t stream);

/// A fixed list of gradient tensors whose chunk table and partial sums live on the device:
/// measure() is two launches with no allocation. Measures on one batch must not run
/// concurrently on different streams (they share the partial sums).
template <class G>
class device_grad_batch {
public:
  explicit device_grad_batch(std::span<const device_grad_tensor<G>> tensors);
  ~device_grad_batch();
  device_grad_batch(device_grad_batch&& o) noexcept;
  device_grad_batch& operator=(device_grad_batch&& o) noexcept;
  device_grad_batch(const device_grad_batch&) = delete;
  device_grad_batch& operator=(const device_grad_batch&) = delete;

  void measure(float multiplier, grad_stats* out, cudaStream_t stream) const;

  std::size_t chunks() const noexcept { return chunks_; }

private:
  void* table_ = nullptr;  // device: the tensor list, the chunk table, the partial sums
  std::size_t tensors_ = 0, chunks_ = 0, chunk_offset_ = 0, partial_offset_ = 0;
};

}  // namespace optim
STRATA_NAMESPACE_END

#include <strata/optim/detail/device_adam.cuh>
