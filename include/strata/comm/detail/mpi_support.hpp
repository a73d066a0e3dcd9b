// strata/comm/detail/mpi_support.hpp — pieces the MPI-bootstrapped communicators share.
//
// What lives here (only with STRATA_HAVE_MPI): MPI status checks, int-count guards, the
// polling backoff of a wait, the control channel on which a failing rank tells the others, and
// the staging pool that keeps every buffer MPI touches owned by strata, not by the caller.
// What does not: the communicators (comm/mpi.hpp, comm/nccl.hpp).
#pragma once

#include <strata/core/config.hpp>

#if STRATA_HAVE_MPI

#  include <strata/core/error.hpp>
#  include <strata/memory/resource.hpp>
#  include <strata/memory/tier.hpp>

#  include <algorithm>
#  include <chrono>
#  include <climits>
#  include <memory>
#  include <mutex>
#  include <optional>
#  include <string>
#  include <thread>
#  include <utility>
#  include <vector>

#  include <mpi.h>

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

/// Throws comm_error("<backend>: <what>: <MPI's message>") unless rc is MPI_SUCCESS. (The
/// communicators set MPI_ERRORS_RETURN on their own MPI communicators, so errors come back as
/// codes instead of ending the job.)
inline void check_mpi(int rc, const std::string& what, const char* backend = "strata::comm mpi") {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
  throw comm_error(std::string(backend) + ": " + what + ": " +
                   (length > 0 ? std::string(text, static_cast<std::size_t>(length))
                               : "MPI error " + std::to_string(rc)));
}

/// MPI counts are int. Larger ones are refused with the numbers rather than wrapped.
inline int mpi_count(std::size_t n, const char* unit, const std::string& what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw config_error("strata::comm mpi: " + what + " needs a count of " + std::to_string(n) +
                       " " + unit + ", more than MPI's int counts hold (" +
                       std::to_string(INT_MAX) + "); split the buffer");
  return static_cast<int>(n);
}

/// Throws config_error unless MPI is initialised and not yet finalised.
inline void require_mpi_running(const char* backend) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    throw config_error(std::string(backend) + ": MPI is " +
                       (finalized ? "already finalized" : "not initialized") +
                       "; create the communicator between MPI_Init and MPI_Finalize");
}

/// A duplicate of `base` whose errors come back as codes (and become comm_errors) instead of
/// ending the job.
inline MPI_Comm duplicate_comm(MPI_Comm base, const char* backend) {
  MPI_Comm c = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(base, &c), "MPI_Comm_dup", backend);
  check_mpi(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", backend);
  return c;
}

inline bool mpi_finalized() noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

/// How a wait polls: a few yields (a collective between neighbours completes in microseconds),
/// then sleeps growing to 250 us — short enough that a multi-round collective, which MPI
/// advances only inside our MPI_Test calls, is not slowed much; long enough not to steal the
/// cores that the peer ranks of an oversubscribed machine need.
class backoff {
public:
  void pause() {
    if (spins_ < 16) {
      ++spins_;
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(sleep_);
    sleep_ = std::min(sleep_ * 2, std::chrono::microseconds(250));
  }

private:
  int spins_ = 0;
  std::chrono::microseconds sleep_{10};
};

/// Abort notices between the ranks of one communicator, on an MPI communicator of their own
/// (so they never mix with the data). A failing rank sends its reason to every other rank and
/// does not wait for anyone to receive it; ranks look for notices while they wait.
class control_channel {
public:
  static constexpr int abort_tag = 0x5a7a;

  struct notice {
    int rank;
    std::string why;
  };

  control_channel() = default;
  explicit control_channel(MPI_Comm comm) : comm_(comm) {}
  control_channel(const control_channel&) = delete;
  control_channel& operator=(const control_channel&) = delete;

  /// Sends `why` to every rank but `rank`. Never blocks and never throws: the sends are small
  /// (delivered eagerly) and a failure to notify is no reason to fail differently.
  void send_abort(int rank, int size, const std::string& why) noexcept {
    try {
      auto* text = new std::string(why);
      texts_.push_back(text);
      for (int peer = 0; peer < size; ++peer) {
        if (peer == rank) continue;
        MPI_Request r = MPI_REQUEST_NULL;
        if (MPI_Isend(text->data(), static_cast<int>(text->size()), MPI_CHAR, peer, abort_tag,
                      comm_, &r) == MPI_SUCCESS)
          sends_.push_back(r);
      }
    } catch (...) {
    }
  }

  /// An abort notice from another rank, if one has arrived.
  std::optional<notice> poll() noexcept {
    int flag = 0;
    MPI_Status status;
    if (MPI_Iprobe(MPI_ANY_SOURCE, abort_tag, comm_, &flag, &status) != MPI_SUCCESS || !flag)
      return std::nullopt;
    int length = 0;
    MPI_Get_count(&status, MPI_CHAR, &length);
    try {
      std::string why(static_cast<std::size_t>(length > 0 ? length : 0), '\0');
      if (MPI_Recv(why.data(), length, MPI_CHAR, status.MPI_SOURCE, abort_tag, comm_,
                   MPI_STATUS_IGNORE) != MPI_SUCCESS)
        return std::nullopt;
      return notice{status.MPI_SOURCE, std::move(why)};
    } catch (...) {
      return std::nullopt;
    }
  }

  /// Before the MPI communicator is freed: completed sends release their text; sends nobody has
  /// received yet are let go (MPI_Request_free still delivers them) and their text is left
  /// allocated, since MPI may still read it.
  void close() noexcept {
    bool all_done = true;
    for (MPI_Request& r : sends_) {
      int done = 0;
      if (MPI_Test(&r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done) {
        MPI_Request_free(&r);
        all_done = false;
      }
    }
    sends_.clear();
    if (all_done)
      for (std::string* t : texts_) delete t;
    texts_.clear();
  }

private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::vector<MPI_Request> sends_;
  std::vector<std::string*> texts_;  // owned; see close()
};

/// Host blocks for staging, kept for reuse: collectives of one model repeat the same sizes.
/// Pinned blocks (cudaHostAlloc in the CUDA build) are used where a GPU buffer is copied in or
/// out, so those copies run at DMA speed.
class staging_pool {
public:
  struct block {
    std::byte* data = nullptr;
    std::size_t bytes = 0;
    bool pinned = false;
  };

  /// A block of at least `bytes` (at least 1).
  block take(std::size_t bytes, bool pinned) {
    bytes = std::max<std::size_t>(bytes, 1);
    {
      std::lock_guard lock(mutex_);
      auto best = idle_.end();
      for (auto it = idle_.begin(); it != idle_.end(); ++it)
        if (it->pinned == pinned && it->bytes >= bytes &&
            (best == idle_.end() || it->bytes < best->bytes))
          best = it;
      if (best != idle_.end()) {
        block b = *best;
        idle_.erase(best);
        return b;
      }
    }
    memory_resource& from = pinned ? static_cast<memory_resource&>(pinned_)
                                   : static_cast<memory_resource&>(host_);
    const std::size_t alignment = pinned ? tier::pinned::alignment : tier::host::alignment;
    return {static_cast<std::byte*>(from.allocate(bytes, alignment, "strata::comm staging")),
            bytes, pinned};
  }

  void give_back(block b) noexcept {
    if (!b.data) return;
    std::lock_guard lock(mutex_);
    try {
      idle_.push_back(b);
    } catch (...) {
      release(b);
      return;
    }
    while (idle_.size() > keep_blocks) {  // the oldest go first
      release(idle_.front());
      idle_.erase(idle_.begin());
    }
  }

  ~staging_pool() {
    for (const block& b : idle_) release(b);
  }

private:
  static constexpr std::size_t keep_blocks = 8;

  void release(const block& b) noexcept {
    if (b.pinned)
      pinned_.deallocate(b.data, b.bytes, tier::pinned::alignment);
    else
      host_.deallocate(b.data, b.bytes, tier::host::alignment);
  }

  std::mutex mutex_;
  std::vector<block> idle_;
  aligned_host_resource host_;
  pinned_resource pinned_;
};

/// A staging block on loan; returned to its pool when the holder goes.
class staged {
public:
  staged() = default;
  staged(std::shared_ptr<staging_pool> pool, std::size_t bytes, bool pinned)
      : pool_(std::move(pool)), block_(pool_->take(bytes, pinned)) {}
  staged(staged&& o) noexcept : pool_(std::move(o.pool_)), block_(std::exchange(o.block_, {})) {}
  staged& operator=(staged&& o) noexcept {
    if (this != &o) {
      reset();
      pool_ = std::move(o.pool_);
      block_ = std::exchange(o.block_, {});
    }
    return *this;
  }
  ~staged() { reset(); }

  std::byte* data() const noexcept { return block_.data; }
  float* floats() const noexcept { return reinterpret_cast<float*>(block_.data); }

private:
  void reset() noexcept {
    if (pool_) pool_->give_back(block_);
    block_ = {};
    pool_.reset();
  }
  std::shared_ptr<staging_pool> pool_;
  staging_pool::block block_;
};

}  // namespace comm::detail
STRATA_NAMESPACE_END

#endif  // STRATA_HAVE_MPI
