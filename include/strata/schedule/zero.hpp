// strata/schedule/zero.hpp — ZeRO stages as bundles of placements.
//
// Training state comes in three kinds: parameters, gradients and optimizer state. ZeRO's stages
// say which of them are sharded across ranks, and the home tier says where the shards (or
// replicas) live between uses:
//
//   stage 0  nothing sharded: gradients all-reduced, every rank updates everything
//   stage 1  optimizer state sharded: each rank updates its slice, then parameters all-gathered
//   stage 2  + gradients sharded: reduce-scattered straight into each rank's slice
//   stage 3  + parameters sharded: all-gathered just before a layer runs, released after
//
// ZeRO-Offload is stage 2/3 with a host home; ZeRO-Infinity is stage 3 with an nvme home.
// A bundle is a type; the executor reads the placements from it.
#pragma once

#include <strata/tensor/placement.hpp>

#include <type_traits>

STRATA_NAMESPACE_BEGIN

namespace detail {
template <class Home>
struct placement_for_home {  // compute on the device, live at Home (through pinned for nvme)
  using type = placement<tier::device, Home>;
};
template <>
struct placement_for_home<tier::device> {
  using type = placement<tier::device>;
};
template <>
struct placement_for_home<tier::nvme> {
  using type = placement<tier::device, tier::pinned, tier::nvme>;
};
}  // namespace detail

template <int Stage, class Home = tier::device>
struct zero_bundle {
  static_assert(Stage >= 0 && Stage <= 3, "zero_bundle<Stage, Home>: Stage is 0, 1, 2 or 3");
  static_assert(memory_tier<Home>,
                "zero_bundle<Stage, Home>: Home is a tier (tier::device, tier::pinned, "
                "tier::host or tier::nvme)");
  static_assert(Stage == 3 || !std::is_same_v<Home, tier::nvme>,
                "zero_bundle: an nvme home needs stage 3 (ZeRO-Infinity); stages 0-2 keep whole "
                "parameters at home and would stream every replica from the drive");
  static constexpr int stage = Stage;
  using home_tier = Home;
  /// Where parameters (stage 3: shards; else replicas) and gradients live.
  using state_placement = typename detail::placement_for_home<Home>::type;
  /// The tier the optimizer updates on: home when the host can touch it, else pinned.
  using optimizer_tier = std::conditional_t<std::is_same_v<Home, tier::nvme>, tier::pinned, Home>;
  static constexpr bool params_sharded = Stage >= 3;
  static constexpr bool grads_sharded = Stage >= 2;
  static constexpr bool optimizer_sharded = Stage >= 1;
};

using zero0 = zero_bundle<0>;
using zero1 = zero_bundle<1>;
using zero2 = zero_bundle<2>;
using zero3 = zero_bundle<3>;
/// ZeRO-Offload: shards at home in host memory.
using zero3_offload = zero_bundle<3, tier::host>;
/// ZeRO-Infinity: shards at home on NVMe.
using zero3_infinity = zero_bundle<3, tier::nvme>;

namespace detail {
template <class T>
struct is_zero_bundle : std::false_type {};
template <int S, class H>
struct is_zero_bundle<zero_bundle<S, H>> : std::true_type {};
}  // namespace detail

template <class B>
concept zero_policy = detail::is_zero_bundle<B>::value;

static_assert(zero_policy<zero3_infinity> && zero3_infinity::params_sharded);
static_assert(std::is_same_v<zero3_infinity::optimizer_tier, tier::pinned>);

STRATA_NAMESPACE_END
