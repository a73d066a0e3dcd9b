// strata/memory/default_resource.hpp — which memory resource serves each tier: a trait.
//
//   default_resource<Tier>::make(request)  ->  the tier's upstream resource (or null for a file
//                                              tier, whose bytes live behind an IO engine)
//
// The context calls it once per tier of its tier list and layers a budget and a pool over the
// result. The primary template serves any host-memory tier with aligned pageable memory, so a
// host-memory tier of your own needs nothing more; a device-memory tier of your own
// specialises it. What does not live here: the resources themselves (resource.hpp,
// emulated_device.hpp).
#pragma once

#include <strata/memory/resource.hpp>
#include <strata/memory/tier.hpp>
#if !STRATA_ENABLE_CUDA
#  include <strata/memory/emulated_device.hpp>
#endif

#include <memory>
#include <string>

STRATA_NAMESPACE_BEGIN

/// What a tier's resource may need to know: its budget (the emulated device's capacity) and
/// the CUDA device ordinal.
struct resource_request {
  std::size_t budget_bytes;
  int device;
};

template <memory_tier Tier>
struct default_resource {
  static std::unique_ptr<memory_resource> make(const resource_request&) {
    static_assert(Tier::kind != tier_kind::device_memory,
                  "default_resource: a device-memory tier of your own needs a specialisation "
                  "strata::default_resource<YourTier> whose make() returns its memory resource");
    if constexpr (Tier::kind == tier_kind::file)
      return nullptr;  // reached through the IO engine, not addresses
    else
      return std::make_unique<aligned_host_resource>(Tier::id);
  }
};

template <>
struct default_resource<tier::pinned> {
  static std::unique_ptr<memory_resource> make(const resource_request&) {
    return std::make_unique<pinned_resource>();
  }
};

template <>
struct default_resource<tier::device> {
  /// The CUDA build's GPU memory (refused with the reason when that GPU is not there), or the
  /// host build's emulated device arena of `budget_bytes`.
  static std::unique_ptr<memory_resource> make(const resource_request& r) {
#if STRATA_ENABLE_CUDA
    const cuda_discovery found = cuda_discover();
    if (found.devices <= r.device)
      throw config_error("context: CUDA device " + std::to_string(r.device) +
                         " is not available (" +
                         (found.devices > 0 ? std::to_string(found.devices) + " found"
                                            : found.why_none()) +
                         "; this build needs a GPU; use the host build to run on the emulated "
                         "device)");
    check_cuda(cudaSetDevice(r.device), "cudaSetDevice");
    return std::make_unique<cuda_device_resource>(r.device);
#else
    return std::make_unique<emulated_device_arena>(r.budget_bytes);
#endif
  }
};

STRATA_NAMESPACE_END
