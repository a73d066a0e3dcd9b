// strata/memory/tier.hpp — the memory tiers as types, their traits, and the copy route per pair.
//
// A tier is an empty tag type with compile-time traits (Kokkos-style memory spaces):
//
//   id               its runtime value (tier_id), for tables, slots and messages
//   name             what messages call it
//   kind             device memory, host memory, or a file (reached only through an IO engine)
//   host_accessible  host code may dereference its memory
//   dma_capable      a GPU's DMA engine and O_DIRECT may use its memory directly (page-locked,
//                    aligned); copies between device memory or files and a tier without it go
//                    through a staging tier
//   speed_rank       smaller is faster; placements list tiers by it (compute tier first)
//   alignment        what its memory resource guarantees
//
// `copy_route<From, To>` says whether a copy between two tiers is direct or goes through the
// staging tier (pinned). Its primary template applies the rule `default_route` to the traits;
// a pair whose route differs specialises it, as Kokkos specialises MemorySpaceAccess per pair.
// The tier set is open: a new tier is a new type with these traits and an id of its own
// (e.g. `static constexpr tier_id id{8}`); the context's tier list (tier_list.hpp) builds its
// budgets, pools and route table from the types it is given. What does not live here: the
// memory itself (resource.hpp), the runtime table (tier_list.hpp) and the copies (exec/).
#pragma once

#include <strata/core/align.hpp>
#include <strata/core/config.hpp>

#include <concepts>
#include <cstdint>
#include <type_traits>

STRATA_NAMESPACE_BEGIN

/// A tier's runtime value. The four named tiers are the library's; the type is open (any value
/// of the underlying type is a valid tier_id), so a tier of your own takes another value.
enum class tier_id : std::uint8_t { device = 0, pinned = 1, host = 2, nvme = 3 };

/// How a tier's bytes are reached.
enum class tier_kind : std::uint8_t {
  device_memory,  // GPU memory (or the emulated device): only through copies and kernels
  host_memory,    // addressable host memory
  file,           // bytes in a file: only through the IO engine
};

namespace tier {

/// GPU memory; in the host build, the emulated device arena. Never dereferenced by host code:
/// data reaches it only through copies (and, on a GPU, kernels).
struct device {
  static constexpr tier_id id = tier_id::device;
  static constexpr const char* name = cuda_enabled ? "device" : "device (emulated)";
  static constexpr tier_kind kind = tier_kind::device_memory;
  static constexpr bool host_accessible = false;
  static constexpr bool dma_capable = true;  // device-to-device copies need no staging
  static constexpr int speed_rank = 0;
  static constexpr std::size_t alignment = 256;  // cudaMalloc's guarantee
};

/// Page-locked host memory: the only host memory a GPU can DMA from asynchronously, so every
/// staged route passes through it.
struct pinned {
  static constexpr tier_id id = tier_id::pinned;
  static constexpr const char* name = "pinned";
  static constexpr tier_kind kind = tier_kind::host_memory;
  static constexpr bool host_accessible = true;
  static constexpr bool dma_capable = true;
  static constexpr int speed_rank = 10;
  static constexpr std::size_t alignment = 4096;  // page size: also what O_DIRECT wants
};

/// Ordinary (pageable) host memory.
struct host {
  static constexpr tier_id id = tier_id::host;
  static constexpr const char* name = "host";
  static constexpr tier_kind kind = tier_kind::host_memory;
  static constexpr bool host_accessible = true;
  static constexpr bool dma_capable = false;
  static constexpr int speed_rank = 20;
  static constexpr std::size_t alignment = 64;  // a cache line, and AVX-512's width
};

/// Bytes in a file on local NVMe. Not addressable: reached only through the IO engine.
struct nvme {
  static constexpr tier_id id = tier_id::nvme;
  static constexpr const char* name = "nvme";
  static constexpr tier_kind kind = tier_kind::file;
  static constexpr bool host_accessible = false;
  static constexpr bool dma_capable = false;
  static constexpr int speed_rank = 30;
  static constexpr std::size_t alignment = 4096;  // O_DIRECT block alignment
};

/// The tier every staged route passes through.
using staging = pinned;

}  // namespace tier

template <class T>
concept memory_tier = std::is_empty_v<T> && requires {
  { T::id } -> std::convertible_to<tier_id>;
  { T::name } -> std::convertible_to<const char*>;
  { T::kind } -> std::convertible_to<tier_kind>;
  { T::host_accessible } -> std::convertible_to<bool>;
  { T::dma_capable } -> std::convertible_to<bool>;
  { T::speed_rank } -> std::convertible_to<int>;
  { T::alignment } -> std::convertible_to<std::size_t>;
} && is_pow2(T::alignment);

/// A tier's traits as a value: what the type-erased layers (tensor slots, the copy engine, the
/// context's table) know about a tier.
struct tier_info {
  tier_id id;
  const char* name;
  tier_kind kind;
  bool host_accessible;
  bool dma_capable;
  int speed_rank;
  std::size_t alignment;

  constexpr bool addressable() const noexcept { return kind != tier_kind::file; }
};

template <memory_tier T>
inline constexpr tier_info tier_info_of{T::id,          T::name,       T::kind,     T::host_accessible,
                                        T::dma_capable, T::speed_rank, T::alignment};

/// The name of one of the library's four tiers ("tier" for any other id; the context's table
/// knows the names of the tiers it was given).
constexpr const char* tier_name(tier_id t) noexcept {
  switch (t) {
  case tier_id::device: return tier::device::name;
  case tier_id::pinned: return tier::pinned::name;
  case tier_id::host: return tier::host::name;
  case tier_id::nvme: return tier::nvme::name;
  }
  return "tier";
}

/// How bytes get from one tier to another.
///  - direct: one copy (memcpy, cudaMemcpyAsync, a file read into the destination).
///  - staged: through bounded buffers of the `via` tier (the staging tier, pinned): pageable host
///    memory cannot be DMA'd asynchronously, and O_DIRECT wants aligned, locked buffers.
enum class route_kind : std::uint8_t { direct, staged };

struct route {
  route_kind kind;
  tier_id via;  // meaningful only when kind == staged
  friend constexpr bool operator==(route, route) = default;
};

/// The rule the primary copy_route applies: device memory and files need a DMA-capable partner
/// (a copy between them and any other tier goes through the staging tier); a file is never
/// copied to a file directly; everything else is one copy.
constexpr route default_route(const tier_info& from, const tier_info& to) noexcept {
  auto needs_dma_partner = [](const tier_info& t) { return t.kind != tier_kind::host_memory; };
  const bool file_to_file = from.kind == tier_kind::file && to.kind == tier_kind::file;
  if (file_to_file || (needs_dma_partner(from) && !to.dma_capable) ||
      (needs_dma_partner(to) && !from.dma_capable))
    return {route_kind::staged, tier::staging::id};
  return {route_kind::direct, from.id};
}

/// The route of one pair of tiers. Specialise it for a pair whose route the rule gets wrong.
template <memory_tier From, memory_tier To>
struct copy_route {
  static constexpr route value = default_route(tier_info_of<From>, tier_info_of<To>);
};

template <memory_tier From, memory_tier To>
inline constexpr route copy_route_v = copy_route<From, To>::value;
template <memory_tier From, memory_tier To>
inline constexpr bool direct_copy_v = copy_route_v<From, To>.kind == route_kind::direct;
template <memory_tier From, memory_tier To>
inline constexpr bool staged_copy_v = copy_route_v<From, To>.kind == route_kind::staged;

static_assert(memory_tier<tier::device> && memory_tier<tier::pinned> &&
              memory_tier<tier::host> && memory_tier<tier::nvme>);
static_assert(direct_copy_v<tier::pinned, tier::device>);
static_assert(staged_copy_v<tier::host, tier::device>);
static_assert(staged_copy_v<tier::nvme, tier::device>);
static_assert(direct_copy_v<tier::nvme, tier::pinned>);
static_assert(staged_copy_v<tier::host, tier::nvme>);
static_assert(direct_copy_v<tier::host, tier::host>);
static_assert(direct_copy_v<tier::device, tier::device>);

STRATA_NAMESPACE_END
