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
#include <strata/comm/communicator_face.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/pointer.hpp>

#include <chrono>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace comm {

class solo : public communicator_face<solo> {
public:
  /// The timeout is kept only so code can read it from any communicator: one rank never waits.
  explicit solo(std::chrono::milliseconds timeout = default_timeout) : timeout_(timeout) {}
  solo(const solo&) = delete;
  solo& operator=(const solo&) = delete;

  int rank() const noexcept { return 0; }
  int size() const noexcept { return 1; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

private:
  friend class communicator_face<solo>;
  static constexpr const char* backend_name = "solo";

  /// The whole collective, done here: the face returns a complete request.
  void transport_start(const detail::collective_call& call, const void* send, void* recv) {
    const char* what = detail::collective_name(call.kind);
    check(what);
    switch (call.kind) {
    case detail::collective::all_gather: copy(recv, send, call.count, what); break;
    case detail::collective::reduce_scatter:
    case detail::collective::all_reduce:
      reduce(static_cast<const float*>(send), static_cast<float*>(recv), call.count, call.op,
             what);
      break;
    case detail::collective::broadcast:  // the root's buffer is everybody's
    case detail::collective::barrier: break;
    }
  }

  /// Every later collective throws comm_error naming `why`; the first reason is kept.
  void transport_abort(const std::string& why) noexcept {
    if (!aborted_) {
      aborted_ = true;
      why_ = why;
    }
  }

  void check(const char* what) const {
    if (aborted_)
      throw comm_error(std::string("strata::comm solo: rank 0 failed: ") + why_ +
                       " (rank 0: cannot start " + what + ")");
  }

  static void copy(void* dst, const void* src, std::size_t bytes, const char* what) {
    const bool device = is_device_memory(dst) || is_device_memory(src);
    copy_bytes(dst, src, bytes, device, what);
  }

  static void reduce(const float* send, float* recv, std::size_t count, reduce_op op,
                     const char* what) {
    if (is_device_memory(send) || is_device_memory(recv)) {
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
