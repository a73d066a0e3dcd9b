// strata/io/faulty.hpp — an engine wrapper that fails on purpose, to test what failures leave.
//
// What lives here: io::faulty, which passes calls to any engine and, where a rule matches,
// fails them instead — EIO, ENOSPC, a short transfer that then fails — or delays them.
// Rules select by operation, by the n-th call of that operation (counting from 0, reads and
// writes counted apart) and by offset range. Injected failures are io_errors worded like real
// ones (detail/io_failure.hpp), plus "(injected)". What does not: deciding what a
// failure means for stored data (nvme_store.hpp keeps the previous data; its tests check it).
#pragma once

#include <strata/io/detail/io_failure.hpp>
#include <strata/io/engine.hpp>

#include <atomic>
#include <chrono>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace io {

enum class fault_kind : std::uint8_t {
  eio,              // the call fails with EIO, nothing moved
  enospc,           // the call fails with ENOSPC, nothing moved
  short_then_fail,  // the first half (aligned down) moves, then the call fails with EIO
  delay,            // the call is held for `delay`, then proceeds (and may still fail)
};

struct fault_rule {
  fault_kind kind = fault_kind::eio;
  std::optional<io_op> op;                // unset: reads and writes
  std::optional<std::uint64_t> nth_call;  // only the n-th call of its operation, from 0
  std::uint64_t offset_begin = 0;         // only calls whose byte range overlaps
  std::uint64_t offset_end = std::numeric_limits<std::uint64_t>::max();  //   [begin, end)
  std::chrono::microseconds delay{0};     // for fault_kind::delay
  std::uint64_t times = 0;                // fires at most this often; 0: no limit

  /// The n-th `op` call fails with `kind`.
  static fault_rule nth(io_op op, std::uint64_t n, fault_kind kind = fault_kind::eio) {
    fault_rule r;
    r.kind = kind;
    r.op = op;
    r.nth_call = n;
    return r;
  }
  /// Every `op` call touching [begin, end) fails with `kind`.
  static fault_rule range(io_op op, std::uint64_t begin, std::uint64_t end,
                          fault_kind kind = fault_kind::eio) {
    fault_rule r;
    r.kind = kind;
    r.op = op;
    r.offset_begin = begin;
    r.offset_end = end;
    return r;
  }
  /// Every call (of `op`, if given) waits `d` first.
  static fault_rule delayed(std::chrono::microseconds d, std::optional<io_op> op = {}) {
    fault_rule r;
    r.kind = fault_kind::delay;
    r.op = op;
    r.delay = d;
    return r;
  }
};

class faulty final : public engine {
public:
  /// Wraps an engine it owns.
  explicit faulty(std::unique_ptr<engine> inner)
      : owned_(std::move(inner)), inner_(*owned_), name_(std::string("faulty(") + inner_.name() + ")") {}
  /// Wraps an engine owned elsewhere, which must outlive this one.
  explicit faulty(engine& inner) : inner_(inner), name_(std::string("faulty(") + inner.name() + ")") {}

  const char* name() const noexcept override { return name_.c_str(); }
  engine& inner() noexcept { return inner_; }

  /// Adds a rule; returns its id for remove_rule(). Rules are checked in the order added; the
  /// delays of all matching rules add up, and the first matching failure is the one injected.
  std::size_t add_rule(const fault_rule& rule) {
    std::lock_guard lock(mutex_);
    rules_.push_back({rule, next_id_, 0});
    return next_id_++;
  }
  void remove_rule(std::size_t id) {
    std::lock_guard lock(mutex_);
    std::erase_if(rules_, [&](const active_rule& r) { return r.id == id; });
  }
  void clear() {
    std::lock_guard lock(mutex_);
    rules_.clear();
  }
  /// Calls seen so far (failed ones included), per operation.
  std::uint64_t calls(io_op op) const noexcept {
    return (op == io_op::read ? reads_ : writes_).load(std::memory_order_relaxed);
  }
  std::uint64_t reads() const noexcept { return calls(io_op::read); }
  std::uint64_t writes() const noexcept { return calls(io_op::write); }
  /// Failures injected so far (delays not counted).
  std::uint64_t injected() const noexcept { return injected_.load(std::memory_order_relaxed); }
  std::uint64_t delayed_calls() const noexcept { return delayed_.load(std::memory_order_relaxed); }
  /// Starts counting calls (for nth_call) and fired rules from zero again.
  void reset_counters() {
    std::lock_guard lock(mutex_);
    reads_ = 0;
    writes_ = 0;
    injected_ = 0;
    delayed_ = 0;
    for (auto& r : rules_) r.fired = 0;
  }

  void read(const file& f, void* dst, std::size_t bytes, std::uint64_t offset) override {
    call(io_op::read, f, dst, bytes, offset);
  }
  void write(const file& f, const void* src, std::size_t bytes, std::uint64_t offset) override {
    call(io_op::write, f, const_cast<void*>(src), bytes, offset);
  }
  bool register_buffers(std::span<const iovec> buffers) override {
    return inner_.register_buffers(buffers);
  }
  void unregister_buffers() noexcept override { inner_.unregister_buffers(); }

private:
  struct active_rule {
    fault_rule rule;
    std::size_t id;
    std::uint64_t fired;
  };

  void call(io_op op, const file& f, void* p, std::size_t bytes, std::uint64_t offset) {
    std::chrono::microseconds wait{0};
    std::optional<fault_kind> failure;
    {
      std::lock_guard lock(mutex_);
      const std::uint64_t n = (op == io_op::read ? reads_ : writes_).fetch_add(1);
      const std::uint64_t end = offset + (bytes ? bytes : 1);
      for (auto& r : rules_) {
        const fault_rule& rule = r.rule;
        if (rule.op && *rule.op != op) continue;
        if (rule.nth_call && *rule.nth_call != n) continue;
        if (offset >= rule.offset_end || end <= rule.offset_begin) continue;
        if (rule.times && r.fired >= rule.times) continue;
        if (rule.kind == fault_kind::delay) {
          ++r.fired;
          wait += rule.delay;
        } else if (!failure) {
          ++r.fired;
          failure = rule.kind;
        }
      }
      if (wait.count() > 0) ++delayed_;
      if (failure) ++injected_;
    }
    if (wait.count() > 0) std::this_thread::sleep_for(wait);
    if (!failure) {
      forward(op, f, p, bytes, offset);
      return;
    }
    switch (*failure) {
    case fault_kind::enospc: throw detail::io_failure(op, f, offset, bytes, ENOSPC, " (injected)");
    case fault_kind::short_then_fail: {
      // Half moves for real (aligned, so an O_DIRECT file takes it), then the rest "fails".
      const std::size_t part = align_down(bytes / 2, f.direct() ? f.alignment() : 1);
      if (part) forward(op, f, p, part, offset);
      throw detail::io_failure(op, f, offset + part, bytes - part, EIO, " (injected)");
    }
    default: throw detail::io_failure(op, f, offset, bytes, EIO, " (injected)");
    }
  }

  void forward(io_op op, const file& f, void* p, std::size_t bytes, std::uint64_t offset) {
    if (op == io_op::read)
      inner_.read(f, p, bytes, offset);
    else
      inner_.write(f, p, bytes, offset);
  }

  std::unique_ptr<engine> owned_;
  engine& inner_;
  std::string name_;
  std::mutex mutex_;
  std::vector<active_rule> rules_;
  std::size_t next_id_ = 0;
  std::atomic<std::uint64_t> reads_{0}, writes_{0}, injected_{0}, delayed_{0};
};

static_assert(io_engine<faulty>);

}  // namespace io
STRATA_NAMESPACE_END
