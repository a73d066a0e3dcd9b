// strata/optim/grad_stats.hpp — how large a gradient is and whether it is finite: the two
// numbers behind gradient clipping and loss scaling.
//
// What lives here: grad_stats (the sum of squares in double and the count of Inf/NaN
// elements), measure_gradient() over one host span of f32 / bf16 / f16, all_reduce_stats()
// over the ranks of a communicator (so ZeRO shards agree on one global norm), global_norm()
// and clip_coefficient(). What does not: the loss scaler's state machine (loss_scaler.hpp),
// the update itself (adam.hpp), the GPU versions (optim/device_adam.cuh:
// measure_gradients_device writes a grad_stats to device memory).
//
// One step with loss scaling and clipping, on a rank that holds a shard of the gradient:
//
//   const float unscale = scaler.grad_multiplier();         // read before update() changes it
//   auto local = optim::measure_gradient(std::span<const f16>(grad_shard), unscale);
//   auto all = optim::all_reduce_stats(comm, local);        // the same bits on every rank
//   if (scaler.update(!all.finite())) {                     // false: skip this step
//     const float clip = optim::clip_coefficient(optim::global_norm(all), max_norm);
//     auto k = optim::adam_step_scalars::make(params, ++t, unscale * clip);
//     optim::adam_update(k, master, m, v, std::span<const f16>(grad_shard));
//   }
//
// Precision (what the tests hold the sharded norm to):
//  - measure_gradient: x = double(multiplier) * double(g) is exact (a 24-bit by 24-bit
//    product fits in 53 bits), so each term x * x rounds once. Terms are added in double in a
//    fixed order that depends only on the length: 8 interleaved lanes inside blocks of
//    measure_block_elements elements, blocks added in index order. All terms are >= 0, so the
//    relative error of the sum is below (n / 8 + 16) * 2^-53 (about 1.4e-10 for 10^7 elements
//    per rank). Long gradients are measured on exec/thread_pool.hpp's default_thread_pool(),
//    block by block, which changes no bit of the result.
//  - all_reduce_stats: exact transport, then (size - 1) more double additions in rank order.
//    The sharded sum of squares therefore differs from the unsharded one by a relative
//    2 * (n / 8 + 16 + size) * 2^-53 at most, and the norm (a square root) by half of that.
//  - Non-finite elements are counted, not summed: sum_squares stays a usable number and
//    finite() says whether the step should be taken at all.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/pointer.hpp>  // cuda_runtime_api.h in the CUDA build

#include <cstddef>
#include <cstdint>
#include <span>

STRATA_NAMESPACE_BEGIN
namespace optim {

/// What one pass over a gradient (or a shard, or the sum of all shards) found. A plain
/// 16-byte aggregate, so kernels can write it to device memory and ranks exchange it as bytes.
struct grad_stats {
  double sum_squares = 0;     // sum of (multiplier * g)^2 over the finite elements
  std::uint64_t nonfinite = 0;  // elements that are Inf or NaN

  STRATA_HOST_DEVICE constexpr grad_stats& operator+=(const grad_stats& o) noexcept {
    sum_squares += o.sum_squares;
    nonfinite += o.nonfinite;
    return *this;
  }
  /// True when no element was Inf or NaN: the step may be taken.
  STRATA_HOST_DEVICE constexpr bool finite() const noexcept { return nonfinite == 0; }
};

/// Elements per block of measure_gradient: the unit of its fixed summation order and of the
/// work its threads share.
inline constexpr std::size_t measure_block_elements = std::size_t{1} << 16;

/// Sum of (multiplier * g[i])^2 in double over the finite elements, and the count of the
/// others. G is float, bf16 or f16. multiplier is usually 1 / loss_scale (so the norm is that
/// of the true gradient); config_error if it is not finite.
template <class G>
grad_stats measure_gradient(std::span<const G> g, float multiplier = 1.0f);

/// The sum of every rank's `local` (rank order, in double), returned on every rank. Collective:
/// every rank calls it once, in the same place of its collective order. The stats travel as
/// bytes (an all_gather of 16 bytes per rank), not as a float all_reduce: a float sum would
/// drop 29 bits of each double and round counts above 2^24, and an all_gather moves the exact
/// bits on every backend — comm::nccl included, whose float sums are not in rank order — so
/// the result is bitwise the same on every rank and every backend. A communicator that only
/// takes device buffers (comm::nccl) gets the bytes staged through a small device buffer.
template <comm::communicator C>
grad_stats all_reduce_stats(C& comm, const grad_stats& local);

/// sqrt(sum_squares): the L2 norm of the measured gradient.
double global_norm(const grad_stats& s);

/// The factor that scales a gradient of norm `norm` down to at most `max_norm`:
/// min(1, max_norm / (norm + 1e-6)), rounded to float; 1 when max_norm <= 0 (clipping off) or
/// when the norm is NaN. Multiply it into adam_step_scalars' gradient multiplier.
float clip_coefficient(double norm, double max_norm);

}  // namespace optim
STRATA_NAMESPACE_END

#include <strata/optim/detail/grad_stats.hpp>
