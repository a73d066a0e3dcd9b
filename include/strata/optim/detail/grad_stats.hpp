// strata/optim/detail/grad_stats.hpp — definitions for optim/grad_stats.hpp.
#pragma once

#include <strata/exec/thread_pool.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <string>
#include <type_traits>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace optim {
namespace detail {

// |g| as a float, with Inf and NaN masked to +0, and whether g was finite — from the stored
// bits, without branches, so the lane loop below vectorises. Finiteness is a bit test, not
// std::isfinite, which -ffast-math may fold to true. The f16 case widens by hand instead of
// calling core's general conversion: only the magnitude of a finite value is needed here, and
// this form vectorises (about 3x faster); subnormals are float(m) * 2^-24, exact and a normal
// float, so FTZ/DAZ modes cannot flush them. The GPU's measure (optim/device_adam.cuh) uses
// it too.
struct magnitude {
  float value;
  std::uint32_t finite;  // 1 or 0
};
template <class G>
STRATA_HOST_DEVICE inline magnitude magnitude_of(G g) noexcept {
  std::uint32_t a, finite;  // a: the magnitude's f32 bits
  if constexpr (std::is_same_v<G, float>) {
    a = strata::detail::bit_cast<std::uint32_t>(g) & 0x7fff'ffffu;
    finite = a < 0x7f80'0000u;
  } else if constexpr (std::is_same_v<G, bf16>) {
    a = static_cast<std::uint32_t>(g.bits & 0x7fffu) << 16;
    finite = a < 0x7f80'0000u;
  } else {
    const std::uint32_t h = g.bits & 0x7fffu;
    finite = h < 0x7c00u;
    const std::uint32_t normal = (h << 13) + (112u << 23);
    const float tiny = static_cast<float>(static_cast<std::int32_t>(h)) * 0x1p-24f;
    const std::uint32_t subnormal = strata::detail::bit_cast<std::uint32_t>(tiny);
    const std::uint32_t is_normal = 0u - static_cast<std::uint32_t>(h >= 0x0400u);  // all ones or 0
    a = (normal & is_normal) | (subnormal & ~is_normal);
  }
  return {strata::detail::bit_cast<float>(a & (0u - finite)), finite};
}

// One block (at most measure_block_elements), in the fixed order the header documents: element
// i goes to lane i % 8, then the lanes are added pairwise.
template <class G>
inline grad_stats measure_block(const G* g, std::size_t n, double multiplier) noexcept {
  constexpr std::size_t lanes = 8;
  double acc[lanes] = {};
  std::uint64_t bad[lanes] = {};
  auto one = [&](std::size_t i, std::size_t l) {
    const magnitude e = magnitude_of(g[i]);
    const double x = multiplier * static_cast<double>(e.value);
    acc[l] += x * x;
    bad[l] += 1u - e.finite;
  };
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) one(i + l, l);
  for (std::size_t l = 0; i < n; ++i, ++l) one(i, l);  // the tail continues lanes 0, 1, ...
  grad_stats s;
  s.sum_squares = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  s.nonfinite = ((bad[0] + bad[1]) + (bad[2] + bad[3])) + ((bad[4] + bad[5]) + (bad[6] + bad[7]));
  return s;
}

}  // namespace detail

template <class G>
grad_stats measure_gradient(std::span<const G> g, float multiplier) {
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, bf16> || std::is_same_v<G, f16>,
                "measure_gradient: gradients are float, bf16 or f16");
  if (!std::isfinite(multiplier))
    throw config_error("measure_gradient: multiplier = " + std::to_string(multiplier) +
                       " (must be finite; it is usually 1 / loss_scale)");
  const double mult = multiplier;
  const std::size_t n = g.size();
  const std::size_t blocks = (n + measure_block_elements - 1) / measure_block_elements;
  auto block = [&](std::size_t b) {
    const std::size_t begin = b * measure_block_elements;
    const std::size_t len = std::min(n - begin, measure_block_elements);
    return detail::measure_block(g.data() + begin, len, mult);
  };
  grad_stats total;
  if (blocks <= 1) {
    if (blocks == 1) total = block(0);
    return total;
  }
  // Blocks are measured on the pool's threads into their own slots and added in index order
  // here, so the result does not depend on how many threads there were.
  std::vector<grad_stats> partial(blocks);
  default_thread_pool().parallel_for(blocks, 4, [&](std::size_t first, std::size_t last) {
    for (std::size_t b = first; b < last; ++b) partial[b] = block(b);
  });
  for (const grad_stats& p : partial) total += p;
  return total;
}

namespace detail {

// The 16 bytes one rank contributes, and the rank-order fold of everybody's.
inline grad_stats fold_gathered(const std::vector<grad_stats>& all) {
  grad_stats s = all.front();
  for (std::size_t r = 1; r < all.size(); ++r) s += all[r];
  return s;
}

}  // namespace detail

template <comm::communicator C>
grad_stats all_reduce_stats(C& comm, const grad_stats& local) {
  static_assert(sizeof(grad_stats) == 16 && std::is_trivially_copyable_v<grad_stats>,
                "grad_stats travels as 16 bytes");
  const auto size = static_cast<std::size_t>(comm.size());
  std::vector<grad_stats> all(size);
#if STRATA_ENABLE_CUDA
  // comm::nccl (the backend with its own stream) takes device buffers only: stage through one.
  if constexpr (requires(const C& c) {
                  { c.stream() } -> std::convertible_to<cudaStream_t>;
                  { c.device() } -> std::convertible_to<int>;
                }) {
    int previous = 0;
    check_cuda(cudaGetDevice(&previous), "all_reduce_stats: cudaGetDevice");
    check_cuda(cudaSetDevice(comm.device()), "all_reduce_stats: cudaSetDevice");
    void* staging = nullptr;
    const std::size_t bytes = (size + 1) * sizeof(grad_stats);  // [local][size ranks]
    check_cuda(cudaMalloc(&staging, bytes),
               "all_reduce_stats: cudaMalloc of " + format_bytes(bytes) + " of staging");
    auto* send = static_cast<grad_stats*>(staging);
    try {
      check_cuda(cudaMemcpy(send, &local, sizeof local, cudaMemcpyHostToDevice),
                 "all_reduce_stats: copy to the staging buffer");
      comm.all_gather(send, send + 1, sizeof(grad_stats)).wait();
      check_cuda(cudaMemcpy(all.data(), send + 1, size * sizeof(grad_stats),
                            cudaMemcpyDeviceToHost),
                 "all_reduce_stats: copy from the staging buffer");
    } catch (...) {
      cudaFree(staging);
      cudaSetDevice(previous);
      throw;
    }
    cudaFree(staging);
    cudaSetDevice(previous);
    return detail::fold_gathered(all);
  }
#endif
  comm.all_gather(&local, all.data(), sizeof(grad_stats)).wait();
  return detail::fold_gathered(all);
}

inline double global_norm(const grad_stats& s) { return std::sqrt(s.sum_squares); }

inline float clip_coefficient(double norm, double max_norm) {
  if (!(max_norm > 0)) return 1.0f;
  const double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? static_cast<float>(c) : 1.0f;  // a NaN norm compares false: 1
}

}  // namespace optim
STRATA_NAMESPACE_END
