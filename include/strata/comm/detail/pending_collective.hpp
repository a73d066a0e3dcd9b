// strata/comm/detail/pending_collective.hpp — how a transport's started collective becomes a
// request.
//
// What lives here: the concept pending_collective (what a backend's transport_start returns
// for a collective that is still running), pending_request (the request_state that holds one),
// and pending_op, the pending collective of every backend whose state object tests and waits
// its own ops (mpi, nccl). What does not: the public calls (comm/communicator_face.hpp).
#pragma once

#include <strata/comm/communicator.hpp>

#include <concepts>
#include <memory>
#include <utility>

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

/// A collective in flight on one rank: test() makes progress without blocking on peers and
/// says whether wait() would return (or throw) at once; wait() blocks until it completed here
/// or failed (comm_error). Moved once, into its request; its destructor runs when the last
/// copy of that request is gone, which is where a backend reacts to a dropped request.
template <class P>
concept pending_collective = std::move_constructible<P> && requires(P& p) {
  { p.test() } -> std::same_as<bool>;
  { p.wait() } -> std::same_as<void>;
};

/// What a request holds for a pending collective P.
template <pending_collective P>
class pending_request final : public request_state {
public:
  explicit pending_request(P&& pending) : pending_(std::move(pending)) {}
  bool test() override { return pending_.test(); }
  void wait() override { pending_.wait(); }

private:
  P pending_;
};

/// One op of a backend state that tests and waits its ops itself: state.test(op), state.wait(op).
/// Holds the state too, so a request outlives the communicator object that started it.
template <class State>
struct pending_op {
  std::shared_ptr<State> state;
  std::shared_ptr<typename State::op> op;

  bool test() { return state->test(*op); }
  void wait() { state->wait(*op); }
};

}  // namespace comm::detail
STRATA_NAMESPACE_END
