// strata/comm/solo.hpp — the communicator of a world with one rank.
//
// What lives here: comm::solo, for single-process runs of code written for a communicator (the
// ZeRO bundles with one rank, the examples on one GPU). Every collective is a copy done before
// the call returns, so each request comes back complete.
// What does not: several ranks (comm/threads.hpp, comm/mpi.hpp, comm/nccl.hpp).
//
// The results are those of any other backend with one rank: all_gather, broadcast and a sum
// copy the bytes; mean divides by 1.0f (exact for every value). In the CUDA build device
// buffers are copied with cudaMemcpy, and a mean there is the same copy, which differs from
// the host division only in that a signalling NaN stays signalling.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/memory.hpp>
#include <strata/core/error.hpp>

#include <chrono>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace comm {

class solo {
public:
  /// The timeout is kept only so code can read it from any communicator: one rank never waits.
  explicit solo(std::chrono::milliseconds timeout = default_timeout) : timeout_(timeout) {}
  solo(const solo&) = delete;
  solo& operator=(const solo&) = delete;

  int rank() const noexcept { return 0; }
  int size() const noexcept { return 1; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  request all_gather(const void* send, void* recv, std::size_t bytes_per_rank) {
    check("all_gather");
    copy(recv, send, bytes_per_rank, "all_gather");
    return {};
  }

  request reduce_scatter(const float* send, float* recv, std::size_t count_per_rank,
                         reduce_op op) {
    check("reduce_scatter");
    reduce(send, recv, count_per_rank, op, "reduce_scatter");
    return {};
  }

  request all_reduce(const float* send, float* recv, std::size_t count, reduce_op op) {
    check("all_reduce");
    reduce(send, recv, count, op, "all_reduce");
    return {};
  }

  request broadcast(void* buf, std::size_t bytes, int root) {
    (void)buf, (void)bytes;
    check("broadcast");
    detail::check_root(root, 1, "solo");
    return {};
  }

  request barrier() {
    check("barrier");
    return {};
  }

  /// Marks the communicator failed: every later collective throws comm_error naming `why`.
  void abort(const std::string& why) noexcept {
    if (!aborted_) {
      aborted_ = true;
      why_ = why;
    }
  }

private:
  void check(const char* what) const {
    if (aborted_)
      throw comm_error(std::string("strata::comm solo: rank 0 failed: ") + why_ +
                       " (rank 0: cannot start " + what + ")");
  }

  static void copy(void* dst, const void* src, std::size_t bytes, const char* what) {
    const bool device = detail::is_device_memory(dst) || detail::is_device_memory(src);
    detail::copy_bytes(dst, src, bytes, device, what);
  }

  static void reduce(const float* send, float* recv, std::size_t count, reduce_op op,
                     const char* what) {
    if (detail::is_device_memory(send) || detail::is_device_memory(recv)) {
      copy(recv, send, count * sizeof(float), what);  // x / 1.0f == x: see the top of the file
      return;
    }
    detail::reduce_in_rank_order(&send, 1, &recv, 1, count, op);
  }

  std::chrono::milliseconds timeout_;
  bool aborted_ = false;
  std::string why_;
};

static_assert(communicator<solo>);

}  // namespace comm
STRATA_NAMESPACE_END
