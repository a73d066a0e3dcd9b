// strata/tensor/tensor_ref.hpp — the public handle to a tiered tensor: what higher floors may
// do with a tensor without knowing its element type or placement.
//
//   tiered_tensor<float, offloaded_to_nvme> t(ctx, "w", shape{n});
//   tensor_ref r = t.ref();
//   r.fetch_into(tier_id::device, ring_buffer, ring_free);   // borrow a buffer of the caller's
//   auto l = r.acquire<const float, tier::device>();        // lease it there (waits)
//   ...; l.release();
//   ring_free = r.take_last_use(tier_id::device);           // the buffer is the caller's again
//
// The schedule, optim, checkpoint and infer floors reach tensors only through this handle
// (never through detail::tensor_core, which stays private to this floor), as cuCollections'
// static_map_ref is the device-side face of a static_map. A tensor_ref is a non-owning view of
// one tensor: cheap to copy, valid while the tensor lives (a moved-from tensor's refs stay valid:
// the state does not move). Tiers are runtime ids here (the handle is type-erased); every call
// naming a tier that is not in the tensor's placement throws access_error naming both.
//
// Rules of the state machine (detail/tensor_core.hpp), as the handle's user sees them:
//  - The home tier always holds memory (or, for a file tier, an extent in the context's store)
//    and the current value, except while a read_write lease on another tier is out.
//  - A fetch copies from the nearest tier below that holds the value; copies are ordered by
//    events, so a fetch may be issued before the data it reads has arrived.
//  - Memory lent with fetch_into stays the caller's: after the copy on that tier is dropped
//    (evict, or the end of its last lease), take_last_use gives the events after which the
//    caller may reuse it.
// Not thread-safe, like the tensor: one thread uses a tensor and its refs at a time.
#pragma once

#include <strata/tensor/lease.hpp>

#include <optional>
#include <vector>

STRATA_NAMESPACE_BEGIN

class tensor_ref {
public:
  tensor_ref() = default;

  /// Identity: name, shape, bytes (of this rank's part for a sharded tensor).
  const std::string& name() const noexcept { return core_->name(); }
  const strata::shape& shape() const noexcept { return core_->shape(); }
  std::size_t bytes() const noexcept { return core_->bytes(); }

  /// The placement's tiers, compute tier first (k = 0) and home last.
  std::size_t tier_count() const noexcept { return core_->slot_count(); }
  tier_id tier(std::size_t k) const noexcept { return core_->tier_at(k); }
  tier_id compute_tier() const noexcept { return core_->tier_at(0); }
  tier_id home_tier() const noexcept { return core_->tier_at(core_->home()); }
  bool has_tier(tier_id t) const noexcept {
    for (std::size_t k = 0; k < tier_count(); ++k)
      if (tier(k) == t) return true;
    return false;
  }

  /// For a tensor with a sharded placement: which shard of which global layout it holds (the
  /// global element count, world size, this rank, its offset and real elements). Empty for a
  /// replicated tensor.
  const std::optional<shard_spec>& shard() const noexcept { return core_->shard(); }

  /// True when tier t holds the current value (fetched, or in flight).
  bool holds(tier_id t) const { return core_->valid_at(core_->slot_of(t)); }
  /// True while any lease on the tensor is out.
  bool leased() const noexcept { return core_->leased(); }
  /// The memory of the copy on tier t (null on a file tier, or when t holds nothing).
  void* data(tier_id t) const { return core_->ptr_at(core_->slot_of(t)); }
  /// The event after which tier t holds the value (its fetch, or the write into it).
  const event& ready(tier_id t) const { return core_->ready_at(core_->slot_of(t)); }
  /// The home's extent in the context's NVMe store (a file home only): a checkpoint may copy
  /// its committed bytes file to file.
  io::nvme_store::handle home_file() const noexcept { return core_->home_file(); }

  /// Starts bringing the current value to tier t in memory the tensor allocates there (charged
  /// to t's budget); does nothing when t already holds it.
  void fetch(tier_id t) { core_->fetch(core_->slot_of(t)); }
  /// Starts bringing the current value to tier t into `buffer` (bytes() bytes on t, the
  /// caller's), after the events in `buffer_free`. The buffer stays the caller's: see
  /// take_last_use.
  void fetch_into(tier_id t, void* buffer, std::vector<event> buffer_free) {
    core_->fetch(core_->slot_of(t), buffer, std::move(buffer_free));
  }
  /// For a buffer lent with fetch_into and since dropped: the events after which the caller may
  /// reuse it. Dropping them would let the caller overwrite memory a copy still reads.
  [[nodiscard]] std::vector<event> take_last_use(tier_id t) {
    return core_->take_last_use(core_->slot_of(t));
  }
  /// Drops the copy on tier t (not the home) once the events in `after` are done with it.
  /// access_error while a lease on t is out.
  void evict(tier_id t, std::vector<event> after = {}) {
    core_->evict(core_->slot_of(t), std::move(after));
  }

  /// Starts overwriting the home with bytes() bytes at `src` on tier `from`, after the events
  /// in `after`; `src` stays valid until the returned event completes. Copies on other tiers
  /// are dropped. A failed write leaves the home's previous value current.
  [[nodiscard]] event write_from(const void* src, tier_id from, std::vector<event> after) {
    return core_->write_from(src, from, std::move(after));
  }
  /// Copies the current value into `dst` (bytes() bytes of host memory); waits.
  void read(void* dst) { core_->read(dst); }

  /// A lease on Tier (fetching and waiting as needed): read-only for a const T, read_write
  /// (exclusive; written back when it ends) otherwise. T is the tensor's element type.
  template <class T, memory_tier Tier>
  [[nodiscard]] lease<T, Tier> acquire() {
    return lease<T, Tier>(core_->shared_from_this(), core_->slot_of(Tier::id));
  }

  explicit operator bool() const noexcept { return core_ != nullptr; }
  friend bool operator==(const tensor_ref& a, const tensor_ref& b) noexcept {
    return a.core_ == b.core_;
  }

private:
  template <class, class, class>
  friend class tiered_tensor;
  explicit tensor_ref(detail::tensor_core* core) noexcept : core_(core) {}

  detail::tensor_core* core_ = nullptr;
};

STRATA_NAMESPACE_END
