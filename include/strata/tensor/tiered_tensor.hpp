// strata/tensor/tiered_tensor.hpp — the central type: a tensor that lives on tiers.
//
//   strata::tiered_tensor<T, Placement, Prefetch>
//
//   T          the element type (float, f16, bf16, std::int8_t, int4x2, ... trivially copyable)
//   Placement  tiers from compute tier to home tier, and the partition (placement.hpp)
//   Prefetch   prefetch::none, or prefetch::lookahead<Depth> when walked in a tensor_sequence
//
// The data lives on the home tier. Compute sees it only through a lease taken on a tier of the
// placement (`acquire`), which fetches it there if needed; while the lease lives the data stays;
// when the last lease ends, a copy on a non-home tier is written back if it was leased
// read_write, and dropped. So a tensor occupies its compute tier only while it is leased or
// prefetched. Move-only; not thread-safe (one thread uses a tensor at a time); the context
// must outlive it. A tensor with a sharded placement is one rank's shard of a global tensor:
// it is made from a shard_layout and a rank, and its size is the shard's. Higher floors reach
// it through `ref()`, the public handle (tensor_ref.hpp). What does not live here: walking many
// tensors with lookahead (tensor_sequence.hpp), and moving shards between ranks (schedule/).
#pragma once

#include <strata/tensor/lease.hpp>
#include <strata/tensor/placement.hpp>
#include <strata/tensor/prefetch.hpp>
#include <strata/tensor/tensor_ref.hpp>

#include <span>
#include <vector>

STRATA_NAMESPACE_BEGIN

template <class T, class Placement = resident_on_device, class Prefetch = prefetch::none>
class tiered_tensor {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T>,
                "tiered_tensor<T, ...>: T must be a non-const trivially copyable element type "
                "(float, strata::f16, strata::bf16, std::int8_t, ...)");
  static_assert(placement_policy<Placement>,
                "tiered_tensor<T, Placement, ...>: Placement must be a strata::placement<...> "
                "(or an alias such as strata::offloaded_to_host)");
  static_assert(prefetch_policy<Prefetch>,
                "tiered_tensor<T, Placement, Prefetch>: Prefetch must be prefetch::none or "
                "prefetch::lookahead<Depth>");
  static_assert(Prefetch::depth == 0 || Placement::tier_count > 1,
                "tiered_tensor: lookahead prefetch needs a home tier below the compute tier to "
                "prefetch from, e.g. placement<tier::device, tier::host>; a single-tier placement "
                "takes prefetch::none");

public:
  using element_type = T;
  using placement_type = Placement;
  using prefetch_type = Prefetch;
  using compute_tier = typename Placement::compute_tier;
  using home_tier = typename Placement::home_tier;

  static constexpr bool sharded = Placement::partition_type::is_sharded;

  /// Allocates the tensor on its home tier (charged to that tier's budget) for `ctx`.
  tiered_tensor(context& ctx, std::string name, strata::shape s)
      : core_(std::make_shared<detail::tensor_core>(ctx, std::move(name), s, bytes_of<T>(s),
                                                    Placement::tiers.data(),
                                                    Placement::tier_count)) {
    static_assert(!sharded,
                  "tiered_tensor: a sharded placement's tensor is one rank's shard; make it from "
                  "a shard_layout and the rank: tiered_tensor(ctx, name, layout, rank)");
  }

  /// A sharded placement's tensor: rank `rank`'s shard of a flat global tensor split by
  /// `layout` (layout.shard_numel() elements, padding included).
  tiered_tensor(context& ctx, std::string name, const shard_layout& layout, int rank)
      : core_(make_shard(ctx, std::move(name), layout, rank)) {
    static_assert(sharded,
                  "tiered_tensor: a shard_layout makes a sharded tensor; use a sharded placement "
                  "(sharded_placement<...>) or the (ctx, name, shape) constructor");
  }

  tiered_tensor(tiered_tensor&&) noexcept = default;
  tiered_tensor& operator=(tiered_tensor&&) noexcept = default;
  tiered_tensor(const tiered_tensor&) = delete;
  tiered_tensor& operator=(const tiered_tensor&) = delete;

  const std::string& name() const noexcept { return core_->name(); }
  const strata::shape& shape() const noexcept { return core_->shape(); }
  std::size_t size() const noexcept { return core_->shape().numel(); }
  std::size_t size_bytes() const noexcept { return core_->bytes(); }

  /// A read-only lease on `Tier` (the compute tier by default): fetches and waits if needed.
  template <class Tier = compute_tier>
  [[nodiscard]] lease<const T, Tier> acquire(read_only_t = read_only) {
    check_tier<Tier>();
    return {core_, index_of<Tier>()};
  }

  /// A read_write lease on `Tier`: exclusive; the data is written back when it ends.
  template <class Tier = compute_tier>
  [[nodiscard]] lease<T, Tier> acquire(read_write_t) {
    check_tier<Tier>();
    return {core_, index_of<Tier>()};
  }

  /// Starts fetching to `Tier` without waiting; a later acquire there finds it in flight.
  template <class Tier = compute_tier>
  void prefetch() {
    check_tier<Tier>();
    core_->fetch(index_of<Tier>());
  }

  /// Drops the copy on `Tier` (not the home tier). Throws access_error while it is leased.
  template <class Tier = compute_tier>
  void evict() {
    check_tier<Tier>();
    core_->evict(index_of<Tier>(), {});
  }

  /// True when `Tier` holds the current value (fetched, or in flight).
  template <class Tier>
  bool holds() const {
    check_tier<Tier>();
    return core_->valid_at(index_of<Tier>());
  }

  /// Overwrites the whole tensor from host memory.
  void assign(std::span<const T> values) {
    if (values.size() != size())
      throw config_error("tensor '" + name() + "': assign of " + std::to_string(values.size()) +
                         " elements to a tensor of shape " + shape().to_string());
    core_->assign(values.data());
  }

  /// Copies the current value to host memory.
  void copy_to(std::span<T> out) const {
    if (out.size() != size())
      throw config_error("tensor '" + name() + "': copy_to a span of " +
                         std::to_string(out.size()) + " elements from shape " +
                         shape().to_string());
    core_->read(out.data());
  }
  std::vector<T> to_vector() const {
    std::vector<T> v(size());
    copy_to(v);
    return v;
  }

  /// The public handle: what the higher floors (executor, optimizers, checkpoints) use.
  tensor_ref ref() noexcept { return tensor_ref(core_.get()); }

private:
  static std::shared_ptr<detail::tensor_core> make_shard(context& ctx, std::string name,
                                                         const shard_layout& layout, int rank) {
    if (rank < 0 || rank >= layout.world())
      throw config_error("tensor '" + name + "': rank " + std::to_string(rank) +
                         " is outside the shard layout's world of " +
                         std::to_string(layout.world()));
    const strata::shape s{layout.shard_numel()};
    return std::make_shared<detail::tensor_core>(ctx, std::move(name), s, bytes_of<T>(s),
                                                 Placement::tiers.data(), Placement::tier_count,
                                                 shard_spec{layout, rank});
  }

  template <class Tier>
  static constexpr void check_tier() {
    static_assert(memory_tier<Tier>, "tiered_tensor: the template argument must be a tier");
    static_assert(Placement::template contains<Tier>,
                  "tiered_tensor: this tier is not in the tensor's placement; add it to the "
                  "placement's tier list (e.g. placement<tier::device, tier::pinned, tier::host>) "
                  "or acquire on a tier that is listed");
  }
  template <class Tier>
  static constexpr std::size_t index_of() {
    return Placement::index_of(Tier::id);
  }

  std::shared_ptr<detail::tensor_core> core_;
};

STRATA_NAMESPACE_END
