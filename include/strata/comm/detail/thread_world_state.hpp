// strata/comm/detail/thread_world_state.hpp — the shared state behind comm::thread_world.
//
// What lives here: the rendezvous of the in-process communicator. Each collective is a slot
// keyed by its sequence number (every rank's k-th call meets in slot k); a rank posts its
// buffer pointers there and returns at once. Once every rank has posted, the work is cut into
// tasks (one block copy, or one tile range of a reduction) that any rank waiting on — or
// testing — the slot claims and runs, so the copies run in parallel on the participating
// threads, no rank depends on the order in which the others wait, and nobody spins: a rank with
// nothing to claim sleeps on the condition variable.
// What does not: the public API (comm/threads.hpp).
//
// Failure (an abort, a timeout, mismatched calls, a request dropped before its peers arrived)
// marks the whole world failed; from then on no task starts, every wait throws, and whoever
// throws or aborts first waits for the tasks already running to finish ("drain"), so no copy
// can touch the buffers of a rank whose stack is about to unwind.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/pointer.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

class thread_world_state {
public:
  using clock = std::chrono::steady_clock;

  /// Bytes one copy task moves, floats one reduction task covers: large enough that taking the
  /// lock per task costs nothing, small enough that several threads share one big block.
  static constexpr std::size_t copy_chunk_bytes = std::size_t{1} << 20;
  static constexpr std::size_t reduce_chunk_floats = std::size_t{1} << 18;

  /// One collective as every rank sees it.
  struct slot {
    collective_call call;
    std::uint64_t seq = 0;
    int first_rank = 0;             // who posted first: named when a later call disagrees
    std::vector<const void*> send;  // (size) per rank
    std::vector<void*> recv;        // (size) per rank
    std::vector<bool> arrived;      // (size) per rank
    int posted = 0;
    bool device = false;     // some rank passed GPU memory: copies go through cudaMemcpy
    std::size_t chunks = 0;  // chunks per block (copies) or per rank's result (reductions)
    std::size_t tasks = 0, claimed = 0, finished = 0;
    bool done = false;  // every rank posted and every task finished
  };

  thread_world_state(int size, std::chrono::milliseconds timeout)
      : size_(size), timeout_(timeout), next_seq_(static_cast<std::size_t>(size), 0) {}

  int size() const noexcept { return size_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  /// Rank `rank` joins its next collective. Throws comm_error if the world has failed or the
  /// call disagrees with what another rank called at this point (which fails the world).
  std::shared_ptr<slot> post(int rank, const collective_call& call, const void* send,
                             void* recv) {
    const bool device = is_device_memory(send) || is_device_memory(recv);  // outside the lock
    std::unique_lock lock(mutex_);
    const std::uint64_t seq = next_seq_[static_cast<std::size_t>(rank)];
    if (failed_) throw_failure(lock, rank, "cannot start " + describe(call, seq));
    ++next_seq_[static_cast<std::size_t>(rank)];
    std::shared_ptr<slot>& sp = open_[seq];
    if (!sp) {
      sp = std::make_shared<slot>();
      sp->call = call;
      sp->seq = seq;
      sp->first_rank = rank;
      sp->send.assign(static_cast<std::size_t>(size_), nullptr);
      sp->recv.assign(static_cast<std::size_t>(size_), nullptr);
      sp->arrived.assign(static_cast<std::size_t>(size_), false);
      plan_tasks(*sp);
    } else if (!(sp->call == call)) {
      fail(lock, rank,
           "collective mismatch: rank " + std::to_string(rank) + " called " + describe(call, seq) +
               " where rank " + std::to_string(sp->first_rank) + " called " +
               describe(sp->call, seq));
      throw_failure(lock, rank, "");
    }
    std::shared_ptr<slot> s = sp;
    s->send[static_cast<std::size_t>(rank)] = send;
    s->recv[static_cast<std::size_t>(rank)] = recv;
    s->arrived[static_cast<std::size_t>(rank)] = true;
    s->device = s->device || device;
    if (++s->posted == size_) {
      finish_if_done(*s);
      cv_.notify_all();  // waiters on arrivals may now claim tasks
    }
    return s;
  }

  /// Runs every task of `s` that can be claimed now; true when wait() would not block.
  bool test(slot& s) {
    std::unique_lock lock(mutex_);
    while (!s.done && !failed_ && s.posted == size_ && s.claimed < s.tasks) run_one(lock, s);
    return s.done || failed_;
  }

  /// Returns when `s` is done; helps with its tasks meanwhile. Throws comm_error when the world
  /// fails, or fails it when some rank has not posted `s` within the timeout.
  void wait(int rank, slot& s) {
    std::unique_lock lock(mutex_);
    const auto deadline = clock::now() + timeout_;
    for (;;) {
      if (s.done) return;
      if (failed_) throw_failure(lock, rank, describe(s.call, s.seq) + " cannot complete");
      if (s.posted == size_) {
        if (s.claimed < s.tasks) {
          run_one(lock, s);
        } else {
          // The last tasks run on other threads; each is one bounded copy, so no deadline.
          cv_.wait(lock);
        }
        continue;
      }
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && !failed_ && !s.done &&
          s.posted < size_) {
        fail(lock, rank,
             "rank " + std::to_string(rank) + " waited " + std::to_string(timeout_.count()) +
                 " ms for " + describe(s.call, s.seq) + "; " + missing_ranks(s) +
                 " never called it");
        throw_failure(lock, rank, "");
      }
    }
  }

  /// The last handle of rank `rank`'s request on `s` is gone. Its buffers are about to go
  /// too, so the collective must not touch them later: finish it now when every rank is there
  /// (bounded copies), otherwise fail the world, since the others can never complete it.
  void abandon(int rank, slot& s) noexcept {
    std::unique_lock lock(mutex_);
    if (!s.done && !failed_ && s.posted == size_) {
      while (!s.done && !failed_) {
        if (s.claimed < s.tasks)
          run_one(lock, s);
        else
          cv_.wait(lock);
      }
    }
    if (!s.done && !failed_)
      fail(lock, rank,
           "rank " + std::to_string(rank) + " dropped its request for " + describe(s.call, s.seq) +
               " before " + missing_ranks(s) + " had called it");
    if (failed_) drain(lock);
  }

  /// Rank `rank` fails with reason `why` (the first failure of the world is the one reported).
  /// Returns once no copy that might touch any rank's buffers is still running.
  void abort(int rank, const std::string& why) noexcept {
    std::unique_lock lock(mutex_);
    if (!failed_) fail(lock, rank, "rank " + std::to_string(rank) + " failed: " + why);
    drain(lock);
  }

  bool failed() const {
    std::lock_guard lock(mutex_);
    return failed_;
  }

private:
  void plan_tasks(slot& s) const {
    const auto n = static_cast<std::size_t>(size_);
    const auto chunks_of = [](std::size_t amount, std::size_t chunk) {
      return amount == 0 ? std::size_t{0} : (amount + chunk - 1) / chunk;
    };
    switch (s.call.kind) {
    case collective::all_gather:  // (destination rank, source rank, chunk)
      s.chunks = chunks_of(s.call.count, copy_chunk_bytes);
      s.tasks = n * n * s.chunks;
      break;
    case collective::broadcast:  // (destination rank, chunk)
      s.chunks = chunks_of(s.call.count, copy_chunk_bytes);
      s.tasks = n * s.chunks;
      break;
    case collective::reduce_scatter:  // (destination rank, chunk)
      s.chunks = chunks_of(s.call.count, reduce_chunk_floats);
      s.tasks = n * s.chunks;
      break;
    case collective::all_reduce:  // (chunk): the result goes to every rank at once
      s.chunks = chunks_of(s.call.count, reduce_chunk_floats);
      s.tasks = s.chunks;
      break;
    case collective::barrier: s.tasks = 0; break;
    }
  }

  /// Task t of s. Runs without the lock: posting happened under it, so every pointer and the
  /// data behind it are visible here, and the result becomes visible to the owner when it
  /// takes the lock to see the slot done.
  void execute(const slot& s, std::size_t t) const {
    const auto n = static_cast<std::size_t>(size_);
    const std::size_t count = s.call.count;
    switch (s.call.kind) {
    case collective::all_gather: {
      const std::size_t d = t / (n * s.chunks), src = t / s.chunks % n, c = t % s.chunks;
      const std::size_t off = c * copy_chunk_bytes, len = std::min(copy_chunk_bytes, count - off);
      const auto* from = static_cast<const std::byte*>(s.send[src]) + off;
      auto* to = static_cast<std::byte*>(s.recv[d]) + src * count + off;
      if (from != to) copy(s, to, from, len);  // equal: an in-place all_gather
      break;
    }
    case collective::broadcast: {
      const std::size_t d = t / s.chunks, c = t % s.chunks;
      const auto root = static_cast<std::size_t>(s.call.root);
      if (d == root) break;
      const std::size_t off = c * copy_chunk_bytes, len = std::min(copy_chunk_bytes, count - off);
      copy(s, static_cast<std::byte*>(s.recv[d]) + off,
           static_cast<const std::byte*>(s.recv[root]) + off, len);
      break;
    }
    case collective::reduce_scatter: {
      const std::size_t d = t / s.chunks, c = t % s.chunks;
      const std::size_t off = c * reduce_chunk_floats;
      const std::size_t len = std::min(reduce_chunk_floats, count - off);
      std::vector<const float*> blocks(n);
      for (std::size_t r = 0; r < n; ++r)
        blocks[r] = static_cast<const float*>(s.send[r]) + d * count + off;
      float* out = static_cast<float*>(s.recv[d]) + off;
      reduce(s, blocks, &out, 1, len);
      break;
    }
    case collective::all_reduce: {
      const std::size_t off = t * reduce_chunk_floats;
      const std::size_t len = std::min(reduce_chunk_floats, count - off);
      std::vector<const float*> blocks(n);
      std::vector<float*> outs(n);
      for (std::size_t r = 0; r < n; ++r) {
        blocks[r] = static_cast<const float*>(s.send[r]) + off;
        outs[r] = static_cast<float*>(s.recv[r]) + off;
      }
      reduce(s, blocks, outs.data(), size_, len);
      break;
    }
    case collective::barrier: break;
    }
  }

  static void copy(const slot& s, void* to, const void* from, std::size_t len) {
    if (s.device)
      copy_bytes(to, from, len, true, "strata::comm threads: copy");
    else
      std::memcpy(to, from, len);
  }

  /// reduce_in_rank_order, through host copies of the tile when GPU memory takes part (the
  /// CUDA build's single-process runs: several thread-ranks sharing GPUs).
  void reduce(const slot& s, std::vector<const float*>& blocks, float* const* outs, int n_outs,
              std::size_t len) const {
    if (!s.device) {
      reduce_in_rank_order(blocks.data(), size_, outs, n_outs, len, s.call.op);
      return;
    }
    const std::size_t bytes = len * sizeof(float);
    std::vector<float> staged(static_cast<std::size_t>(size_ + 1) * len);
    for (std::size_t r = 0; r < blocks.size(); ++r) {
      copy_bytes(staged.data() + r * len, blocks[r], bytes, true, "strata::comm threads: stage");
      blocks[r] = staged.data() + r * len;
    }
    float* result = staged.data() + blocks.size() * len;
    reduce_in_rank_order(blocks.data(), size_, &result, 1, len, s.call.op);
    for (int o = 0; o < n_outs; ++o)
      copy_bytes(outs[o], result, bytes, true, "strata::comm threads: unstage");
  }

  /// Claims the next task of s, runs it unlocked, and accounts for it.
  void run_one(std::unique_lock<std::mutex>& lock, slot& s) {
    const std::size_t t = s.claimed++;
    ++in_flight_;
    lock.unlock();
    execute(s, t);
    lock.lock();
    --in_flight_;
    ++s.finished;
    finish_if_done(s);
    if (failed_ && in_flight_ == 0) cv_.notify_all();  // someone may be draining
  }

  void finish_if_done(slot& s) {
    if (s.done || s.posted != size_ || s.finished != s.tasks) return;
    s.done = true;
    open_.erase(s.seq);
    cv_.notify_all();
  }

  void fail(std::unique_lock<std::mutex>&, int rank, std::string reason) {
    if (failed_) return;
    failed_ = true;
    failed_by_ = rank;
    reason_ = std::move(reason);
    cv_.notify_all();
  }

  void drain(std::unique_lock<std::mutex>& lock) {
    cv_.wait(lock, [&] { return in_flight_ == 0; });
  }

  /// Waits for running copies, then throws the world's failure as seen from `rank`.
  [[noreturn]] void throw_failure(std::unique_lock<std::mutex>& lock, int rank,
                                  const std::string& consequence) {
    drain(lock);
    std::string message = "strata::comm threads: " + reason_;
    if (!consequence.empty() && rank != failed_by_)
      message += " (rank " + std::to_string(rank) + ": " + consequence + ")";
    throw comm_error(message);
  }

  std::string missing_ranks(const slot& s) const {
    std::string list;
    int missing = 0;
    for (int r = 0; r < size_; ++r)
      if (!s.arrived[static_cast<std::size_t>(r)]) {
        list += (missing++ ? ", " : "") + std::to_string(r);
      }
    return (missing == 1 ? "rank " : "ranks ") + list;
  }

  const int size_;
  const std::chrono::milliseconds timeout_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::uint64_t> next_seq_;             // (size) the next collective of each rank
  std::map<std::uint64_t, std::shared_ptr<slot>> open_;  // slots not yet done, by sequence
  std::size_t in_flight_ = 0;                       // tasks running outside the lock
  bool failed_ = false;
  int failed_by_ = -1;
  std::string reason_;
};

}  // namespace comm::detail
STRATA_NAMESPACE_END
