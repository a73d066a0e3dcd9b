// strata/io/posix_engine.hpp — the fallback IO engine: pread/pwrite on a pool of threads.
//
// Works wherever POSIX does: no io_uring, a seccomp filter that blocks it, a sysctl that
// disables it. A call is split into block_bytes pieces that the pool's threads move in
// parallel (the thread count is the queue depth here); the caller waits for all of them.
// EINTR is retried and short transfers are continued, so a call moves every byte or throws.
// What does not live here: choosing the engine (engine.hpp), io_uring (uring_engine.hpp).
#pragma once

#include <strata/io/detail/engine_interface.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace io {

class posix_engine final : public engine {
public:
  explicit posix_engine(const engine_config& config = {})
      : block_bytes_(config.block_bytes ? config.block_bytes : std::size_t{1} << 20) {
    threads_.reserve(config.posix_threads);
    for (unsigned i = 0; i < config.posix_threads; ++i) threads_.emplace_back([this] { work(); });
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
      if (n == 0) return -1;  // end of file (read) / no progress (write): the caller words it
      done += static_cast<std::size_t>(n);
    }
    return 0;
  }

private:
  // One call's pieces share a batch on the caller's stack; the caller waits until every
  // piece is finished (done, failed or skipped) before the batch goes away.
  struct batch {
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t pending = 0;
    bool failed = false;
    int err = 0;
    std::uint64_t err_offset = 0;
    std::size_t err_bytes = 0, err_done = 0;
  };
  struct piece {
    batch* b;
    io_op op;
    int fd;
    char* p;
    std::size_t bytes;
    std::uint64_t offset;
  };

  void transfer(io_op op, const file& f, char* p, std::size_t bytes, std::uint64_t offset) {
    if (bytes == 0) return;
    batch b;
    const std::size_t pieces = (bytes + block_bytes_ - 1) / block_bytes_;
    if (threads_.empty() || pieces == 1) {
      // Nothing to overlap: do it here and spare the hand-off.
      for (std::size_t at = 0; at < bytes; at += block_bytes_)
        run({&b, op, f.fd(), p + at, std::min(block_bytes_, bytes - at), offset + at});
    } else {
      b.pending = pieces;
      {
        std::lock_guard lock(mutex_);
        for (std::size_t at = 0; at < bytes; at += block_bytes_)
          queue_.push_back({&b, op, f.fd(), p + at, std::min(block_bytes_, bytes - at),
                            offset + at});
      }
      cv_.notify_all();
      std::unique_lock lock(b.mutex);
      b.cv.wait(lock, [&] { return b.pending == 0; });
    }
    if (b.failed) {
      if (b.err == -1) throw detail::io_stalled(op, f, b.err_offset, b.err_bytes, b.err_done);
      throw detail::io_failure(op, f, b.err_offset, b.err_bytes, b.err);
    }
  }

  // Runs one piece and reports it to its batch; a piece of a batch that already failed is
  // skipped, since its call will throw anyway.
  static void run(const piece& w) {
    bool skip;
    {
      std::lock_guard lock(w.b->mutex);
      skip = w.b->failed;
    }
    int err = 0;
    std::size_t done = 0;
    if (!skip) err = move_piece(w.op, w.fd, w.p, w.bytes, w.offset, done);
    std::lock_guard lock(w.b->mutex);
    if (err != 0 && !w.b->failed) {
      w.b->failed = true;
      w.b->err = err;
      w.b->err_offset = w.offset;
      w.b->err_bytes = w.bytes;
      w.b->err_done = done;
    }
    if (w.b->pending > 0 && --w.b->pending == 0) w.b->cv.notify_all();  // under the lock:
    // the waiter cannot destroy the batch before this thread lets go of its mutex
  }

  void work() {
    for (;;) {
      piece w;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        w = queue_.front();
        queue_.pop_front();
      }
      run(w);
    }
  }

  std::size_t block_bytes_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<piece> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

static_assert(io_engine<posix_engine>);

}  // namespace io
STRATA_NAMESPACE_END
