// strata/io/uring_engine.hpp — the io_uring IO engine (only with liburing: STRATA_HAVE_URING).
//
// What lives here: uring_engine, a few io_uring rings; a call borrows a free ring, keeps up to
// queue_depth block-sized requests in flight on it, sleeps in io_uring_wait_cqe (no spinning)
// until they complete, continues short transfers and retries -EAGAIN/-EINTR. Buffers offered
// with register_buffers() (a pinned pool) are registered on every ring and requests that fall
// inside one use READ_FIXED/WRITE_FIXED, which spares the kernel pinning pages per request.
// What does not: deciding whether io_uring is usable here (make_engine() in engine.hpp asks
// this engine's constructor and falls back to posix_engine.hpp when it throws).
// Without STRATA_HAVE_URING this header is empty: link strata::uring to get the engine.
#pragma once

#include <strata/io/detail/engine_interface.hpp>

#if STRATA_HAVE_URING

#  include <condition_variable>
#  include <cstdio>
#  include <memory>
#  include <mutex>
#  include <thread>
#  include <vector>

#  include <liburing.h>

STRATA_NAMESPACE_BEGIN
namespace io {

class uring_engine final : public engine {
public:
  /// Sets the rings up or throws io_error saying why io_uring cannot be used here (ENOSYS: an
  /// old kernel; EPERM: a seccomp filter or sysctl kernel.io_uring_disabled; ENOMEM: the
  /// locked-memory limit). SQPOLL that is refused falls back to plain rings with a notice().
  explicit uring_engine(const engine_config& config = {})
      : block_bytes_(config.block_bytes), queue_depth_(config.queue_depth),
        sqpoll_(config.sqpoll) {
    if (block_bytes_ == 0 || block_bytes_ > (std::size_t{1} << 30) || !is_aligned(block_bytes_, 4096))
      throw config_error("io engine: block_bytes " + std::to_string(block_bytes_) +
                         " must be a multiple of 4096 and at most 1 GiB");
    if (queue_depth_ == 0 || queue_depth_ > 4096)
      throw config_error("io engine: queue_depth " + std::to_string(queue_depth_) +
                         " must be 1 .. 4096");
    const unsigned rings = config.rings ? config.rings : 1;
    for (unsigned i = 0; i < rings; ++i) {
      auto r = std::make_unique<ring_slot>();
      r->requests.resize(queue_depth_);
      init_ring(*r);
      rings_.push_back(std::move(r));
    }
  }
  ~uring_engine() override {
    for (auto& r : rings_)
      if (r->live) io_uring_queue_exit(&r->ring);
  }
  uring_engine(const uring_engine&) = delete;
  uring_engine& operator=(const uring_engine&) = delete;

  const char* name() const noexcept override { return "uring"; }
  /// Fallbacks taken while setting up (SQPOLL refused), "" if none.
  const std::string& notice() const noexcept { return notice_; }
  bool sqpoll() const noexcept { return sqpoll_; }
  /// True while buffers offered by register_buffers() are registered on every ring.
  bool buffers_registered() const {
    std::lock_guard lock(mutex_);
    return !registered_.empty();
  }

  void read(const file& f, void* dst, std::size_t bytes, std::uint64_t offset) override {
    transfer(io_op::read, f, static_cast<char*>(dst), bytes, offset);
  }
  void write(const file& f, const void* src, std::size_t bytes, std::uint64_t offset) override {
    transfer(io_op::write, f, static_cast<char*>(const_cast<void*>(src)), bytes, offset);
  }

  bool register_buffers(std::span<const iovec> buffers) override {
    std::unique_lock lock(mutex_);
    // Registration changes every ring: wait until none is borrowed, and hold new borrowers off.
    ++registering_;
    cv_.wait(lock, [&] { return borrowed_ == 0; });
    unregister_locked();
    bool ok = !buffers.empty();
    std::vector<io_uring*> done;
    for (auto& r : rings_) {
      if (!ok) break;
      if (!r->live) continue;
      if (io_uring_register_buffers(&r->ring, buffers.data(),
                                    static_cast<unsigned>(buffers.size())) < 0)
        ok = false;
      else
        done.push_back(&r->ring);
    }
    if (ok) {
      registered_.assign(buffers.begin(), buffers.end());
    } else {
      // Usually the locked-memory limit: keep plain reads and writes, which need no pinning.
      for (io_uring* ring : done) io_uring_unregister_buffers(ring);
    }
    --registering_;
    cv_.notify_all();
    return ok;
  }

  void unregister_buffers() noexcept override {
    std::unique_lock lock(mutex_);
    ++registering_;
    cv_.wait(lock, [&] { return borrowed_ == 0; });
    unregister_locked();
    --registering_;
    cv_.notify_all();
  }

  /// Why io_uring_setup failed with `err`, in words a user can act on.
  static std::string setup_failure_reason(int err) {
    switch (err) {
    case ENOSYS: return "the kernel has no io_uring (ENOSYS)";
    case EPERM: {
      int disabled = 0;
      if (std::FILE* fp = std::fopen("/proc/sys/kernel/io_uring_disabled", "r")) {
        if (std::fscanf(fp, "%d", &disabled) != 1) disabled = 0;
        std::fclose(fp);
      }
      if (disabled == 2) return "io_uring is disabled by sysctl kernel.io_uring_disabled=2 (EPERM)";
      if (disabled == 1)
        return "io_uring is limited to kernel.io_uring_group by sysctl "
               "kernel.io_uring_disabled=1 (EPERM)";
      return "io_uring_setup is not permitted (EPERM): a seccomp filter (e.g. a container "
             "runtime's default profile) blocks it";
    }
    case ENOMEM:
      return "not enough locked memory for the rings (ENOMEM): raise the memlock limit "
             "(ulimit -l)";
    default: return errno_text(err);
    }
  }

private:
  struct request {
    char* p = nullptr;
    std::size_t len = 0, done = 0;
    std::uint64_t offset = 0;
    int buf_index = -1;
    unsigned retries = 0;
  };
  struct ring_slot {
    io_uring ring{};
    bool live = false;
    bool busy = false;
    std::vector<request> requests;  // one per queue_depth slot, reused by each borrower
  };

  void init_ring(ring_slot& r) {
    io_uring_params params{};
    int ret = -EINVAL;
    if (sqpoll_) {
      params.flags = IORING_SETUP_SQPOLL;
      params.sq_thread_idle = 100;  // ms: the kernel thread sleeps soon after IO stops
      ret = io_uring_queue_init_params(queue_depth_, &r.ring, &params);
      if (ret < 0) {
        notice_ = "io_uring SQPOLL refused (" + setup_failure_reason(-ret) +
                  "), using interrupt-driven rings";
        sqpoll_ = false;
      }
    }
    if (!sqpoll_) {
      params = io_uring_params{};
      ret = io_uring_queue_init_params(queue_depth_, &r.ring, &params);
    }
    if (ret < 0)
      throw io_error("io_uring_queue_init (" + std::to_string(queue_depth_) +
                     " entries) failed: " + setup_failure_reason(-ret));
    r.live = true;
  }

  void unregister_locked() noexcept {
    if (registered_.empty()) return;
    for (auto& r : rings_)
      if (r->live) io_uring_unregister_buffers(&r->ring);
    registered_.clear();
  }

  // A borrowed ring, given back on every exit path.
  class lease {
  public:
    explicit lease(uring_engine& e) : e_(e) {
      std::unique_lock lock(e.mutex_);
      e.cv_.wait(lock, [&] {
        return e.registering_ == 0 && (e.free_ring() != nullptr || !e.any_live());
      });
      r_ = e.free_ring();
      if (!r_)
        throw io_error("io_uring engine: every ring failed and could not be set up again");
      r_->busy = true;
      ++e.borrowed_;
    }
    ~lease() {
      {
        std::lock_guard lock(e_.mutex_);
        r_->busy = false;
        --e_.borrowed_;
      }
      e_.cv_.notify_all();
    }
    ring_slot& operator*() const noexcept { return *r_; }

  private:
    uring_engine& e_;
    ring_slot* r_;
  };

  ring_slot* free_ring() noexcept {
    for (auto& r : rings_)
      if (r->live && !r->busy) return r.get();
    return nullptr;
  }
  bool any_live() const noexcept {
    for (auto& r : rings_)
      if (r->live) return true;
    return false;
  }

  int fixed_index(const char* p, std::size_t len) const noexcept {
    for (std::size_t i = 0; i < registered_.size(); ++i) {
      const char* base = static_cast<const char*>(registered_[i].iov_base);
      if (p >= base && len <= registered_[i].iov_len &&
          static_cast<std::size_t>(p - base) <= registered_[i].iov_len - len)
        return static_cast<int>(i);
    }
    return -1;
  }

  static void prep(ring_slot& r, io_op op, int fd, request& q, unsigned index) {
    io_uring_sqe* sqe = io_uring_get_sqe(&r.ring);
    while (!sqe) {
      // Never more requests than entries, so this only waits for an SQPOLL thread to catch up.
      io_uring_submit(&r.ring);
      std::this_thread::yield();
      sqe = io_uring_get_sqe(&r.ring);
    }
    char* p = q.p + q.done;
    const auto n = static_cast<unsigned>(q.len - q.done);
    const std::uint64_t off = q.offset + q.done;
    if (q.buf_index >= 0) {
      if (op == io_op::read)
        io_uring_prep_read_fixed(sqe, fd, p, n, off, q.buf_index);
      else
        io_uring_prep_write_fixed(sqe, fd, p, n, off, q.buf_index);
    } else {
      if (op == io_op::read)
        io_uring_prep_read(sqe, fd, p, n, off);
      else
        io_uring_prep_write(sqe, fd, p, n, off);
    }
    io_uring_sqe_set_data64(sqe, index);
  }

  void transfer(io_op op, const file& f, char* p, std::size_t bytes, std::uint64_t offset) {
    if (bytes == 0) return;
    lease borrowed(*this);
    ring_slot& r = *borrowed;
    const int fd = f.fd();

    std::size_t next = 0;          // first byte not yet handed to a request
    unsigned active = 0;           // requests prepared or in flight
    unsigned unsubmitted = 0;      // of those, prepared but not yet taken by the kernel
    std::vector<unsigned> idle;    // free request slots
    idle.reserve(queue_depth_);
    for (unsigned i = queue_depth_; i-- > 0;) idle.push_back(i);

    bool failed = false;
    int err = 0;                   // errno of the first failure, -1 for no progress
    std::uint64_t err_offset = 0;
    std::size_t err_bytes = 0, err_done = 0;
    auto fail = [&](const request& q, int e) {
      if (failed) return;
      failed = true;
      err = e;
      err_offset = q.offset;
      err_bytes = q.len;
      err_done = q.done;
    };
    auto start = [&](unsigned i) {
      request& q = r.requests[i];
      q.p = p + next;
      q.len = std::min(block_bytes_, bytes - next);
      q.offset = offset + next;
      q.done = 0;
      q.retries = 0;
      q.buf_index = registered_.empty() ? -1 : fixed_index(q.p, q.len);
      next += q.len;
      prep(r, op, fd, q, i);
      ++active;
      ++unsubmitted;
    };

    while (next < bytes && !idle.empty()) {
      start(idle.back());
      idle.pop_back();
    }
    while (active > 0) {
      if (unsubmitted > 0) {
        const int ret = io_uring_submit(&r.ring);
        if (ret >= 0) {
          unsubmitted -= std::min<unsigned>(unsubmitted, static_cast<unsigned>(ret));
        } else if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY) {
          if (active == unsubmitted) {
            std::this_thread::yield();
            continue;  // nothing in flight to wait for: try again
          }
        } else {
          broken(r, active - unsubmitted);
          throw detail::io_failure(op, f, offset, bytes, -ret, " (io_uring_submit)");
        }
      }
      if (active == unsubmitted) {  // the kernel took none of them yet: offer them again
        std::this_thread::yield();
        continue;
      }

      io_uring_cqe* cqe = nullptr;
      int ret = io_uring_wait_cqe(&r.ring, &cqe);
      if (ret == -EINTR || ret == -EAGAIN) continue;
      if (ret < 0) {
        broken(r, active - unsubmitted);
        throw detail::io_failure(op, f, offset, bytes, -ret, " (io_uring_wait_cqe)");
      }
      do {
        const auto i = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&r.ring, cqe);
        request& q = r.requests[i];
        bool again = false;
        if (res == -EAGAIN || res == -EINTR) {
          again = ++q.retries < 10000;
          if (!again) fail(q, -res);
        } else if (res < 0) {
          fail(q, -res);
        } else if (res == 0) {
          fail(q, -1);
        } else {
          q.done += static_cast<std::size_t>(res);
          again = q.done < q.len;  // short transfer: continue with the rest
        }
        if (again && !failed) {
          prep(r, op, fd, q, i);
          ++unsubmitted;
        } else if (!failed && next < bytes) {
          start(i);  // this slot moves on to the next block
          --active;  // start() counted it again
        } else {
          --active;
          idle.push_back(i);
        }
      } while (io_uring_peek_cqe(&r.ring, &cqe) == 0);
    }
    if (failed) {
      if (err == -1) throw detail::io_stalled(op, f, err_offset, err_bytes, err_done);
      throw detail::io_failure(op, f, err_offset, err_bytes, err);
    }
  }

  // The ring failed in a way that may leave requests queued in it: wait for the ones in
  // flight (they point into the caller's memory), then start over with a fresh ring.
  void broken(ring_slot& r, unsigned in_flight) noexcept {
    for (unsigned k = 0; k < in_flight; ++k) {
      io_uring_cqe* cqe = nullptr;
      int ret;
      do {
        ret = io_uring_wait_cqe(&r.ring, &cqe);
      } while (ret == -EINTR || ret == -EAGAIN);
      if (ret < 0) break;
      io_uring_cqe_seen(&r.ring, cqe);
    }
    std::lock_guard lock(mutex_);
    io_uring_queue_exit(&r.ring);
    r.live = false;
    try {
      init_ring(r);
      if (!registered_.empty())
        io_uring_register_buffers(&r.ring, registered_.data(),
                                  static_cast<unsigned>(registered_.size()));
    } catch (...) {
      // Leave it dead: borrowers skip it, and fail only when no ring is left.
    }
  }

  std::size_t block_bytes_;
  unsigned queue_depth_;
  bool sqpoll_;
  std::string notice_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<ring_slot>> rings_;
  unsigned borrowed_ = 0;
  unsigned registering_ = 0;
  std::vector<iovec> registered_;
};

static_assert(io_engine<uring_engine>);

}  // namespace io
STRATA_NAMESPACE_END

#endif  // STRATA_HAVE_URING
