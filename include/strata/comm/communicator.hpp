// strata/comm/communicator.hpp — what every communicator offers, and the handle it returns.
//
// What lives here: reduce_op, request (the handle every collective returns), the default
// timeout, and the concept `communicator<C>` that each implementation checks at its end.
// What does not: the collective calls themselves, written once for every backend in
// comm/communicator_face.hpp, and the implementations — comm/solo.hpp (one rank),
// comm/threads.hpp (N ranks in one process, for tests and single-process use), comm/mpi.hpp
// (MPI ranks, host or staged device buffers), comm/nccl.hpp (MPI-launched ranks, GPU buffers
// through NCCL).
//
// The contract every communicator keeps:
//  - Every rank calls the same collectives in the same order with the same sizes, op and root
//    (as with MPI). A mismatch that a backend can see is a comm_error naming both calls.
//  - Collectives are asynchronous: each returns a request at once. Until its wait() returns,
//    the send buffer stays valid and unchanged and the receive buffer untouched by the caller
//    (comm::mpi copies the send buffer during the call, but code written for the concept may
//    not rely on that). Progress happens in wait() and ready(), as with MPI_Test.
//  - Sizes (bytes or floats per rank) never have to divide anything: every rank passes the same
//    per-rank count and padding is the caller's business (placements pad shards).
//  - reduce_scatter and all_reduce are deterministic on solo, threads and mpi: each element is
//    summed in rank order, in float, exactly like the sequential loop
//        acc = block_0[i]; acc += block_1[i]; ...; acc += block_{n-1}[i];
//    and reduce_op::mean is that sum divided by float(size) (a division, not a multiplication
//    by 1/size, which rounds differently). So a result is bitwise the same whichever backend,
//    world layout or message size produced it, and equal to a plain reference loop (compiled
//    without -ffast-math). comm::nccl is the exception: see comm/nccl.hpp.
//  - Failure never hangs: a peer that does not arrive within the communicator's timeout makes
//    wait() throw comm_error("... rank R waited T ms for <collective> ..."), and abort(why) on
//    one rank makes every other rank's pending or next collective throw comm_error naming the
//    failed rank and `why`. After a failure the communicator stays failed: every later
//    collective throws at once (the ranks no longer agree on what has happened, so no later
//    collective could be trusted). Destroying it, and MPI_Finalize, still work.
#pragma once

#include <strata/core/error.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

STRATA_NAMESPACE_BEGIN
namespace comm {

/// How reduce_scatter / all_reduce combine the ranks' blocks. Both sum in rank order (see the
/// top of this file); mean then divides by float(size).
enum class reduce_op : std::uint8_t { sum, mean };

constexpr const char* reduce_op_name(reduce_op op) noexcept {
  return op == reduce_op::sum ? "sum" : "mean";
}

/// How long a rank waits for its peers before a collective fails, unless a communicator is given
/// another timeout. Long enough for a slow first step (NCCL setup, page faults in fresh
/// buffers), short enough that a dead peer is noticed within a minute instead of never.
inline constexpr std::chrono::milliseconds default_timeout{60'000};

namespace detail {
/// What a backend puts behind a request.
class request_state {
public:
  virtual ~request_state() = default;
  /// Makes progress without blocking on peers; true once wait() would return or throw at once.
  virtual bool test() = 0;
  /// Blocks until the collective completed here (returns) or failed (throws comm_error).
  virtual void wait() = 0;
};
}  // namespace detail

/// The handle of one collective on one rank. Shared: copies refer to the same operation.
/// A default-constructed request is complete. wait() may be called more than once; after a
/// failure every call throws the same comm_error again. [[nodiscard]]: a request dropped at
/// once is almost always a missing wait(), and what dropping does differs by backend (threads
/// fails the world when the peers have not all arrived; mpi finishes it in the background).
class [[nodiscard]] request {
public:
  request() = default;
  explicit request(std::shared_ptr<detail::request_state> state) noexcept
      : state_(std::move(state)) {}

  /// Returns when the collective has completed on this rank: the receive buffer holds the
  /// result and the send buffer may be reused. Throws comm_error when the collective failed
  /// (a peer aborted, timed out or called a different collective).
  void wait() const {
    if (state_) state_->wait();
  }

  /// True when wait() would not block (the collective completed or failed). Also advances it,
  /// so a loop of ready() calls alone finishes the collective.
  bool ready() const { return !state_ || state_->test(); }

private:
  std::shared_ptr<detail::request_state> state_;
};

/// A set of ranks that run collectives together; one object per rank. Sizes are in bytes for
/// all_gather and broadcast and in floats for the reductions:
///   all_gather(send, recv, n)         send (n)          -> recv (size, n): rank r's at r*n
///   reduce_scatter(send, recv, n, op) send (size, n)    -> recv (n): op over every rank's block
///                                                           `rank()`
///   all_reduce(send, recv, n, op)     send (n)          -> recv (n); send == recv is allowed
///   broadcast(buf, n, root)           root's buf (n)    -> everybody's buf
///   barrier()                         completes once every rank has called it
/// all_gather may also run in place (send == recv + rank() * n) and reduce_scatter with
/// recv == send + rank() * n; other overlaps between send and recv are not allowed.
/// abort(why) marks this rank failed (see the top of this file) and never throws.
template <class C>
concept communicator =
    requires(C& c, const C& cc, const void* send, void* recv, const float* fsend, float* frecv,
             std::size_t n, reduce_op op, int root, const std::string& why) {
      { cc.rank() } -> std::same_as<int>;
      { cc.size() } -> std::same_as<int>;
      { cc.timeout() } -> std::same_as<std::chrono::milliseconds>;
      { c.all_gather(send, recv, n) } -> std::same_as<request>;
      { c.reduce_scatter(fsend, frecv, n, op) } -> std::same_as<request>;
      { c.all_reduce(fsend, frecv, n, op) } -> std::same_as<request>;
      { c.broadcast(recv, n, root) } -> std::same_as<request>;
      { c.barrier() } -> std::same_as<request>;
      { c.abort(why) } -> std::same_as<void>;
    };

}  // namespace comm
STRATA_NAMESPACE_END
