// strata/io/uring_engine.hpp — the io_uring IO engine (only with liburing: STRATA_HAVE_URING).
//
// What lives here: uring_engine, a few io_uring rings; a call borrows a free ring, keeps up to
// queue_depth requests of request_bytes() in flight on it, sleeps in io_uring_wait_cqe (no
// spinning) until they complete, continues short transfers and retries -EAGAIN/-EINTR. Buffers
// offered with register_buffers() (a pinned pool) are registered on every ring and requests
// that fall inside one use READ_FIXED/WRITE_FIXED, which spares the kernel pinning pages per
// request.
// What does not: deciding whether io_uring is usable here (make_engine() in make_engine.hpp
// asks this engine's constructor and falls back to posix_engine.hpp when it throws).
// Without STRATA_HAVE_URING this header is empty: link strata::uring to get the engine.
#pragma once

#include <strata/io/detail/io_failure.hpp>
#include <strata/io/engine.hpp>

#if STRATA_HAVE_URING

#  include <algorithm>
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
  /// config_error (validate()) for a config no engine takes.
  explicit uring_engine(const engine_config& config = {})
      : config_((validate(config), config)), sqpoll_(config.sqpoll) {
    for (unsigned i = 0; i < config_.rings; ++i) {
      auto r = std::make_unique<ring_slot>();
      r->requests.resize(config_.queue_depth);
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
      ret = io_uring_queue_init_params(config_.queue_depth, &r.ring, &params);
      if (ret < 0) {
        notice_ = "io_uring SQPOLL refused (" + setup_failure_reason(-ret) +
                  "), using interrupt-driven rings";
        sqpoll_ = false;
      }
    }
    if (!sqpoll_) {
      params = io_uring_params{};
      ret = io_uring_queue_init_params(config_.queue_depth, &r.ring, &params);
    }
    if (ret < 0)
      throw io_error("io_uring_queue_init (" + std::to_string(config_.queue_depth) +
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

  // One call's bookkeeping on its borrowed ring: which bytes are handed out, which request
  // slots are free, and the first failure (the call finishes its requests in flight first).
  struct call {
    call(ring_slot& ring, io_op o, const file& fl, char* mem, std::size_t n, std::uint64_t at)
        : r(ring), op(o), f(fl), p(mem), bytes(n), offset(at) {}
    ring_slot& r;
    io_op op;
    const file& f;
    char* p;
    std::size_t bytes;
    std::uint64_t offset;
    std::size_t next = 0;      // first byte not yet handed to a request
    unsigned active = 0;       // requests prepared or in flight
    unsigned unsubmitted = 0;  // of those, prepared but not yet taken by the kernel
    std::vector<unsigned> idle;  // free request slots
    detail::first_failure failure;
  };

  // Fills the ring with requests, then alternates submitting and reaping until every request
  // has completed; throws the first failure after that.
  void transfer(io_op op, const file& f, char* p, std::size_t bytes, std::uint64_t offset) {
    if (bytes == 0) return;
    lease borrowed(*this);
    call c(*borrowed, op, f, p, bytes, offset);
    c.idle.reserve(config_.queue_depth);
    for (unsigned i = config_.queue_depth; i-- > 0;) c.idle.push_back(i);
    while (c.next < c.bytes && !c.idle.empty()) {
      start(c, c.idle.back());
      c.idle.pop_back();
    }
    while (c.active > 0) {
      if (!submit(c)) continue;
      reap(c);
    }
    if (c.failure) c.failure.raise(op, f);
  }

  // Hands the call's next request_bytes() to request slot `i` and prepares it.
  void start(call& c, unsigned i) {
    request& q = c.r.requests[i];
    q.p = c.p + c.next;
    q.len = request_bytes(config_, c.bytes - c.next);
    q.offset = c.offset + c.next;
    q.done = 0;
    q.retries = 0;
    q.buf_index = registered_.empty() ? -1 : fixed_index(q.p, q.len);
    c.next += q.len;
    prep(c.r, c.op, c.f.fd(), q, i);
    ++c.active;
    ++c.unsubmitted;
  }

  // Offers the prepared requests to the kernel. Returns whether some request is in flight to
  // wait for; when none is (the kernel took nothing yet: EINTR, EAGAIN, EBUSY), it yields and
  // the caller offers them again. Any other failure leaves the ring in an unknown state: it is
  // rebuilt and the call throws.
  bool submit(call& c) {
    if (c.unsubmitted > 0) {
      const int ret = io_uring_submit(&c.r.ring);
      if (ret >= 0) {
        c.unsubmitted -= std::min<unsigned>(c.unsubmitted, static_cast<unsigned>(ret));
      } else if (ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
        broken(c.r, c.active - c.unsubmitted);
        throw detail::io_failure(c.op, c.f, c.offset, c.bytes, -ret, " (io_uring_submit)");
      }
    }
    if (c.active == c.unsubmitted) {
      std::this_thread::yield();
      return false;
    }
    return true;
  }

  // Sleeps until a completion arrives, then handles every completion that is ready.
  void reap(call& c) {
    io_uring_cqe* cqe = nullptr;
    const int ret = io_uring_wait_cqe(&c.r.ring, &cqe);
    if (ret == -EINTR || ret == -EAGAIN) return;
    if (ret < 0) {
      broken(c.r, c.active - c.unsubmitted);
      throw detail::io_failure(c.op, c.f, c.offset, c.bytes, -ret, " (io_uring_wait_cqe)");
    }
    do {
      const auto i = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
      const int res = cqe->res;
      io_uring_cqe_seen(&c.r.ring, cqe);
      complete(c, i, res);
    } while (io_uring_peek_cqe(&c.r.ring, &cqe) == 0);
  }

  // One completion of request slot `i` with result `res`: a retry or the rest of a short
  // transfer goes again, a finished slot moves on to the next request, or falls idle once
  // there is none (or the call failed: the requests still in flight only finish).
  void complete(call& c, unsigned i, int res) {
    request& q = c.r.requests[i];
    bool again = false;
    if (res == -EAGAIN || res == -EINTR) {
      again = ++q.retries < 10000;
      if (!again) c.failure.record(q.offset, q.len, q.done, -res);
    } else if (res < 0) {
      c.failure.record(q.offset, q.len, q.done, -res);
    } else if (res == 0) {
      c.failure.record(q.offset, q.len, q.done, detail::no_progress);
    } else {
      q.done += static_cast<std::size_t>(res);
      again = q.done < q.len;  // short transfer: continue with the rest
    }
    if (again && !c.failure) {
      prep(c.r, c.op, c.f.fd(), q, i);
      ++c.unsubmitted;
    } else if (!c.failure && c.next < c.bytes) {
      start(c, i);  // this slot moves on to the next request
      --c.active;   // start() counted it again
    } else {
      --c.active;
      c.idle.push_back(i);
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

  engine_config config_;
  bool sqpoll_;  // config_.sqpoll, unless the kernel refused it
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
