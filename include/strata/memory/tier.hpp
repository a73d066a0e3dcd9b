// strata/memory/tier.hpp — the memory tiers as types, their traits, and the copy route per pair.
//
// A tier is an empty tag type with compile-time traits (Kokkos-style memory spaces): its name,
// who can touch it (host code, device kernels), its default alignment. `tier_id` is the same
// list as a runtime value, for tables and messages. `copy_route<From, To>` says whether a copy
// between two tiers is direct or goes through a staging tier (device <- nvme stages through
// pinned). What does not live here: the memory itself (resource.hpp) and the copies (exec/).
#pragma once

#include <strata/core/align.hpp>
#include <strata/core/config.hpp>

#include <concepts>
#include <cstdint>
#include <type_traits>

STRATA_NAMESPACE_BEGIN

enum class tier_id : std::uint8_t { device = 0, pinned = 1, host = 2, nvme = 3 };
inline constexpr std::size_t tier_count = 4;

constexpr const char* tier_name(tier_id t) noexcept {
  switch (t) {
  case tier_id::device: return cuda_enabled ? "device" : "device (emulated)";
  case tier_id::pinned: return "pinned";
  case tier_id::host: return "host";
  case tier_id::nvme: return "nvme";
  }
  return "?";
}

namespace tier {

/// GPU memory; in the host build, the emulated device arena. Never dereferenced by host code:
/// data reaches it only through copies (and, on a GPU, kernels).
struct device {
  static constexpr tier_id id = tier_id::device;
  static constexpr bool host_accessible = false;
  static constexpr std::size_t alignment = 256;  // cudaMalloc's guarantee
};

/// Page-locked host memory: the only host memory a GPU can DMA from asynchronously, so every
/// staged route passes through it.
struct pinned {
  static constexpr tier_id id = tier_id::pinned;
  static constexpr bool host_accessible = true;
  static constexpr std::size_t alignment = 4096;  // page size: also what O_DIRECT wants
};

/// Ordinary (pageable) host memory.
struct host {
  static constexpr tier_id id = tier_id::host;
  static constexpr bool host_accessible = true;
  static constexpr std::size_t alignment = 64;  // a cache line, and AVX-512's width
};

/// Bytes in a file on local NVMe. Not addressable: reached only through the IO engine.
struct nvme {
  static constexpr tier_id id = tier_id::nvme;
  static constexpr bool host_accessible = false;
  static constexpr std::size_t alignment = 4096;  // O_DIRECT block alignment
};

}  // namespace tier

template <class T>
concept memory_tier = requires {
  { T::id } -> std::convertible_to<tier_id>;
  { T::host_accessible } -> std::convertible_to<bool>;
  { T::alignment } -> std::convertible_to<std::size_t>;
} && std::is_empty_v<T> && is_pow2(T::alignment);

template <memory_tier T>
inline constexpr const char* tier_name_v = tier_name(T::id);

/// How bytes get from one tier to another.
///  - direct: one copy (memcpy, cudaMemcpyAsync, a file read into the destination).
///  - staged: through bounded buffers of the `via` tier (always pinned): pageable host memory
///    cannot be DMA'd asynchronously, and O_DIRECT wants aligned, locked buffers.
enum class route_kind : std::uint8_t { direct, staged };

struct route {
  route_kind kind;
  tier_id via;  // meaningful only when kind == staged
  friend constexpr bool operator==(route, route) = default;
};

constexpr route route_between(tier_id from, tier_id to) noexcept {
  using enum tier_id;
  const bool has_device = from == device || to == device;
  const bool has_nvme = from == nvme || to == nvme;
  const bool has_pinned = from == pinned || to == pinned;
  if (from == to && from != nvme) return {route_kind::direct, from};
  if (has_pinned) return {route_kind::direct, from};  // pinned reaches every tier in one copy
  if (has_device || has_nvme) return {route_kind::staged, pinned};
  return {route_kind::direct, from};  // host <-> host
}

/// The compile-time form of `route_between`.
template <memory_tier From, memory_tier To>
struct copy_route {
  static constexpr route value = route_between(From::id, To::id);
  static constexpr bool direct = value.kind == route_kind::direct;
  static constexpr bool staged = value.kind == route_kind::staged;
};

static_assert(memory_tier<tier::device> && memory_tier<tier::pinned> &&
              memory_tier<tier::host> && memory_tier<tier::nvme>);
static_assert(copy_route<tier::pinned, tier::device>::direct);
static_assert(copy_route<tier::host, tier::device>::staged);
static_assert(copy_route<tier::nvme, tier::device>::staged);
static_assert(copy_route<tier::nvme, tier::pinned>::direct);

STRATA_NAMESPACE_END
