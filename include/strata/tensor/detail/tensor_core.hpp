// strata/tensor/detail/tensor_core.hpp — the state machine behind tiered_tensor, type-erased.
//
// One slot per tier of the placement (0 = compute tier, last = home). A slot may hold memory
// (owned, or borrowed from a sequence's ring) and may hold the current value ("valid"). Rules:
//  - Home always has memory; it is valid except while a write lease on another tier is out.
//  - A fetch copies from the nearest valid slot below; a copy into a slot waits for the copies
//    still reading it, a copy out of a slot waits for the copy that filled it (`ready`).
//  - Read leases share; a read_write lease is exclusive across all tiers and invalidates the
//    other copies. When the last lease on a non-home slot ends, dirty data is written back to
//    home and the slot is evicted (its memory returned once pending copies are done).
// Not thread-safe: a tensor belongs to one thread at a time, as a std::vector does. The copies
// it starts run on the context's queues and touch only memory, never this state.
#pragma once

#include <strata/core/shape.hpp>
#include <strata/exec/context.hpp>

#include <memory>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace detail {

class tensor_core {
public:
  tensor_core(context& ctx, std::string name, strata::shape s, std::size_t bytes,
              const tier_id* tiers, std::size_t tier_count)
      : ctx_(ctx), name_(std::move(name)), shape_(s), bytes_(bytes) {
    for (std::size_t i = 0; i < tier_count; ++i) slots_.emplace_back(tiers[i]);
    slot& h = slots_.back();
    if (h.tier == tier_id::nvme)
      throw config_error("tensor '" + name_ + "': its home tier is nvme, which needs an IO "
                         "engine in the context; none is configured");
    h.owned = ctx_.allocate(h.tier, bytes_, name_);
    h.ptr = h.owned.data();
    h.valid = true;
  }

  ~tensor_core() {
    for (auto& s : slots_) ctx_.retire(std::move(s.owned), uses_of(s));
  }
  tensor_core(const tensor_core&) = delete;
  tensor_core& operator=(const tensor_core&) = delete;

  const std::string& name() const noexcept { return name_; }
  const strata::shape& shape() const noexcept { return shape_; }
  std::size_t bytes() const noexcept { return bytes_; }
  std::size_t home() const noexcept { return slots_.size() - 1; }
  tier_id tier_at(std::size_t k) const noexcept { return slots_[k].tier; }
  bool valid_at(std::size_t k) const noexcept { return slots_[k].valid; }
  bool leased() const noexcept {
    for (auto& s : slots_)
      if (s.readers || s.writer) return true;
    return false;
  }

  /// Starts bringing the current value to slot k (k above home) without waiting. With `into`,
  /// the slot borrows that memory instead of allocating, after the events in `into_free`.
  void fetch(std::size_t k, void* into = nullptr, std::vector<event> into_free = {}) {
    slot& dst = slots_[k];
    if (dst.valid || k == home()) return;
    std::size_t j = k + 1;
    while (j < slots_.size() && !slots_[j].valid) ++j;
    if (j == slots_.size())
      throw access_error("tensor '" + name_ + "': no tier holds its current value (a read_write "
                         "lease is out)");
    if (into) {
      dst.ptr = into;
    } else {
      dst.owned = ctx_.allocate(dst.tier, bytes_, name_);
      dst.ptr = dst.owned.data();
    }
    slot& src = slots_[j];
    into_free.push_back(src.ready);
    dst.ready = ctx_.copy(dst.ptr, dst.tier, src.ptr, src.tier, bytes_, "fetch " + name_,
                          std::move(into_free));
    std::erase_if(src.reads, [](const event& e) { return e.ready(); });
    src.reads.push_back(dst.ready);
    dst.valid = true;
  }

  /// Takes a lease on slot k (fetching and waiting as needed); returns the slot's memory and
  /// the token that keeps views alive.
  std::pair<void*, std::shared_ptr<const void>> acquire(std::size_t k, bool write) {
    check_conflicts(k, write);
    slot& s = slots_[k];
    fetch(k);
    try {
      s.ready.wait();
    } catch (...) {
      if (k != home()) evict(k, {});  // nothing usable arrived; the next acquire tries again
      throw;
    }
    if (write) {
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (i == k) continue;
        if (i == home())
          slots_[i].valid = false;  // stale until the write-back; keeps its memory
        else if (slots_[i].valid)
          evict(i, {});
      }
      s.writer = true;
    } else {
      ++s.readers;
    }
    if (!s.token) s.token = std::make_shared<int>(0);
    return {s.ptr, s.token};
  }

  /// Ends a lease. The last lease on a non-home slot writes dirty data back and evicts.
  void release(std::size_t k, bool write) {
    slot& s = slots_[k];
    if (write)
      s.writer = false;
    else
      --s.readers;
    if (s.readers || s.writer) return;
    s.token.reset();
    event fence = ctx_.compute_fence();  // compute issued on this slot's memory so far
    if (k == home()) {
      if (write) s.ready = fence;  // later copies out of home wait for that compute
      return;
    }
    if (write) {
      slot& h = slots_[home()];
      std::vector<event> after = h.reads;
      after.push_back(h.ready);
      after.push_back(fence);
      h.ready = ctx_.copy(h.ptr, h.tier, s.ptr, s.tier, bytes_, "write back " + name_,
                          std::move(after));
      h.reads.clear();
      h.valid = true;
      s.reads.push_back(h.ready);
    }
    evict(k, {fence});
  }

  /// Drops slot k's copy (k above home). Its memory returns once the copies using it are done;
  /// borrowed memory is handed back through `last_use(k)`.
  void evict(std::size_t k, std::vector<event> extra) {
    slot& s = slots_[k];
    if (k == home()) return;
    if (s.readers || s.writer)
      throw access_error("tensor '" + name_ + "': cannot evict it from tier '" +
                         tier_name(s.tier) + "' while a lease on it is held");
    auto uses = uses_of(s);
    uses.insert(uses.end(), extra.begin(), extra.end());
    if (s.owned)
      ctx_.retire(std::move(s.owned), std::move(uses));
    else if (s.ptr)
      s.last_use = std::move(uses);
    s.ptr = nullptr;
    s.valid = false;
    s.reads.clear();
    s.ready = {};
  }

  /// Events after which borrowed memory last used by slot k may be reused.
  std::vector<event> take_last_use(std::size_t k) { return std::move(slots_[k].last_use); }

  /// Overwrites the tensor from host memory (waits).
  void assign(const void* src) {
    check_conflicts(home(), true);
    for (std::size_t i = 0; i < home(); ++i)
      if (slots_[i].valid) evict(i, {});
    slot& h = slots_[home()];
    std::vector<event> after = h.reads;
    after.push_back(h.ready);
    h.ready = ctx_.copy(h.ptr, h.tier, src, tier_id::host, bytes_, "assign " + name_,
                        std::move(after));
    h.reads.clear();
    h.ready.wait();
  }

  /// Copies the current value into host memory (waits).
  void read(void* dst) {
    check_conflicts(home(), false);
    slot& h = slots_[home()];
    event e = ctx_.copy(dst, tier_id::host, h.ptr, h.tier, bytes_, "read " + name_, {h.ready});
    h.reads.push_back(e);
    e.wait();
  }

private:
  struct slot {
    explicit slot(tier_id t) : tier(t) {}
    tier_id tier;
    buffer owned;                // memory this tensor allocated on the tier
    void* ptr = nullptr;         // owned.data(), or memory borrowed from a sequence's ring
    bool valid = false;          // holds the current value
    event ready;                 // the copy that filled it (or the compute that wrote it)
    std::vector<event> reads;    // copies still reading it
    std::vector<event> last_use; // for borrowed memory: when the lender may reuse it
    int readers = 0;
    bool writer = false;
    std::shared_ptr<const void> token;  // alive while leases are out: views check it
  };

  static std::vector<event> uses_of(const slot& s) {
    std::vector<event> all = s.reads;
    all.push_back(s.ready);
    return all;
  }

  void check_conflicts(std::size_t k, bool write) const {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const slot& o = slots_[i];
      if (o.writer || (write && o.readers))
        throw access_error("tensor '" + name_ + "': a " + (write ? "read_write" : "read_only") +
                           " lease on tier '" + tier_name(slots_[k].tier) +
                           "' conflicts with the " + (o.writer ? "read_write" : "read_only") +
                           " lease held on tier '" + tier_name(o.tier) +
                           "' (a read_write lease is exclusive)");
    }
  }

  context& ctx_;
  std::string name_;
  strata::shape shape_;
  std::size_t bytes_;
  std::vector<slot> slots_;
};

}  // namespace detail
STRATA_NAMESPACE_END
