// strata/comm/threads.hpp — N ranks inside one process, one thread each.
//
// What lives here: thread_world (the N ranks and their shared state) and threads (one rank's
// communicator). It exists so that sharded code — ZeRO partitions, the executor, checkpoints —
// runs and is tested with several ranks on any machine, and bitwise against the MPI backend:
// the reductions add in rank order exactly like comm::mpi (see comm/communicator.hpp).
// What does not: a way to run distributed jobs (MPI launches real ranks: comm/mpi.hpp), or
// speed on GPU buffers: in the CUDA build they are accepted (copies use cudaMemcpy, reductions
// go through host copies of each tile) so single-process GPU runs work, not to be fast.
//
//   comm::thread_world world(4, 2000ms);
//   world.run([&](comm::threads& c) {          // on 4 threads, c.rank() = 0..3
//     c.all_gather(shard, full, shard_bytes).wait();
//   });
//
// Buffers are exchanged by pointer, never staged: a rank's send buffer is read, and its receive
// buffer written, by whichever participating threads run the copies (see
// detail/thread_world_state.hpp), so both must stay valid until wait() returns. Dropping an
// unfinished request finishes the collective on the spot when every rank has joined it, and
// otherwise fails the world, so no copy ever touches a buffer that has gone.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/comm/communicator_face.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/thread_world_state.hpp>
#include <strata/core/error.hpp>

#include <chrono>
#include <concepts>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace comm {

class thread_world;

/// One rank of a thread_world. The world owns it: take it with world.communicator(r) or
/// receive it in world.run(). A rank's collectives must be called from one thread at a time
/// (that thread's program order is the rank's collective order). abort() returns once no copy
/// touches any rank's buffers any more.
class threads : public communicator_face<threads> {
public:
  threads(const threads&) = delete;
  threads& operator=(const threads&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return state_->size(); }
  std::chrono::milliseconds timeout() const noexcept { return state_->timeout(); }

private:
  friend class thread_world;
  friend class communicator_face<threads>;
  static constexpr const char* backend_name = "threads";

  /// This rank's part in one slot. The last request dropping it abandons the slot, which
  /// finishes the collective or fails the world (see the top of this file).
  class pending_slot {
  public:
    pending_slot(std::shared_ptr<detail::thread_world_state> world,
                 std::shared_ptr<detail::thread_world_state::slot> slot, int rank)
        : world_(std::move(world)), slot_(std::move(slot)), rank_(rank) {}
    pending_slot(pending_slot&&) noexcept = default;  // leaves slot_ empty: only one abandons
    pending_slot& operator=(pending_slot&&) = delete;
    ~pending_slot() {
      if (slot_) world_->abandon(rank_, *slot_);
    }
    bool test() { return world_->test(*slot_); }
    void wait() { world_->wait(rank_, *slot_); }

  private:
    std::shared_ptr<detail::thread_world_state> world_;
    std::shared_ptr<detail::thread_world_state::slot> slot_;
    int rank_;
  };

  threads(std::shared_ptr<detail::thread_world_state> state, int rank)
      : state_(std::move(state)), rank_(rank) {}

  pending_slot transport_start(const detail::collective_call& call, const void* send,
                               void* recv) {
    return pending_slot(state_, state_->post(rank_, call, send, recv), rank_);
  }

  void transport_abort(const std::string& why) noexcept { state_->abort(rank_, why); }

  std::shared_ptr<detail::thread_world_state> state_;
  int rank_;
};

/// N ranks in this process. Either hand the ranks to threads of your own
/// (communicator(r)), or let run() start one thread per rank.
class thread_world {
public:
  /// `size` ranks; a rank that waits longer than `timeout` for its peers fails the world.
  explicit thread_world(int size, std::chrono::milliseconds timeout = default_timeout)
      : state_(std::make_shared<detail::thread_world_state>(check_size(size), timeout)) {
    ranks_.reserve(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r) ranks_.emplace_back(new threads(state_, r));
  }
  thread_world(const thread_world&) = delete;
  thread_world& operator=(const thread_world&) = delete;

  int size() const noexcept { return state_->size(); }
  std::chrono::milliseconds timeout() const noexcept { return state_->timeout(); }
  /// True once a rank aborted, timed out or disagreed with the others (see communicator.hpp).
  bool failed() const { return state_->failed(); }

  /// Rank r's communicator, owned by the world (which must outlive its use).
  threads& communicator(int rank) {
    if (rank < 0 || rank >= size())
      throw config_error("strata::comm thread_world: rank " + std::to_string(rank) +
                         " out of range for " + std::to_string(size()) + " ranks");
    return *ranks_[static_cast<std::size_t>(rank)];
  }

  /// Calls fn(communicator(r)) on one new thread per rank (concurrently, so fn must be safe to
  /// call from several threads at once) and joins them. A rank whose fn throws aborts with the
  /// exception's message, so its peers fail fast instead of timing out. Afterwards rethrows the
  /// first exception that was not a comm_error — the cause, not its echoes on the other ranks —
  /// or, when every failure was a comm_error, the first of those.
  template <class F>
    requires std::invocable<F&, threads&>
  void run(F&& fn) {
    std::mutex mutex;
    std::vector<std::exception_ptr> failures;  // in the order they happened
    const auto body = [&](int r) {
      threads& c = *ranks_[static_cast<std::size_t>(r)];
      try {
        fn(c);
      } catch (...) {
        const std::exception_ptr e = std::current_exception();
        {
          std::lock_guard lock(mutex);
          failures.push_back(e);
        }
        c.abort(message_of(e));
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(ranks_.size());
    try {
      for (int r = 0; r < size(); ++r) pool.emplace_back(body, r);
    } catch (...) {  // no thread for some rank: the started ones must not wait for it
      for (int r = static_cast<int>(pool.size()); r < size(); ++r)
        ranks_[static_cast<std::size_t>(r)]->abort("its thread could not be started");
      for (auto& t : pool) t.join();
      throw;
    }
    for (auto& t : pool) t.join();

    for (const auto& e : failures)
      if (!is_comm_error(e)) std::rethrow_exception(e);
    if (!failures.empty()) std::rethrow_exception(failures.front());
  }

private:
  static int check_size(int size) {
    if (size < 1)
      throw config_error("strata::comm thread_world: " + std::to_string(size) +
                         " ranks; a world needs at least one");
    return size;
  }

  static std::string message_of(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "an exception that is not a std::exception";
    }
  }

  static bool is_comm_error(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const comm_error&) {
      return true;
    } catch (...) {
      return false;
    }
  }

  std::shared_ptr<detail::thread_world_state> state_;
  std::vector<std::unique_ptr<threads>> ranks_;  // (size)
};

static_assert(communicator<threads>);

}  // namespace comm
STRATA_NAMESPACE_END
