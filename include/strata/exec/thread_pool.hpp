// strata/exec/thread_pool.hpp — a small persistent pool of worker threads for data-parallel
// loops on the host (the host optimizer, bulk casts).
//
// What lives here: thread_pool with parallel_for(n, min_chunk, f), which splits [0, n) into
// contiguous chunks, runs f(begin, end) on them (the calling thread takes part) and returns
// when all are done, rethrowing the first exception a chunk threw; parallel_for_options
// (how many chunks at most, and the multiple every chunk boundary falls on); and
// default_thread_pool(), one process-wide pool sized to the hardware.
// What does not: ordered queues of asynchronous work with events (exec/work_queue.hpp), task
// graphs, work stealing, or pinning threads to cores.
//
// Why not a std::thread per call: the optimizer runs once per tensor per step, and creating
// and joining threads costs tens of microseconds each time, more than updating a small tensor.
//
// Concurrency: any number of threads may call parallel_for on one pool at once, and f may
// itself call parallel_for (on any pool). The caller always works through the chunks of its
// own call, so a call finishes even when every worker is busy elsewhere; workers only help.
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/error.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN

/// How parallel_for splits [0, n).
struct parallel_for_options {
  /// At most this many chunks; 0: the pool's concurrency(). More chunks than threads is fine:
  /// the chunks then wait for a free thread.
  std::size_t max_chunks = 0;
  /// Every boundary between two chunks is a multiple of `align` (e.g. a cache line's worth of
  /// elements, so no two threads write the same line). 0 or 1: no constraint.
  std::size_t align = 1;
};

class thread_pool {
public:
  /// A pool in which `concurrency` threads run chunks: the caller of parallel_for plus
  /// concurrency - 1 workers, started now. 0: std::thread::hardware_concurrency() (1 if unknown).
  explicit thread_pool(unsigned concurrency = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// Threads that can run chunks of one call at once (workers + the caller).
  unsigned concurrency() const noexcept { return static_cast<unsigned>(workers_.size()) + 1; }

  /// Runs f(begin, end) over [0, n) split into min(concurrency(), n / min_chunk) chunks (at
  /// least 1) of near-equal size; one chunk runs inline with no synchronisation at all.
  /// Returns when every chunk has finished. If chunks throw, the remaining unstarted chunks are
  /// skipped and the first exception is rethrown here.
  template <class F>
  void parallel_for(std::size_t n, std::size_t min_chunk, F&& f) {
    parallel_for(n, min_chunk, parallel_for_options{}, std::forward<F>(f));
  }

  /// As above, with at most opt.max_chunks chunks whose boundaries fall on multiples of
  /// opt.align. Chunks are never empty (f is not called for n == 0); when there is more than
  /// one, each holds at least min_chunk elements (rounded up to a multiple of align).
  template <class F>
  void parallel_for(std::size_t n, std::size_t min_chunk, const parallel_for_options& opt,
                    F&& f);

private:
  struct job {
    void (*run)(void* fn, std::size_t begin, std::size_t end);
    void* fn;
    const std::size_t* bounds;  // chunks + 1 boundaries
    std::size_t chunks;
    std::size_t next = 0;      // first unclaimed chunk        (guarded by mutex_)
    std::size_t finished = 0;  // chunks done or skipped        (guarded by mutex_)
    std::exception_ptr error;  // the first failure            (guarded by mutex_)
  };

  void worker_loop();
  /// Claims the next chunk of `j` (mutex_ held); false when none is left. Unqueues j once its
  /// last chunk is claimed, and after a failure claims (skips) all the rest at once.
  bool claim(job& j, std::size_t& chunk);
  void run_chunk(std::unique_lock<std::mutex>& lock, job& j, std::size_t chunk);

  std::mutex mutex_;
  std::condition_variable work_cv_;  // a job was queued, or the pool is stopping
  std::condition_variable done_cv_;  // some job's last chunk finished
  std::deque<job*> queue_;           // jobs with unclaimed chunks, oldest first
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

/// The process-wide pool (hardware_concurrency() threads, workers started on first use),
/// shared by the host optimizer and anything else that wants to use every core.
inline thread_pool& default_thread_pool() {
  static thread_pool pool(0);
  return pool;
}

// ---- definitions -------------------------------------------------------------------------------

inline thread_pool::thread_pool(unsigned concurrency) {
  if (concurrency == 0) concurrency = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(concurrency - 1);
  try {
    for (unsigned i = 1; i < concurrency; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (const std::system_error& e) {
    // Stop the ones that did start before reporting.
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    throw config_error("thread_pool: could not start worker " + std::to_string(workers_.size()) +
                       " of " + std::to_string(concurrency - 1) + ": " + e.what());
  }
}

inline thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

inline bool thread_pool::claim(job& j, std::size_t& chunk) {
  if (j.next == j.chunks) return false;
  if (j.error) {  // skip the rest: count them as finished, unstarted
    j.finished += j.chunks - j.next;
    j.next = j.chunks;
  } else {
    chunk = j.next++;
  }
  if (j.next == j.chunks) {
    auto it = std::find(queue_.begin(), queue_.end(), &j);
    if (it != queue_.end()) queue_.erase(it);
  }
  if (j.error) {
    if (j.finished == j.chunks) done_cv_.notify_all();
    return false;
  }
  return true;
}

inline void thread_pool::run_chunk(std::unique_lock<std::mutex>& lock, job& j,
                                   std::size_t chunk) {
  lock.unlock();
  std::exception_ptr failure;
  try {
    j.run(j.fn, j.bounds[chunk], j.bounds[chunk + 1]);
  } catch (...) {
    failure = std::current_exception();
  }
  lock.lock();
  if (failure && !j.error) j.error = failure;
  // After this increment the owner may return and destroy j: it checks `finished` under
  // mutex_, which this thread holds until it no longer touches j.
  if (++j.finished == j.chunks) done_cv_.notify_all();
}

inline void thread_pool::worker_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nobody is waiting for help
    job& j = *queue_.front();
    std::size_t chunk = 0;
    if (claim(j, chunk)) run_chunk(lock, j, chunk);
  }
}

template <class F>
void thread_pool::parallel_for(std::size_t n, std::size_t min_chunk,
                               const parallel_for_options& opt, F&& f) {
  if (n == 0) return;
  // Work in units of `align` elements (the last chunk also takes the n % align left over), so
  // every boundary is a multiple of align and every chunk holds at least min_chunk elements.
  const std::size_t align = opt.align == 0 ? 1 : opt.align;
  const std::size_t units = n / align;
  const std::size_t min_units = std::max<std::size_t>(1, (min_chunk + align - 1) / align);
  std::size_t chunks = opt.max_chunks ? opt.max_chunks : concurrency();
  chunks = std::min(chunks, std::max<std::size_t>(1, units / min_units));
  if (chunks <= 1) {
    f(std::size_t{0}, n);
    return;
  }
  std::vector<std::size_t> bounds(chunks + 1);
  const std::size_t q = units / chunks, r = units % chunks;
  for (std::size_t i = 0; i < chunks; ++i) bounds[i] = (i * q + std::min(i, r)) * align;
  bounds[chunks] = n;

  using fn_t = std::remove_reference_t<F>;
  job j{};
  j.run = [](void* fn, std::size_t b, std::size_t e) { (*static_cast<fn_t*>(fn))(b, e); };
  j.fn = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
  j.bounds = bounds.data();
  j.chunks = chunks;

  std::unique_lock lock(mutex_);
  queue_.push_back(&j);
  if (chunks - 1 >= workers_.size()) work_cv_.notify_all();
  else
    for (std::size_t i = 0; i + 1 < chunks; ++i) work_cv_.notify_one();
  // The caller works through its own job; workers take chunks of it meanwhile.
  std::size_t chunk = 0;
  while (claim(j, chunk)) run_chunk(lock, j, chunk);
  done_cv_.wait(lock, [&] { return j.finished == j.chunks; });
  if (j.error) std::rethrow_exception(j.error);
}

STRATA_NAMESPACE_END
