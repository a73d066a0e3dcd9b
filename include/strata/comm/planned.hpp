// strata/comm/planned.hpp — a rank of a world that is only planned, not running.
//
// What lives here: comm::planned, a communicator that answers rank() and size() for a world
// of any size and runs no collective (each one throws comm_error). The planner (plan/) builds
// the memory plan of rank r of W ranks with it — zero_executor::plan_for and the optimizer's
// and checkpoint's plan_for read only the layouts, which depend on the world's size — on one
// machine, without starting W ranks.
// What does not: a world that runs (comm/solo.hpp, comm/threads.hpp, comm/mpi.hpp).
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/core/error.hpp>

#include <chrono>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace comm {

class planned {
public:
  planned(int rank, int size) : rank_(rank), size_(size) {
    if (size < 1 || rank < 0 || rank >= size)
      throw config_error("comm::planned: rank " + std::to_string(rank) + " of a world of " +
                         std::to_string(size) + " ranks does not exist");
  }
  planned(const planned&) = delete;
  planned& operator=(const planned&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  std::chrono::milliseconds timeout() const noexcept { return default_timeout; }

  request all_gather(const void*, void*, std::size_t) { return refuse("all_gather"); }
  request reduce_scatter(const float*, float*, std::size_t, reduce_op) {
    return refuse("reduce_scatter");
  }
  request all_reduce(const float*, float*, std::size_t, reduce_op) {
    return refuse("all_reduce");
  }
  request broadcast(void*, std::size_t, int) { return refuse("broadcast"); }
  request barrier() { return refuse("barrier"); }
  void abort(const std::string&) {}

private:
  [[noreturn]] request refuse(const char* what) const {
    throw comm_error(std::string("comm::planned: ") + what + " on rank " +
                     std::to_string(rank_) + " of a planned world of " + std::to_string(size_) +
                     ": a planned rank runs no collective (plan with it, run with a real one)");
  }
  int rank_, size_;
};

static_assert(communicator<planned>);

}  // namespace comm
STRATA_NAMESPACE_END
