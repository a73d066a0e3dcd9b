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
//
// Working parameters (stage 3): Working = float gathers the fp32 parameters themselves;
// Working = bf16 keeps a bf16 copy of each shard at home beside the fp32 master, written by
// every update, and the compute tier receives that copy — half the bytes fetched and gathered
// per walk. The masters, the gradients (reduced in fp32) and the optimizer state stay fp32.
// A bundle is a type: a bundle of placements, one per kind of state (DESIGN: "ZeRO stages are
// bundles of placements"). Its param_placement and grad_placement are sharded_placement<...>
// where the stage shards that state, so the executor's tensors are rank shards of a
// shard_layout (tensor/shard_layout.hpp) and their handles say so.
#pragma once

#include <strata/core/dtype.hpp>
#include <strata/tensor/placement.hpp>

#include <type_traits>

STRATA_NAMESPACE_BEGIN

namespace detail {
// Compute on the device, live at Home; a file home is reached through the staging tier.
template <class Partition, class Home>
struct placement_for_home {
  using type = std::conditional_t<Home::kind == tier_kind::file,
                                  basic_placement<Partition, tier::device, tier::staging, Home>,
                                  basic_placement<Partition, tier::device, Home>>;
};
template <class Partition>
struct placement_for_home<Partition, tier::device> {
  using type = basic_placement<Partition, tier::device>;
};
template <bool Sharded>
using partition_if = std::conditional_t<Sharded, partition::sharded, partition::replicated>;
}  // namespace detail

template <int Stage, class Home = tier::device, class Working = float>
struct zero_bundle {
  static_assert(Stage >= 0 && Stage <= 3, "zero_bundle<Stage, Home>: Stage is 0, 1, 2 or 3");
  static_assert(memory_tier<Home>,
                "zero_bundle<Stage, Home>: Home is a tier (tier::device, tier::pinned, "
                "tier::host or tier::nvme)");
  static_assert(Stage == 3 || Home::kind != tier_kind::file,
                "zero_bundle: an nvme home needs stage 3 (ZeRO-Infinity); stages 0-2 keep whole "
                "parameters at home and would stream every replica from the drive");
  static_assert(std::is_same_v<Working, float> || (std::is_same_v<Working, bf16> && Stage == 3),
                "zero_bundle<Stage, Home, Working>: Working is float, or bf16 for stage 3 (a bf16 "
                "copy of each parameter shard is what the walks gather)");
  static constexpr int stage = Stage;
  using home_tier = Home;
  /// The element type the compute tier receives (the walks' parameters).
  using working_type = Working;
  /// true: a bf16 working copy beside the fp32 masters (see the top).
  static constexpr bool narrow_working = !std::is_same_v<Working, float>;
  /// Where the parameters live: rank shards from stage 3 on, padded replicas before.
  using param_placement =
      typename detail::placement_for_home<detail::partition_if<(Stage >= 3)>, Home>::type;
  /// Where the gradients live: rank shards from stage 2 on, padded replicas before.
  using grad_placement =
      typename detail::placement_for_home<detail::partition_if<(Stage >= 2)>, Home>::type;
  /// The tier the optimizer updates on: home unless it is a file (then the staging tier).
  using optimizer_tier = std::conditional_t<Home::kind == tier_kind::file, tier::staging, Home>;
  static constexpr bool params_sharded = param_placement::partition_type::is_sharded;
  static constexpr bool grads_sharded = grad_placement::partition_type::is_sharded;
  /// The optimizer's state (fp32 masters, m, v) is this rank's slice from stage 1 on.
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
/// The same with bf16 working parameters (fp32 masters, m and v at home).
using zero3_offload_bf16 = zero_bundle<3, tier::host, bf16>;
using zero3_infinity_bf16 = zero_bundle<3, tier::nvme, bf16>;

namespace detail {
template <class T>
struct is_zero_bundle : std::false_type {};
template <int S, class H, class W>
struct is_zero_bundle<zero_bundle<S, H, W>> : std::true_type {};
}  // namespace detail

template <class B>
concept zero_policy = detail::is_zero_bundle<B>::value;

static_assert(zero_policy<zero3_infinity> && zero3_infinity::params_sharded);
static_assert(std::is_same_v<zero3_infinity::optimizer_tier, tier::pinned>);
static_assert(std::is_same_v<zero3_infinity::param_placement,
                             sharded_placement<tier::device, tier::pinned, tier::nvme>>);
static_assert(zero2::grads_sharded && !zero2::params_sharded);

STRATA_NAMESPACE_END
