// strata/tensor/detail/tensor_core.hpp — the state machine behind tiered_tensor, type-erased.
//
// One slot per tier of the placement (0 = compute tier, last = home). A slot may hold memory
// (owned, or borrowed from a sequence's ring) and may hold the current value ("valid"). Rules:
//  - Home always has memory (or, on a file tier, a handle in the context's store); it is valid
//    except while a write lease on another tier is out.
//  - A fetch copies from the nearest valid slot below; a copy into a slot waits for the copies
//    still reading it, a copy out of a slot waits for the copy that filled it (`ready`).
//  - Read leases share; a read_write lease is exclusive across all tiers and invalidates the
//    other copies. When the last lease on a non-home slot ends, dirty data is written back to
//    home and the slot is evicted (its memory returned once pending copies are done).
// Not thread-safe: a tensor belongs to one thread at a time, as a std::vector does. The copies
// it starts run on the context's queues and touch only memory, never this state. The public
// face of all this is tensor_ref (tensor_ref.hpp); nothing above floor 5 sees this class.
#pragma once

#include <strata/core/shape.hpp>
#include <strata/exec/context.hpp>
#include <strata/tensor/shard_layout.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace detail {

class tensor_core : public std::enable_shared_from_this<tensor_core> {
public:
  tensor_core(context& ctx, std::string name, strata::shape s, std::size_t bytes,
              const tier_id* tiers, std::size_t tier_count, std::optional<shard_spec> shard = {})
      : ctx_(ctx), name_(std::move(name)), shape_(s), bytes_(bytes), shard_(shard) {
    for (std::size_t i = 0; i < tier_count; ++i) slots_.emplace_back(tiers[i]);
    for (auto& sl : slots_) ctx_.tiers().position(sl.tier);  // refuses a tier the context lacks
    slot& h = slots_.back();
    if (is_file(h.tier)) {
      io::nvme_store& store = ctx_.nvme();  // refuses a context without an NVMe tier
      ctx_.budget(h.tier).reserve(bytes_, name_);
      try {
        h.file = store.create(bytes_, name_);
      } catch (...) {
        ctx_.budget(h.tier).release(bytes_);
        throw;
      }
    } else {
      h.owned = ctx_.allocate(h.tier, bytes_, name_);
      h.ptr = h.owned.data();
    }
    h.valid = true;
  }

  ~tensor_core() {
    for (auto& s : slots_) ctx_.retire(std::move(s.owned), uses_of(s));
    slot& h = slots_.back();
    if (is_file(h.tier)) {
      auto* store = &ctx_.nvme();
      auto* budget = &ctx_.budget(h.tier);
      ctx_.retire(
          [store, budget, file = h.file, bytes = bytes_] {
            store->destroy(file);
            budget->release(bytes);
          },
          uses_of(h));
    }
  }
  tensor_core(const tensor_core&) = delete;
  tensor_core& operator=(const tensor_core&) = delete;

  const std::string& name() const noexcept { return name_; }
  const strata::shape& shape() const noexcept { return shape_; }
  std::size_t bytes() const noexcept { return bytes_; }
  std::size_t home() const noexcept { return slots_.size() - 1; }
  std::size_t slot_count() const noexcept { return slots_.size(); }
  tier_id tier_at(std::size_t k) const noexcept { return slots_[k].tier; }
  /// The slot of tier t; access_error naming the tensor when its placement lacks t.
  std::size_t slot_of(tier_id t) const {
    for (std::size_t k = 0; k < slots_.size(); ++k)
      if (slots_[k].tier == t) return k;
    throw access_error("tensor '" + name_ + "': tier '" + ctx_.tiers().name(t) +
                       "' is not in its placement");
  }
  const std::optional<shard_spec>& shard() const noexcept { return shard_; }
  context& ctx() const noexcept { return ctx_; }
  bool valid_at(std::size_t k) const noexcept { return slots_[k].valid; }
  /// The home's handle in the context's NVMe store (meaningful when the home is a file tier).
  io::nvme_store::handle home_file() const noexcept { return slots_.back().file; }
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
    dst.ready = copy(dst, src, "fetch " + name_, std::move(into_free));
    src.reads = still_reading(src);
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
      // Nothing usable arrived; the next acquire tries again. If a write-back to home failed,
      // home still holds its last committed value (the NVMe tier writes copy-on-write): this
      // acquire reports the failure, later ones read that value.
      slot& h = slots_[home()];
      if (h.ready.failure()) h.ready = {};
      if (k != home()) evict(k, {});
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
      std::vector<event> after = still_reading(h);
      after.push_back(h.ready);
      after.push_back(fence);
      h.ready = copy(h, s, "write back " + name_, std::move(after));
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
                         ctx_.tiers().name(s.tier) + "' while a lease on it is held");
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
  void assign(const void* src) { write_from(src, tier_id::host, {}).wait(); }

  /// Starts overwriting the tensor's home with `bytes()` bytes at `src` on tier `from`, after
  /// the events in `after`; `src` must stay valid until the returned event completes. Copies
  /// on other tiers are dropped. (Executors use it to land reduced gradients at home.)
  event write_from(const void* src, tier_id from, std::vector<event> after) {
    check_conflicts(home(), true);
    for (std::size_t i = 0; i < home(); ++i)
      if (slots_[i].valid) evict(i, {});
    slot& h = slots_[home()];
    auto reading = still_reading(h);
    after.insert(after.end(), reading.begin(), reading.end());
    after.push_back(h.ready);
    slot user(from);
    user.ptr = const_cast<void*>(src);  // only read from: it is the source of the copy
    h.ready = copy(h, user, "write " + name_, std::move(after));
    h.reads.clear();
    h.valid = true;
    return h.ready;
  }

  /// Slot k's memory (null on a file tier or when the slot holds nothing).
  void* ptr_at(std::size_t k) const noexcept { return slots_[k].ptr; }

  /// The event after which slot k holds the value (its fetch, or the write into it).
  const event& ready_at(std::size_t k) const noexcept { return slots_[k].ready; }

  /// Copies the current value into host memory (waits).
  void read(void* dst) {
    check_conflicts(home(), false);
    slot& h = slots_[home()];
    try {
      h.ready.wait();
    } catch (...) {
      h.ready = {};  // reported once; home keeps its last committed value (see acquire)
      throw;
    }
    slot user(tier_id::host);
    user.ptr = dst;
    event e = copy(user, h, "read " + name_, {});
    h.reads.push_back(e);
    e.wait();
  }

private:
  struct slot {
    explicit slot(tier_id t) : tier(t) {}
    tier_id tier;
    buffer owned;                // memory this tensor allocated on the tier
    void* ptr = nullptr;         // owned.data(), or memory borrowed from a sequence's ring
    io::nvme_store::handle file = 0;  // on tier nvme: the data's handle in the context's store
    bool valid = false;          // holds the current value
    event ready;                 // the copy that filled it (or the compute that wrote it)
    std::vector<event> reads;    // copies still reading it
    std::vector<event> last_use; // for borrowed memory: when the lender may reuse it
    int readers = 0;
    bool writer = false;
    std::shared_ptr<const void> token;  // alive while leases are out: views check it
  };

  bool is_file(tier_id t) const { return !ctx_.tiers().info(t).addressable(); }

  // One copy between two slots, whatever their tiers: memory to memory, or to/from the NVMe
  // tier's store.
  event copy(slot& dst, const slot& src, std::string label, std::vector<event> after) {
    copy_engine& c = ctx_.copies();
    if (is_file(src.tier))
      return c.read_nvme(dst.ptr, dst.tier, src.file, bytes_, std::move(label), std::move(after));
    if (is_file(dst.tier))
      return c.write_nvme(dst.file, src.ptr, src.tier, bytes_, std::move(label), std::move(after));
    return c.copy(dst.ptr, dst.tier, src.ptr, src.tier, bytes_, std::move(label),
                  std::move(after));
  }

  // The copies reading `s` that are still running. A write into `s` waits for them (write after
  // read) — but only for those: a read that already finished, or failed (its own caller has
  // heard of it), must not hold up or fail the write.
  static std::vector<event> still_reading(const slot& s) {
    std::vector<event> running;
    for (auto& e : s.reads)
      if (!e.ready()) running.push_back(e);
    return running;
  }

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
                           " lease on tier '" + ctx_.tiers().name(slots_[k].tier) +
                           "' conflicts with the " + (o.writer ? "read_write" : "read_only") +
                           " lease held on tier '" + ctx_.tiers().name(o.tier) +
                           "' (a read_write lease is exclusive)");
    }
  }

  context& ctx_;
  std::string name_;
  strata::shape shape_;
  std::size_t bytes_;
  std::optional<shard_spec> shard_;
  std::vector<slot> slots_;
};

}  // namespace detail
STRATA_NAMESPACE_END
