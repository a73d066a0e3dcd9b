// strata/comm/detail/mpi_state.hpp — the machinery behind comm::mpi.
//
// What lives here (only with STRATA_HAVE_MPI): one communicator's MPI communicators (data,
// phase 2, control; all duplicates of the caller's), its operations in flight, their progress,
// and failure. What does not: the public API (comm/mpi.hpp).
//
// How a collective runs:
//  - At the call, the send data is copied into a staging block (pinned when a GPU buffer is
//    involved), the nonblocking MPI collective is started on staging blocks only, and the op
//    joins the list of active ops. MPI never sees a caller's buffer: a collective that fails, or
//    whose request is dropped, can never write into memory its caller has freed or reused.
//  - progress() walks the active ops in call order with MPI_Test. all_reduce has two phases
//    (see below); its second phase starts on a communicator of its own, and in call order
//    across all_reduces, so every rank starts the phase-2 collectives in the same order however
//    its waits interleave — the rule MPI sets for collectives on one communicator.
//  - wait() delivers the result from staging to the caller's receive buffer, reducing first
//    where the op is a reduce_scatter.
// Deterministic reductions without MPI's reduction (whose order MPI does not promise):
//  - reduce_scatter: MPI_Ialltoall brings every rank's block r to rank r, which sums them in
//    rank order (detail::reduce_in_rank_order): the same traffic as a ring reduce-scatter.
//  - all_reduce: the vector is split into size parts (uneven allowed); an MPI_Ialltoallv brings
//    part r of every rank to rank r, which sums them in rank order; an MPI_Iallgatherv then
//    gives every rank every summed part. Traffic 2(n-1)/n of the vector, as a ring all-reduce.
#pragma once

#include <strata/core/config.hpp>

// strata's own headers are included outside the conditional: each guards itself, and the
// single-header generator then inlines each of them once.
#include <strata/comm/communicator.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/mpi_support.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/pointer.hpp>

#if STRATA_HAVE_MPI

#  include <chrono>
#  include <cstdint>
#  include <list>
#  include <memory>
#  include <mutex>
#  include <string>
#  include <vector>

#  include <mpi.h>

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

class mpi_state {
public:
  using clock = std::chrono::steady_clock;

  enum class stage : std::uint8_t {
    phase1,    // the first (often only) MPI collective is in flight
    between,   // all_reduce: phase 1 done and reduced, phase 2 not started yet
    phase2,    // all_reduce: the all-gather of the reduced parts is in flight
    mpi_done,  // MPI is finished with the staging blocks
  };

  struct op {
    collective_call call;
    std::string what;  // describe(call, seq), for messages
    MPI_Request request = MPI_REQUEST_NULL;
    stage at = stage::phase1;
    bool two_phase = false;
    staged a, b;  // what each holds depends on the collective; see the post_* steps
    std::vector<int> counts, displs, recv_counts, recv_displs;  // (size) v-collective arguments
    void* user_recv = nullptr;
    bool recv_device = false;
    bool delivered = false;
  };

  mpi_state(MPI_Comm base, std::chrono::milliseconds timeout)
      : timeout_(timeout), rank_(rank_in(base)), size_(size_of(base)), data_(duplicate(base)),
        phase2_(duplicate(base)), ctrl_(duplicate(base)), control_(ctrl_) {}

  ~mpi_state() { close(); }
  mpi_state(const mpi_state&) = delete;
  mpi_state& operator=(const mpi_state&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  MPI_Comm data_comm() const noexcept { return data_; }

  /// Starts one collective. Throws comm_error if the communicator has failed (looking for abort
  /// notices first) or MPI refuses; config_error for counts MPI cannot express.
  std::shared_ptr<op> start(const collective_call& call, const void* send, void* recv) {
    std::lock_guard lock(mutex_);
    auto o = std::make_shared<op>();
    o->call = call;
    o->what = describe(call, seq_);
    check_usable_locked("cannot start " + o->what);

    const send_side from{send, is_device_memory(send)};
    o->recv_device = is_device_memory(recv);
    o->user_recv = recv;
    const int c = mpi_count_of(call, o->what);
    try {
      post_locked(*o, from, c);
    } catch (const std::exception& e) {
      // The peers will wait for this collective: tell them why it never comes.
      fail_locked("rank " + std::to_string(rank_) + " could not start " + o->what + ": " +
                      e.what(),
                  "could not start " + o->what + ": " + e.what());
      throw;
    }
    ++seq_;
    active_.push_back(o);
    return o;
  }

  /// Advances the active ops; true when wait(o) would not block.
  bool test(op& o) {
    std::lock_guard lock(mutex_);
    if (o.delivered || o.at == stage::mpi_done) return true;
    if (failed_ || closed_) return true;
    try {
      progress_locked();
    } catch (const comm_error&) {
      return true;  // the communicator failed; wait() reports it
    }
    return o.at == stage::mpi_done || failed_;
  }

  /// Returns once o's result is in the caller's buffer; throws comm_error on failure, on an
  /// abort notice from a peer, or when the timeout passes (then tells the peers too).
  void wait(op& o) {
    const auto deadline = clock::now() + timeout_;
    backoff pause;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (o.delivered) return;
        if (o.at != stage::mpi_done && !failed_ && !closed_) progress_locked();
        if (o.at == stage::mpi_done) {
          deliver(o);
          return;
        }
        if (failed_) throw failure_locked(o.what + " cannot complete");
        if (closed_)
          throw comm_error("strata::comm mpi: the communicator was destroyed before " + o.what +
                           " completed on rank " + std::to_string(rank_));
        if (clock::now() >= deadline) {
          const std::string t = std::to_string(timeout_.count()) + " ms";
          fail_locked("rank " + std::to_string(rank_) + " waited " + t + " for " + o.what +
                          "; a peer never called it or is stuck before it",
                      "timed out after waiting " + t + " for " + o.what);
          throw failure_locked("");
        }
      }
      pause.pause();
    }
  }

  /// This rank fails; the others hear of it through the control channel.
  void abort(const std::string& why) noexcept {
    std::lock_guard lock(mutex_);
    fail_locked("rank " + std::to_string(rank_) + " failed: " + why, why);
  }

  /// Called by ~mpi. Lets the ops in flight finish (bounded by the timeout, and only while
  /// nothing has failed), receives pending notices, and frees the MPI communicators — unless
  /// some op is still in flight, in which case it, its staging and the communicators are
  /// deliberately leaked so MPI can never write into freed memory.
  void close() noexcept {
    std::unique_lock lock(mutex_);
    if (closed_) return;
    closed_ = true;
    if (mpi_finalized()) {
      leak_active_locked();
      return;
    }
    const auto deadline = clock::now() + timeout_;
    backoff pause;
    while (!active_.empty() && !failed_ && clock::now() < deadline) {
      try {
        progress_locked();
      } catch (...) {
        break;
      }
      if (active_.empty()) break;
      lock.unlock();
      pause.pause();
      lock.lock();
    }
    while (auto notice = control_.poll()) note_locked(*notice);
    control_.close();
    if (!active_.empty()) {
      leak_active_locked();
      return;
    }
    MPI_Comm_free(&data_);
    MPI_Comm_free(&phase2_);
    MPI_Comm_free(&ctrl_);
  }

private:
  static int rank_in(MPI_Comm c) {
    require_mpi_running("strata::comm mpi");
    int r = 0;
    check_mpi(MPI_Comm_rank(c, &r), "MPI_Comm_rank");
    return r;
  }
  static int size_of(MPI_Comm c) {
    int s = 0;
    check_mpi(MPI_Comm_size(c, &s), "MPI_Comm_size");
    return s;
  }
  static MPI_Comm duplicate(MPI_Comm base) { return duplicate_comm(base, "strata::comm mpi"); }

  void check_usable_locked(const std::string& consequence) {
    if (!failed_ && !closed_)
      if (auto notice = control_.poll()) note_locked(*notice);
    if (failed_) throw failure_locked(consequence);
    if (closed_) throw comm_error("strata::comm mpi: communicator already destroyed");
  }

  /// The caller's send buffer, as the post_* steps copy it into staging.
  struct send_side {
    const void* data;
    bool device;  // GPU memory: copied with cudaMemcpy
  };

  /// MPI's int count of `call`, checked before anything starts: a count MPI cannot express is
  /// the same on every rank, so every rank throws here and nobody is left waiting.
  static int mpi_count_of(const collective_call& call, const std::string& what) {
    switch (call.kind) {
    case collective::all_gather:
    case collective::broadcast: return mpi_count(call.count, "bytes", what);
    case collective::reduce_scatter:
    case collective::all_reduce: return mpi_count(call.count, "floats", what);
    case collective::barrier: break;
    }
    return 0;
  }

  /// Staging is pinned when a GPU buffer takes part: cudaMemcpy to and from it is then direct.
  static bool pinned(const op& o, const send_side& from) noexcept {
    return from.device || o.recv_device;
  }

  /// Copies the send data into o's staging and starts the nonblocking MPI collective on it; the
  /// one place that decides what o.a and o.b hold for each collective.
  void post_locked(op& o, const send_side& from, int c) {
    switch (o.call.kind) {
    case collective::all_gather: post_all_gather(o, from, c); break;
    case collective::broadcast: post_broadcast(o, from, c); break;
    case collective::barrier:
      check_mpi(MPI_Ibarrier(data_, &o.request), "MPI_Ibarrier for " + o.what);
      break;
    case collective::reduce_scatter: post_reduce_scatter(o, from, c); break;
    case collective::all_reduce: post_all_reduce(o, from); break;
    }
  }

  /// a: (size, count) bytes, this rank's block copied in place, so MPI needs no send buffer.
  void post_all_gather(op& o, const send_side& from, int c) {
    const std::size_t count = o.call.count;
    o.a = staged(pool_, static_cast<std::size_t>(size_) * count, pinned(o, from));
    copy_bytes(o.a.data() + static_cast<std::size_t>(rank_) * count, from.data, count,
               from.device, "all_gather: copy in");
    check_mpi(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, o.a.data(), c, MPI_BYTE, data_,
                             &o.request),
              "MPI_Iallgather for " + o.what);
  }

  /// a: (count) bytes; only the root's holds data before MPI runs.
  void post_broadcast(op& o, const send_side& from, int c) {
    o.a = staged(pool_, o.call.count, pinned(o, from));
    if (rank_ == o.call.root)
      copy_bytes(o.a.data(), from.data, o.call.count, from.device, "broadcast: copy in");
    check_mpi(MPI_Ibcast(o.a.data(), c, MPI_BYTE, o.call.root, data_, &o.request),
              "MPI_Ibcast for " + o.what);
  }

  /// a: send (size, count); b: every rank's block `rank`, which deliver() sums in rank order.
  void post_reduce_scatter(op& o, const send_side& from, int c) {
    const std::size_t bytes = static_cast<std::size_t>(size_) * o.call.count * sizeof(float);
    o.a = staged(pool_, bytes, pinned(o, from));
    o.b = staged(pool_, bytes, false);
    copy_bytes(o.a.data(), from.data, bytes, from.device, "reduce_scatter: copy in");
    check_mpi(MPI_Ialltoall(o.a.data(), c, MPI_FLOAT, o.b.data(), c, MPI_FLOAT, data_,
                            &o.request),
              "MPI_Ialltoall for " + o.what);
  }

  /// Phase 1 of all_reduce. a: send, later the result (count); b: (size, my part), every rank's
  /// copy of the part this rank sums (reduce_my_part) before phase 2 gathers the parts.
  void post_all_reduce(op& o, const send_side& from) {
    o.two_phase = true;
    split_into_parts(o);
    const auto n = static_cast<std::size_t>(size_);
    const std::size_t count = o.call.count;
    const auto mine = static_cast<std::size_t>(o.counts[static_cast<std::size_t>(rank_)]);
    o.a = staged(pool_, count * sizeof(float), pinned(o, from));
    o.b = staged(pool_, n * mine * sizeof(float), false);
    copy_bytes(o.a.data(), from.data, count * sizeof(float), from.device, "all_reduce: copy in");
    check_mpi(MPI_Ialltoallv(o.a.data(), o.counts.data(), o.displs.data(), MPI_FLOAT, o.b.data(),
                             o.recv_counts.data(), o.recv_displs.data(), MPI_FLOAT, data_,
                             &o.request),
              "MPI_Ialltoallv for " + o.what);
  }

  /// all_reduce's v-collective arguments: part r of the vector (uneven sizes allowed, see
  /// part_begin) goes to rank r, which receives its part from every rank, in rank order.
  void split_into_parts(op& o) const {
    const auto n = static_cast<std::size_t>(size_);
    const std::size_t count = o.call.count;
    o.counts.resize(n);
    o.displs.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      o.displs[i] = static_cast<int>(part_begin(count, n, i));
      o.counts[i] = static_cast<int>(part_begin(count, n, i + 1) - part_begin(count, n, i));
    }
    const int mine = o.counts[static_cast<std::size_t>(rank_)];
    o.recv_counts.assign(n, mine);
    o.recv_displs.resize(n);
    for (std::size_t j = 0; j < n; ++j) o.recv_displs[j] = static_cast<int>(j) * mine;
  }

  /// Tests the active ops in call order and moves them on. Phase 2 of an all_reduce starts only
  /// when every earlier all_reduce has started its phase 2 (see the top of this file).
  /// Abort notices are looked for after the ops: a collective that has completed here counts as
  /// completed even when a peer failed right after it.
  void progress_locked() {
    bool phase2_blocked = false;
    for (auto it = active_.begin(); it != active_.end();) {
      op& o = **it;
      try {
        if (o.at == stage::phase1 || o.at == stage::phase2) {
          int done = 0;
          check_mpi(MPI_Test(&o.request, &done, MPI_STATUS_IGNORE), "MPI_Test for " + o.what);
          if (done) {
            if (o.at == stage::phase1 && o.two_phase) {
              reduce_my_part(o);
              o.at = stage::between;
            } else {
              o.at = stage::mpi_done;
            }
          }
        }
        if (o.at == stage::between && !phase2_blocked) {
          check_mpi(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, o.a.data(),
                                    o.counts.data(), o.displs.data(), MPI_FLOAT, phase2_,
                                    &o.request),
                    "MPI_Iallgatherv for " + o.what);
          o.at = stage::phase2;
        }
      } catch (const comm_error& e) {
        fail_locked(std::string(e.what()) + " (on rank " + std::to_string(rank_) + ")",
                    std::string("MPI failed in ") + o.what + ": " + e.what());
        throw;
      }
      if (o.two_phase && (o.at == stage::phase1 || o.at == stage::between)) phase2_blocked = true;
      if (o.at == stage::mpi_done)
        it = active_.erase(it);
      else
        ++it;
    }
    if (auto notice = control_.poll()) note_locked(*notice);
  }

  /// all_reduce between the phases: sum every rank's copy of my part, in rank order, into my
  /// part of a.
  void reduce_my_part(op& o) {
    const auto n = static_cast<std::size_t>(size_);
    const auto mine = static_cast<std::size_t>(o.counts[static_cast<std::size_t>(rank_)]);
    std::vector<const float*> blocks(n);
    for (std::size_t j = 0; j < n; ++j) blocks[j] = o.b.floats() + j * mine;
    float* out = o.a.floats() + o.displs[static_cast<std::size_t>(rank_)];
    reduce_in_rank_order(blocks.data(), size_, &out, 1, mine, o.call.op);
  }

  /// The result, from staging to the caller's buffer.
  void deliver(op& o) {
    const auto n = static_cast<std::size_t>(size_);
    const std::size_t count = o.call.count;
    switch (o.call.kind) {
    case collective::all_gather:
      copy_bytes(o.user_recv, o.a.data(), n * count, o.recv_device, "all_gather: copy out");
      break;
    case collective::broadcast:
      if (rank_ != o.call.root)
        copy_bytes(o.user_recv, o.a.data(), count, o.recv_device, "broadcast: copy out");
      break;
    case collective::barrier: break;
    case collective::reduce_scatter: {
      std::vector<const float*> blocks(n);
      for (std::size_t j = 0; j < n; ++j) blocks[j] = o.b.floats() + j * count;
      // Straight into a host buffer; through staging (a is free again) into a GPU buffer.
      float* out = o.recv_device ? o.a.floats() : static_cast<float*>(o.user_recv);
      reduce_in_rank_order(blocks.data(), size_, &out, 1, count, o.call.op);
      if (o.recv_device)
        copy_bytes(o.user_recv, out, count * sizeof(float), true, "reduce_scatter: copy out");
      break;
    }
    case collective::all_reduce:
      copy_bytes(o.user_recv, o.a.data(), count * sizeof(float), o.recv_device,
                 "all_reduce: copy out");
      break;
    }
    o.delivered = true;
    o.a = {};  // the blocks go back to the pool for the next collective
    o.b = {};
  }

  /// The first failure wins. `tell` (when not empty) goes to every other rank.
  void fail_locked(std::string reason, const std::string& tell) noexcept {
    if (failed_) return;
    failed_ = true;
    failed_by_ = rank_;
    reason_ = std::move(reason);
    if (!tell.empty() && !closed_) control_.send_abort(rank_, size_, tell);
  }

  void note_locked(const control_channel::notice& notice) {
    if (failed_) return;
    failed_ = true;
    failed_by_ = notice.rank;
    reason_ = "rank " + std::to_string(notice.rank) + " failed: " + notice.why;
  }

  comm_error failure_locked(const std::string& consequence) const {
    std::string message = "strata::comm mpi: " + reason_;
    if (!consequence.empty() && failed_by_ != rank_)
      message += " (rank " + std::to_string(rank_) + ": " + consequence + ")";
    return comm_error(message);
  }

  void leak_active_locked() noexcept {
    // Intentionally never freed: MPI may still write into these ops' staging blocks. They go to
    // a process-wide list that is never destroyed, so they stay reachable: a deliberate leak,
    // which leak checkers (LeakSanitizer) do not report as a lost allocation.
    if (active_.empty()) return;
    static auto* const graveyard_mutex = new std::mutex;
    static auto* const graveyard = new std::list<std::shared_ptr<op>>;
    std::lock_guard g(*graveyard_mutex);
    graveyard->splice(graveyard->end(), active_);
  }

  const std::chrono::milliseconds timeout_;
  const int rank_, size_;
  MPI_Comm data_, phase2_, ctrl_;
  control_channel control_;
  std::shared_ptr<staging_pool> pool_ = std::make_shared<staging_pool>();
  std::mutex mutex_;
  std::list<std::shared_ptr<op>> active_;  // in call order
  std::uint64_t seq_ = 0;
  bool failed_ = false;
  bool closed_ = false;
  int failed_by_ = -1;
  std::string reason_;
};

}  // namespace comm::detail
STRATA_NAMESPACE_END

#endif  // STRATA_HAVE_MPI
