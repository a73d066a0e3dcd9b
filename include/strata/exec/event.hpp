// strata/exec/event.hpp — completion of asynchronous work, and the error it ended with.
//
// An event is a shared handle: the queue that runs the work completes it, anyone holding a copy
// can wait on it. A failure on a background queue (a copy, an IO) is stored in the event
// and rethrown by wait() in the waiting thread — errors surface where the data is needed, never
// as a crash on a worker thread. A default-constructed event is already complete.
// In the CUDA build an event may also stand for a point in a CUDA stream (a cudaEvent_t).
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/error.hpp>

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

STRATA_NAMESPACE_BEGIN

namespace detail {
struct event_state {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr failure;
#if STRATA_ENABLE_CUDA
  cudaEvent_t cuda_event = nullptr;
  ~event_state() {
    if (cuda_event) cudaEventDestroy(cuda_event);
  }
#endif
};
}  // namespace detail

class event {
public:
  /// An event that is already complete.
  event() = default;

  /// An event that completes when complete() or fail() is called on it (or a copy of it).
  static event pending() {
    event e;
    e.state_ = std::make_shared<detail::event_state>();
    return e;
  }

#if STRATA_ENABLE_CUDA
  /// An event for the current end of a CUDA stream's work.
  [[nodiscard]] static event recorded_on(cudaStream_t stream) {
    event e = pending();
    check_cuda(cudaEventCreateWithFlags(&e.state_->cuda_event, cudaEventDisableTiming),
               "cudaEventCreate");
    check_cuda(cudaEventRecord(e.state_->cuda_event, stream), "cudaEventRecord");
    e.state_->done = true;  // host side is done; the cuda event says when the device is
    return e;
  }
#endif

  void complete() const { finish(nullptr); }
  void fail(std::exception_ptr why) const { finish(why); }

  /// True once the work has ended, successfully or not (wait() says which); never blocks.
  [[nodiscard]] bool ready() const {
    if (!state_) return true;
    std::lock_guard lock(state_->mutex);
#if STRATA_ENABLE_CUDA
    // A failed device event counts as ready, like a failed host one: wait() reports it.
    if (state_->done && state_->cuda_event)
      return cuda_query_done([&] { return cudaEventQuery(state_->cuda_event); });
#endif
    return state_->done;
  }

  /// Blocks until complete; rethrows the exception the work failed with.
  void wait() const {
    if (!state_) return;
    std::unique_lock lock(state_->mutex);
    state_->cv.wait(lock, [&] { return state_->done; });
    if (state_->failure) std::rethrow_exception(state_->failure);
#if STRATA_ENABLE_CUDA
    if (state_->cuda_event)
      check_cuda(cudaEventSynchronize(state_->cuda_event), "waiting for device work");
#endif
  }

  /// The stored failure, if the event completed with one (does not wait).
  std::exception_ptr failure() const {
    if (!state_) return nullptr;
    std::lock_guard lock(state_->mutex);
    return state_->failure;
  }

private:
  void finish(std::exception_ptr why) const {
    if (!state_) return;
    {
      std::lock_guard lock(state_->mutex);
      state_->done = true;
      state_->failure = why;
    }
    state_->cv.notify_all();
  }
  std::shared_ptr<detail::event_state> state_;
};

STRATA_NAMESPACE_END
