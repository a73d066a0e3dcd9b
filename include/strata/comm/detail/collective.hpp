// strata/comm/detail/collective.hpp — what the communicators share: the names of the
// collectives, how a call is described in messages, and the reduction in rank order.
//
// What lives here: collective_call (what every rank must agree on), describe(), and
// reduce_in_rank_order(), the one loop every deterministic reduction in strata::comm runs, so
// that solo, threads and mpi give bitwise the same result. What does not: any communicator.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/core/error.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

enum class collective : std::uint8_t { all_gather, reduce_scatter, all_reduce, broadcast, barrier };

constexpr const char* collective_name(collective c) noexcept {
  switch (c) {
  case collective::all_gather: return "all_gather";
  case collective::reduce_scatter: return "reduce_scatter";
  case collective::all_reduce: return "all_reduce";
  case collective::broadcast: return "broadcast";
  case collective::barrier: return "barrier";
  }
  return "?";
}

/// One rank's call, as far as every rank must agree on it. Fields a collective does not use
/// stay at their defaults, so == compares only what matters.
struct collective_call {
  collective kind = collective::barrier;
  /// bytes per rank (all_gather), floats per rank (reduce_scatter), floats (all_reduce),
  /// bytes (broadcast), 0 (barrier).
  std::size_t count = 0;
  reduce_op op = reduce_op::sum;
  int root = 0;

  static collective_call all_gather(std::size_t bytes_per_rank) {
    return {collective::all_gather, bytes_per_rank, reduce_op::sum, 0};
  }
  static collective_call reduce_scatter(std::size_t count_per_rank, reduce_op op) {
    return {collective::reduce_scatter, count_per_rank, op, 0};
  }
  static collective_call all_reduce(std::size_t count, reduce_op op) {
    return {collective::all_reduce, count, op, 0};
  }
  static collective_call broadcast(std::size_t bytes, int root) {
    return {collective::broadcast, bytes, reduce_op::sum, root};
  }
  static collective_call barrier() { return {}; }

  friend bool operator==(const collective_call&, const collective_call&) = default;
};

/// "all_gather #3 (7 bytes per rank)", "all_reduce #0 (mean of 1000 floats)"; `seq` counts the
/// communicator's collectives from 0, the same on every rank.
inline std::string describe(const collective_call& c, std::uint64_t seq) {
  std::string s = std::string(collective_name(c.kind)) + " #" + std::to_string(seq);
  switch (c.kind) {
  case collective::all_gather: return s + " (" + format_bytes(c.count) + " per rank)";
  case collective::reduce_scatter:
    return s + " (" + reduce_op_name(c.op) + " of " + std::to_string(c.count) + " floats per rank)";
  case collective::all_reduce:
    return s + " (" + reduce_op_name(c.op) + " of " + std::to_string(c.count) + " floats)";
  case collective::broadcast:
    return s + " (" + format_bytes(c.count) + " from rank " + std::to_string(c.root) + ")";
  case collective::barrier: return s;
  }
  return s;
}

/// Throws config_error unless 0 <= root < size.
inline void check_root(int root, int size, const char* backend) {
  if (root < 0 || root >= size)
    throw config_error(std::string("strata::comm ") + backend + ": broadcast root " +
                       std::to_string(root) + " is not a rank of this " + std::to_string(size) +
                       "-rank communicator");
}

/// Elements are processed in tiles this long: a tile of the accumulator stays in L1 while every
/// block's tile is added to it.
inline constexpr std::size_t reduce_tile = 1024;

/// For every i < count: r = blocks[0][i]; r += blocks[1][i]; ...; r += blocks[n-1][i] (in float,
/// in this order), then r = r / float(n) for mean; r is stored into outs[0][i] ...
/// outs[n_outs-1][i]. This is the definition of every deterministic reduction in strata::comm.
/// An out may be the very same pointer as a block (in place) but must not otherwise overlap one:
/// a tile of every block is read before that tile of any out is written.
inline void reduce_in_rank_order(const float* const* blocks, int n, float* const* outs,
                                 int n_outs, std::size_t count, reduce_op op) noexcept {
  float acc[reduce_tile];
  const float divisor = static_cast<float>(n);
  for (std::size_t base = 0; base < count; base += reduce_tile) {
    const std::size_t m = std::min(reduce_tile, count - base);
    std::memcpy(acc, blocks[0] + base, m * sizeof(float));
    for (int b = 1; b < n; ++b) {
      const float* src = blocks[b] + base;
      for (std::size_t i = 0; i < m; ++i) acc[i] += src[i];
    }
    if (op == reduce_op::mean)
      for (std::size_t i = 0; i < m; ++i) acc[i] = acc[i] / divisor;
    for (int o = 0; o < n_outs; ++o) std::memcpy(outs[o] + base, acc, m * sizeof(float));
  }
}

/// Start of part i when `count` items are split into `parts` parts as evenly as possible (the
/// first count % parts parts get one more). part_begin(count, parts, parts) == count.
constexpr std::size_t part_begin(std::size_t count, std::size_t parts, std::size_t i) noexcept {
  return i * (count / parts) + std::min(i, count % parts);
}

}  // namespace comm::detail
STRATA_NAMESPACE_END
