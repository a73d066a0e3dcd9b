// strata/io/posix_engine.hpp — the fallback IO engine: pread/pwrite on a pool of threads.
//
// Works wherever POSIX does: no io_uring, a seccomp filter that blocks it, a sysctl that
// disables it. A call is cut into requests of request_bytes() that the pool's threads move in
// parallel, at most queue_depth of one call at once (engine_config says why both engines mean
// the same by it); the caller waits for all of them. EINTR is retried and short transfers are
// continued, so a call moves every byte or throws.
// What does not live here: choosing the engine (make_engine.hpp), io_uring (uring_engine.hpp).
#pragma once

#include <strata/io/detail/io_failure.hpp>
#include <strata/io/engine.hpp>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace io {

class posix_engine final : public engine {
public:
  /// What moves one request: its operation, descriptor, memory, size and file offset; returns
  /// 0 or the errno of the failure (detail::no_progress for end of file / no progress) and
  /// sets `done` to how far it got; it must not throw (it runs on the pool's threads). The
  /// default is move_piece (pread/pwrite); another one observes or holds requests (the tests
  /// count how many are in flight at once).
  using request_mover = std::function<int(io_op op, int fd, char* p, std::size_t bytes,
                                          std::uint64_t offset, std::size_t& done)>;

  /// config_error (validate()) for a config no engine takes.
  explicit posix_engine(const engine_config& config = {}) : posix_engine(config, &move_piece) {}
  posix_engine(const engine_config& config, request_mover mover)
      : config_((validate(config), config)), mover_(std::move(mover)) {
    threads_.reserve(config_.posix_threads);
    for (unsigned i = 0; i < config_.posix_threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~posix_engine() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  posix_engine(const posix_engine&) = delete;
  posix_engine& operator=(const posix_engine&) = delete;

  const char* name() const noexcept override { return "posix"; }

  void read(const file& f, void* dst, std::size_t bytes, std::uint64_t offset) override {
    transfer(io_op::read, f, static_cast<char*>(dst), bytes, offset);
  }
  void write(const file& f, const void* src, std::size_t bytes, std::uint64_t offset) override {
    transfer(io_op::write, f, static_cast<char*>(const_cast<void*>(src)), bytes, offset);
  }

  /// Moves one piece on the calling thread: continues short transfers, retries EINTR/EAGAIN.
  /// Returns 0, or the errno of the failure; `done` says how far it got.
  static int move_piece(io_op op, int fd, char* p, std::size_t bytes, std::uint64_t offset,
                        std::size_t& done) noexcept {
    done = 0;
    while (done < bytes) {
      const std::size_t want = bytes - done;
      const ssize_t n = op == io_op::read
                            ? ::pread(fd, p + done, want, static_cast<off_t>(offset + done))
                            : ::pwrite(fd, p + done, want, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return errno;
      }
      if (n == 0) return detail::no_progress;  // the caller words it (end of file / no progress)
      done += static_cast<std::size_t>(n);
    }
    return 0;
  }

private:
  // One call, on the caller's stack. Its requests are taken in order by `lanes` pool threads
  // (at most queue_depth), each moving one request at a time until none is left: that is what
  // bounds a call's requests in flight by queue_depth. The caller waits until every lane has
  // let go of the call before it goes away.
  struct call {
    call(io_op o, int descriptor, char* mem, std::size_t n, std::uint64_t at)
        : op(o), fd(descriptor), p(mem), bytes(n), offset(at) {}
    io_op op;
    int fd;
    char* p;
    std::size_t bytes;
    std::uint64_t offset;
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t next = 0;  // first byte not yet handed to a request
    unsigned lanes = 0;    // pool threads still working on this call
    detail::first_failure failure;
  };

  void transfer(io_op op, const file& f, char* p, std::size_t bytes, std::uint64_t offset) {
    if (bytes == 0) return;
    call c(op, f.fd(), p, bytes, offset);
    const std::size_t requests = (bytes + request_bytes(config_) - 1) / request_bytes(config_);
    const auto lanes = static_cast<unsigned>(std::min<std::size_t>(
        {requests, config_.queue_depth, threads_.size()}));
    if (lanes <= 1) {
      // One request at a time anyway: move them here and spare the hand-off.
      run_lane(c);
    } else {
      c.lanes = lanes;
      {
        std::lock_guard lock(mutex_);
        for (unsigned i = 0; i < lanes; ++i) queue_.push_back(&c);
      }
      cv_.notify_all();
      std::unique_lock lock(c.mutex);
      c.cv.wait(lock, [&] { return c.lanes == 0; });
    }
    if (c.failure) c.failure.raise(op, f);
  }

  // Moves the call's next requests one at a time until none is left; after a failure the rest
  // are skipped, since the call will throw anyway.
  void run_lane(call& c) const {
    for (;;) {
      std::size_t at, n;
      {
        std::lock_guard lock(c.mutex);
        if (c.failure || c.next >= c.bytes) return;
        at = c.next;
        n = request_bytes(config_, c.bytes - at);
        c.next += n;
      }
      std::size_t done = 0;
      const int err = mover_(c.op, c.fd, c.p + at, n, c.offset + at, done);
      if (err != 0) {
        std::lock_guard lock(c.mutex);
        c.failure.record(c.offset + at, n, done, err);
      }
    }
  }

  // A pool thread: takes one lane of some call at a time.
  void work() {
    for (;;) {
      call* c;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        c = queue_.front();
        queue_.pop_front();
      }
      run_lane(*c);
      std::lock_guard lock(c->mutex);
      if (--c->lanes == 0) c->cv.notify_all();  // under the lock: the waiter cannot destroy
      // the call before this thread lets go of its mutex
    }
  }

  engine_config config_;
  request_mover mover_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<call*> queue_;  // one entry per lane of a waiting call
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

static_assert(io_engine<posix_engine>);

}  // namespace io
STRATA_NAMESPACE_END
