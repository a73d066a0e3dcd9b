// strata/comm/communicator_face.hpp — the public collective calls, written once for every
// communicator.
//
// What lives here: communicator_face<Backend>, the base (CRTP) that gives a backend the five
// collectives of comm/communicator.hpp and abort(). It builds the collective_call that every
// rank must agree on, checks what every backend checks (the broadcast root), and puts what the
// backend's transport started behind a request, so the calls, their argument checks and their
// error text cannot drift apart between backends.
// What does not: any transport (comm/solo.hpp, threads.hpp, mpi.hpp, nccl.hpp); the contract
// the calls keep (comm/communicator.hpp).
//
// A backend derives from communicator_face<itself>, befriends it, and writes:
//   int rank() const, int size() const, std::chrono::milliseconds timeout() const   (public)
//   static constexpr const char* backend_name;   // "mpi": error text "strata::comm mpi: ..."
//   P transport_start(const detail::collective_call& call, const void* send, void* recv);
//       starts the collective `call` (send == recv for broadcast, both null for barrier) and
//       returns a detail::pending_collective P that the face wraps in the request — or returns
//       void when the collective is complete before the call returns (the request is then a
//       complete one). Throws as the contract says (comm_error once failed, config_error for
//       what the transport cannot carry).
//   void transport_abort(const std::string& why) noexcept;   // this rank fails
// and ends its header with static_assert(communicator<Backend>).
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/pending_collective.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>

STRATA_NAMESPACE_BEGIN
namespace comm {

template <class Backend>
class communicator_face {
public:
  /// send (bytes_per_rank) -> recv (size, bytes_per_rank): rank r's bytes at r * bytes_per_rank.
  /// In place when send == recv + rank() * bytes_per_rank.
  request all_gather(const void* send, void* recv, std::size_t bytes_per_rank) {
    return start(detail::collective_call::all_gather(bytes_per_rank), send, recv);
  }

  /// send (size, count_per_rank) -> recv (count_per_rank): `op` over every rank's block rank(),
  /// in rank order. In place when recv == send + rank() * count_per_rank.
  request reduce_scatter(const float* send, float* recv, std::size_t count_per_rank,
                         reduce_op op) {
    return start(detail::collective_call::reduce_scatter(count_per_rank, op), send, recv);
  }

  /// send (count) -> recv (count): `op` over every rank's send, in rank order; send == recv is
  /// allowed.
  request all_reduce(const float* send, float* recv, std::size_t count, reduce_op op) {
    return start(detail::collective_call::all_reduce(count, op), send, recv);
  }

  /// root's buf (bytes) -> everybody's buf. config_error unless 0 <= root < size(), before
  /// anything starts (every rank sees the same bad root, so every rank throws).
  request broadcast(void* buf, std::size_t bytes, int root) {
    detail::check_root(root, self().size(), Backend::backend_name);
    return start(detail::collective_call::broadcast(bytes, root), buf, buf);
  }

  /// Completes once every rank has called it.
  request barrier() { return start(detail::collective_call::barrier(), nullptr, nullptr); }

  /// This rank fails: every other rank's pending or next collective throws comm_error naming
  /// this rank and `why`, and so does every later collective here. Never throws.
  void abort(const std::string& why) noexcept { self().transport_abort(why); }

protected:
  // Only a backend makes one, and nobody destroys a backend through its face.
  communicator_face() = default;
  ~communicator_face() = default;
  communicator_face(const communicator_face&) = default;
  communicator_face(communicator_face&&) = default;
  communicator_face& operator=(const communicator_face&) = default;
  communicator_face& operator=(communicator_face&&) = default;

private:
  Backend& self() noexcept { return static_cast<Backend&>(*this); }

  request start(const detail::collective_call& call, const void* send, void* recv) {
    using pending = decltype(self().transport_start(call, send, recv));
    if constexpr (std::is_void_v<pending>) {
      self().transport_start(call, send, recv);
      return {};
    } else {
      static_assert(detail::pending_collective<pending>,
                    "transport_start must return void (the collective is complete) or an object "
                    "with bool test() and void wait() (see comm/detail/pending_collective.hpp)");
      return request(std::make_shared<detail::pending_request<pending>>(
          self().transport_start(call, send, recv)));
    }
  }
};

}  // namespace comm
STRATA_NAMESPACE_END
