// strata/tensor/placement.hpp — where a tensor may live, and how it is split across ranks.
//
// A placement lists tiers from the compute tier (first: where leases for compute are taken) to
// the home tier (last: where the data lives when nobody uses it), fastest first. Tiers in
// between are tiers a lease may also be taken on; copies between any two of them follow the
// route trait (device <- host stages through the pinned ring whether or not pinned is listed).
// The partition says how the tensor is divided across ranks: replicated (every rank holds all of
// it) or sharded (each rank's home holds 1/world of it, padded so any size divides — used by
// the ZeRO bundles in schedule/). Aliases for the common cases read like prose.
#pragma once

#include <strata/memory/tier.hpp>

#include <array>
#include <cstddef>
#include <type_traits>

STRATA_NAMESPACE_BEGIN

namespace partition {
/// Every rank holds the whole tensor.
struct replicated {
  static constexpr bool is_sharded = false;
};
/// Each rank holds a contiguous, padded 1/world slice; gathered before use.
struct sharded {
  static constexpr bool is_sharded = true;
};
}  // namespace partition

template <class P>
concept partition_policy = std::is_empty_v<P> && requires {
  { P::is_sharded } -> std::convertible_to<bool>;
};

namespace detail {
template <memory_tier... Tiers>
constexpr bool strictly_fastest_first() {
  constexpr std::array<int, sizeof...(Tiers)> ranks{Tiers::speed_rank...};
  for (std::size_t i = 1; i < ranks.size(); ++i)
    if (ranks[i] <= ranks[i - 1]) return false;
  return true;
}
template <class First, class...>
struct first_of {
  using type = First;
};
}  // namespace detail

template <class Partition, class... Tiers>
struct basic_placement {
  static_assert(sizeof...(Tiers) >= 1,
                "placement: list at least one tier, the compute tier first and the home tier "
                "last, e.g. placement<tier::device, tier::host>");
  static_assert((memory_tier<Tiers> && ...),
                "placement: every entry must be a tier (tier::device, tier::pinned, tier::host, "
                "tier::nvme)");
  static_assert(partition_policy<Partition>,
                "placement: the partition must be partition::replicated or partition::sharded");
  static_assert(detail::strictly_fastest_first<Tiers...>(),
                "placement: list each tier once, fastest first (by speed_rank: device, pinned, "
                "host, nvme): the compute tier first, the home tier last");

  using partition_type = Partition;
  using compute_tier = typename detail::first_of<Tiers...>::type;
  using home_tier = typename decltype((std::type_identity<Tiers>{}, ...))::type;
  static constexpr std::size_t tier_count = sizeof...(Tiers);
  static constexpr std::array<tier_id, sizeof...(Tiers)> tiers{Tiers::id...};

  static_assert(compute_tier::kind != tier_kind::file,
                "placement: the compute tier (first) must be addressable memory; nvme can only be "
                "a home tier, e.g. placement<tier::device, tier::pinned, tier::nvme>");

  template <class Tier>
  static constexpr bool contains = (std::is_same_v<Tier, Tiers> || ...);

  /// Position of a tier in the list (0 = compute tier); tier_count if absent.
  static constexpr std::size_t index_of(tier_id t) noexcept {
    for (std::size_t i = 0; i < tiers.size(); ++i)
      if (tiers[i] == t) return i;
    return tiers.size();
  }
};

template <class... Tiers>
using placement = basic_placement<partition::replicated, Tiers...>;
template <class... Tiers>
using sharded_placement = basic_placement<partition::sharded, Tiers...>;

/// Lives on the device; nothing moves.
using resident_on_device = placement<tier::device>;
/// Lives in pinned memory, leased on the device: one DMA per fetch.
using offloaded_to_pinned = placement<tier::device, tier::pinned>;
/// Lives in pageable host memory; fetches stage through the pinned ring.
using offloaded_to_host = placement<tier::device, tier::host>;
/// Lives in a file on NVMe; fetches read into pinned memory, then DMA to the device.
using offloaded_to_nvme = placement<tier::device, tier::pinned, tier::nvme>;
/// Lives in host memory and is computed on by the host (CPU optimizers).
using host_resident = placement<tier::host>;

namespace detail {
template <class T>
struct is_placement : std::false_type {};
template <class P, class... Ts>
struct is_placement<basic_placement<P, Ts...>> : std::true_type {};
}  // namespace detail

template <class P>
concept placement_policy = detail::is_placement<P>::value;

static_assert(placement_policy<offloaded_to_nvme> && placement_policy<resident_on_device>);
static_assert(std::is_same_v<offloaded_to_nvme::home_tier, tier::nvme>);
static_assert(std::is_same_v<offloaded_to_nvme::compute_tier, tier::device>);

STRATA_NAMESPACE_END
