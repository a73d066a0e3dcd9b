// strata/exec/work_queue.hpp — an in-order queue of host work on its own thread.
//
// The host build's streams: each copy direction (h2d, d2h, io-read, io-write) is one
// work_queue, so work on different queues overlaps while work on one queue runs in submission order — the
// semantics of a CUDA stream. In the CUDA build the copy queues are work_queues too: each owns
// a CUDA stream, issues its cudaMemcpyAsync calls there and waits for them on its own thread,
// so staging (host memcpy into pinned slots) and DMA pipeline without blocking the caller.
// A task may depend on events from other queues; a failed dependency fails the task unrun.
#pragma once

#include <strata/exec/event.hpp>
#include <strata/exec/trace.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

STRATA_NAMESPACE_BEGIN

class work_queue {
public:
  /// `on_start` runs first on the worker thread, before any task: in the CUDA build it makes
  /// the context's GPU the thread's current device (a new thread starts on GPU 0, where its
  /// first CUDA call would otherwise create a context). If it throws, every task fails with it.
  work_queue(std::string name, trace_recorder& trace, std::function<void()> on_start = {})
      : name_(std::move(name)), trace_(trace), on_start_(std::move(on_start)),
        worker_([this] { run(); }) {}
  ~work_queue() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  work_queue(const work_queue&) = delete;
  work_queue& operator=(const work_queue&) = delete;

  /// Runs `fn` on the worker after all earlier tasks and after every event in `after`.
  /// The returned event completes when fn returns, or fails with what fn (or a dependency)
  /// threw.
  [[nodiscard]] event submit(span_kind kind, std::string label, std::function<void()> fn,
                             std::vector<event> after = {}) {
    event done = event::pending();
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back({kind, std::move(label), std::move(fn), std::move(after), done});
      last_ = done;
    }
    cv_.notify_one();
    return done;
  }

  /// Waits for everything submitted so far; rethrows the last task's failure, if any.
  void synchronize() {
    event last;
    {
      std::lock_guard lock(mutex_);
      last = last_;
    }
    last.wait();
  }

  const std::string& name() const noexcept { return name_; }

private:
  struct task {
    span_kind kind;
    std::string label;
    std::function<void()> fn;
    std::vector<event> after;
    event done;
  };

  void run() {
    std::exception_ptr start_failure;
    try {
      if (on_start_) on_start_();
    } catch (...) {
      start_failure = std::current_exception();
    }
    for (;;) {
      task t;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping and drained
        t = std::move(tasks_.front());
        tasks_.pop_front();
      }
      try {
        if (start_failure) std::rethrow_exception(start_failure);
        for (auto& e : t.after) e.wait();
        const double begin = trace_.now_us();
        t.fn();
        trace_.record(name_, t.kind, std::move(t.label), begin, trace_.now_us());
        t.done.complete();
      } catch (...) {
        t.done.fail(std::current_exception());
      }
    }
  }

  std::string name_;
  trace_recorder& trace_;
  std::function<void()> on_start_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<task> tasks_;
  event last_;
  bool stopping_ = false;
  std::thread worker_;  // last: starts after everything it uses exists
};

STRATA_NAMESPACE_END
