// strata/comm/detail/nccl_state.hpp — the machinery behind comm::nccl.
//
// What lives here (only with CUDA, NCCL and MPI): setting up an NCCL communicator through MPI,
// starting collectives on its stream, waiting on their events with a deadline, and failure —
// NCCL's own asynchronous errors, abort notices from peers (the MPI control channel shared with
// comm::mpi), and timeouts, each of which ends in ncclCommAbort so no kernel waits forever on a
// peer that is gone. What does not: the public API (comm/nccl.hpp).
//
// The NCCL communicator is created non-blocking (ncclConfig_t::blocking = 0): setup and every
// call may return ncclInProgress, and polling ncclCommGetAsyncError against a deadline is what
// turns a peer that never arrives into a comm_error instead of a hang.
#pragma once

#include <strata/core/config.hpp>

// strata's own headers are included outside the conditional: each guards itself, and the
// single-header generator then inlines each of them once.
#include <strata/comm/communicator.hpp>
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/mpi_support.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/pointer.hpp>

#if STRATA_ENABLE_CUDA && STRATA_HAVE_NCCL && STRATA_HAVE_MPI

#  include <strata/core/cuda_check.hpp>  // CUDA only: outside, it would need CUDA's headers

#  include <chrono>
#  include <cstdint>
#  include <cstring>
#  include <functional>
#  include <memory>
#  include <mutex>
#  include <string>

#  include <cuda_runtime_api.h>
#  include <mpi.h>
#  include <nccl.h>

#  if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#    error "strata::comm::nccl needs NCCL 2.14 or newer (non-blocking communicators)"
#  endif

STRATA_NAMESPACE_BEGIN
namespace comm::detail {

class nccl_state {
public:
  using clock = std::chrono::steady_clock;
  static constexpr const char* backend = "strata::comm nccl";

  /// One collective: the event recorded on the stream after it.
  struct op {
    std::string what;
    cudaEvent_t event = nullptr;
    bool done = false;
    ~op() {
      if (event) cudaEventDestroy(event);
    }
  };

  nccl_state(MPI_Comm base, std::chrono::milliseconds timeout) : timeout_(timeout) {
    require_mpi_running(backend);
    check_mpi(MPI_Comm_rank(base, &rank_), "MPI_Comm_rank", backend);
    check_mpi(MPI_Comm_size(base, &size_), "MPI_Comm_size", backend);
    ctrl_ = duplicate_comm(base, backend);
    control_ = std::make_unique<control_channel>(ctrl_);
    try {
      set_up(base);
    } catch (...) {
      if (comm_) ncclCommAbort(comm_);
      if (stream_) cudaStreamDestroy(stream_);
      if (barrier_buf_) cudaFree(barrier_buf_);
      MPI_Comm_free(&ctrl_);
      throw;
    }
  }

  ~nccl_state() { close(); }
  nccl_state(const nccl_state&) = delete;
  nccl_state& operator=(const nccl_state&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  int device() const noexcept { return device_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  cudaStream_t stream() const noexcept { return stream_; }
  ncclComm_t native() const noexcept { return comm_; }

  /// Checks the buffers, runs `launch` (one NCCL call on the stream) and records the op's event.
  std::shared_ptr<op> start(const collective_call& call, const void* send, const void* recv,
                            const std::function<ncclResult_t()>& launch) {
    std::lock_guard lock(mutex_);
    auto o = std::make_shared<op>();
    o->what = describe(call, seq_);
    if (!failed_ && !closed_)
      if (auto notice = control_->poll()) note_locked(*notice);
    if (failed_) throw failure_locked("cannot start " + o->what);
    if (closed_) throw comm_error(std::string(backend) + ": communicator already destroyed");
    if (call.count > 0)
      for (const void* p : {send, recv})
        if (p && !is_device_memory(p))
          throw config_error(std::string(backend) + ": " + o->what +
                             " was given host memory; NCCL collectives need device buffers "
                             "(use comm::mpi for host buffers)");
    try {
      check_cuda(cudaSetDevice(device_), "cudaSetDevice");
      settle(launch(), o->what);
      check_cuda(cudaEventCreateWithFlags(&o->event, cudaEventDisableTiming), "cudaEventCreate");
      check_cuda(cudaEventRecord(o->event, stream_), "cudaEventRecord after " + o->what);
    } catch (const std::exception& e) {
      // The peers will wait for this collective: tell them why it never comes.
      fail_locked("rank " + std::to_string(rank_) + " could not start " + o->what + ": " +
                      e.what(),
                  "could not start " + o->what + ": " + e.what());
      throw;
    }
    ++seq_;
    return o;
  }

  bool test(op& o) {
    std::lock_guard lock(mutex_);
    if (o.done || failed_ || closed_) return true;
    // Anything but "not ready" ends the wait: success, or an error that wait() reports.
    const cudaError_t q = cuda_query([&] { return cudaEventQuery(o.event); });
    if (q == cudaSuccess) o.done = true;
    return q != cudaErrorNotReady;
  }

  /// Returns once the collective's event has completed; throws comm_error (after aborting the
  /// NCCL communicator) on an NCCL error, a peer's abort notice, or the timeout.
  void wait(op& o) {
    const auto deadline = clock::now() + timeout_;
    backoff pause;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (o.done) return;
        if (failed_) throw failure_locked(o.what + " cannot complete");
        if (closed_)
          throw comm_error(std::string(backend) + ": the communicator was destroyed before " +
                           o.what + " completed on rank " + std::to_string(rank_));
        const cudaError_t q = cuda_query([&] { return cudaEventQuery(o.event); });
        if (q == cudaSuccess) {
          o.done = true;
          return;
        }
        if (q != cudaErrorNotReady) {
          fail_locked("rank " + std::to_string(rank_) + ": CUDA error " + cudaGetErrorName(q) +
                          " while waiting for " + o.what,
                      std::string("CUDA error ") + cudaGetErrorName(q) + " in " + o.what);
          abort_nccl_locked();
          throw failure_locked("");
        }
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(comm_, &async);
        if (async != ncclSuccess && async != ncclInProgress) {
          fail_locked("rank " + std::to_string(rank_) + ": NCCL failed in " + o.what + ": " +
                          nccl_message(async),
                      "NCCL failed in " + o.what + ": " + nccl_message(async));
          abort_nccl_locked();
          throw failure_locked("");
        }
        if (auto notice = control_->poll()) {
          note_locked(*notice);
          abort_nccl_locked();  // the peer's kernels are gone; ours would wait for them forever
          throw failure_locked(o.what + " cannot complete");
        }
        if (clock::now() >= deadline) {
          const std::string t = std::to_string(timeout_.count()) + " ms";
          fail_locked("rank " + std::to_string(rank_) + " waited " + t + " for " + o.what +
                          "; a peer never called it or is stuck before it",
                      "timed out after waiting " + t + " for " + o.what);
          abort_nccl_locked();
          throw failure_locked("");
        }
      }
      pause.pause();
    }
  }

  void abort(const std::string& why) noexcept {
    std::lock_guard lock(mutex_);
    fail_locked("rank " + std::to_string(rank_) + " failed: " + why, why);
    abort_nccl_locked();
  }

  /// Called by ~nccl: lets queued work drain (bounded by the timeout), then finalises and
  /// destroys the NCCL communicator — or aborts it, when something failed or would not drain.
  void close() noexcept {
    std::unique_lock lock(mutex_);
    if (closed_) return;
    closed_ = true;
    cudaSetDevice(device_);
    bool idle = false;
    if (!failed_ && comm_) {
      const auto deadline = clock::now() + timeout_;
      backoff pause;
      while (!(idle = cuda_query([&] { return cudaStreamQuery(stream_); }) == cudaSuccess) &&
             clock::now() < deadline) {
        lock.unlock();
        pause.pause();
        lock.lock();
      }
    }
    if (idle) {
      ncclResult_t r = ncclCommFinalize(comm_);
      const auto deadline = clock::now() + timeout_;
      backoff pause;
      while (r == ncclInProgress && clock::now() < deadline) {
        pause.pause();
        if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
      }
      if (r == ncclSuccess) {
        ncclCommDestroy(comm_);
        comm_ = nullptr;
      }
    }
    abort_nccl_locked();  // whatever did not finish cleanly
    if (stream_) cudaStreamDestroy(stream_);
    if (barrier_buf_) cudaFree(barrier_buf_);
    if (!mpi_finalized()) {
      while (control_->poll()) {
      }
      control_->close();
      MPI_Comm_free(&ctrl_);
    }
  }

  float* barrier_buffer() const noexcept { return barrier_buf_; }

private:
  void set_up(MPI_Comm base) {
    // The GPU: local rank (among the ranks on this node) modulo the node's GPUs.
    MPI_Comm local = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split_type(base, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
              "MPI_Comm_split_type", backend);
    int local_rank = 0;
    MPI_Comm_rank(local, &local_rank);
    MPI_Comm_free(&local);
    const cuda_discovery found = cuda_discover();
    const int devices = found.devices;
    // Every rank must agree before anyone waits in a blocking bootstrap call.
    int all_have_gpus = devices > 0 ? 1 : 0;
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, &all_have_gpus, 1, MPI_INT, MPI_MIN, ctrl_),
              "MPI_Allreduce (GPU check)", backend);
    if (!all_have_gpus)
      throw config_error(std::string(backend) + ": " +
                         (devices > 0 ? "another rank" : "rank " + std::to_string(rank_)) +
                         " sees no usable GPU (" +
                         (devices > 0 ? std::string("no device, or no driver") : found.why_none()) +
                         ")");
    device_ = local_rank % devices;
    check_cuda(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")");

    // The unique id travels from rank 0 by MPI, with rank 0's status, so a failure there
    // fails every rank instead of leaving them in ncclCommInitRankConfig.
    struct {
      int status;
      ncclUniqueId id;
    } boot{};
    if (rank_ == 0) boot.status = static_cast<int>(ncclGetUniqueId(&boot.id));
    check_mpi(MPI_Bcast(&boot, sizeof boot, MPI_BYTE, 0, ctrl_), "MPI_Bcast (ncclUniqueId)",
              backend);
    if (boot.status != ncclSuccess)
      throw comm_error(std::string(backend) + ": ncclGetUniqueId failed on rank 0: " +
                       ncclGetErrorString(static_cast<ncclResult_t>(boot.status)));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, boot.id, rank_, &config);
    settle(r, "NCCL setup (ncclCommInitRankConfig)");

    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cuda(cudaMalloc(&barrier_buf_, sizeof(float)), "cudaMalloc (barrier)");
    check_cuda(cudaMemset(barrier_buf_, 0, sizeof(float)), "cudaMemset (barrier)");
  }

  /// A non-blocking NCCL call returned r: wait (bounded) until it is no longer in progress,
  /// and throw comm_error if it failed.
  void settle(ncclResult_t r, const std::string& what) {
    const auto deadline = clock::now() + timeout_;
    backoff pause;
    while (r == ncclInProgress) {
      if (clock::now() >= deadline)
        throw comm_error(std::string(backend) + ": rank " + std::to_string(rank_) + " waited " +
                         std::to_string(timeout_.count()) + " ms for " + what +
                         " to be accepted; a peer never joined");
      pause.pause();
      if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
    }
    if (r != ncclSuccess)
      throw comm_error(std::string(backend) + ": " + what + " on rank " + std::to_string(rank_) +
                       ": " + nccl_message(r));
  }

  std::string nccl_message(ncclResult_t r) const {
    std::string m = ncclGetErrorString(r);
    const char* last = ncclGetLastError(comm_);
    if (last && *last) m += std::string(" (") + last + ")";
    return m;
  }

  void abort_nccl_locked() noexcept {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  void fail_locked(std::string reason, const std::string& tell) noexcept {
    if (failed_) return;
    failed_ = true;
    failed_by_ = rank_;
    reason_ = std::move(reason);
    if (!tell.empty() && !closed_) control_->send_abort(rank_, size_, tell);
  }

  void note_locked(const control_channel::notice& notice) {
    if (failed_) return;
    failed_ = true;
    failed_by_ = notice.rank;
    reason_ = "rank " + std::to_string(notice.rank) + " failed: " + notice.why;
  }

  comm_error failure_locked(const std::string& consequence) const {
    std::string message = std::string(backend) + ": " + reason_;
    if (!consequence.empty() && failed_by_ != rank_)
      message += " (rank " + std::to_string(rank_) + ": " + consequence + ")";
    return comm_error(message);
  }

  const std::chrono::milliseconds timeout_;
  int rank_ = 0, size_ = 0, device_ = 0;
  MPI_Comm ctrl_ = MPI_COMM_NULL;  // control notices and the bootstrap
  std::unique_ptr<control_channel> control_;
  ncclComm_t comm_ = nullptr;  // null once destroyed or aborted
  cudaStream_t stream_ = nullptr;
  float* barrier_buf_ = nullptr;  // (1) on the device: NCCL has no barrier, so an all_reduce
  std::mutex mutex_;
  std::uint64_t seq_ = 0;
  bool failed_ = false;
  bool closed_ = false;
  int failed_by_ = -1;
  std::string reason_;
};

}  // namespace comm::detail
STRATA_NAMESPACE_END

#endif  // STRATA_ENABLE_CUDA && STRATA_HAVE_NCCL && STRATA_HAVE_MPI
