// strata/memory/resource.hpp — where a tier's bytes come from.
//
// A memory_resource hands out raw blocks for one tier. The ones here are the upstreams:
// aligned host memory, pinned memory (cudaHostAlloc in the CUDA build, page-aligned host memory
// in the host build) and device memory (cudaMallocAsync, or the emulated device arena in
// emulated_device.hpp). Budgets and caching are layered on top (budgeted_resource here,
// pool_resource in pool.hpp); tensors never call these directly — they go through the context.
#pragma once

#include <strata/core/align.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/budget.hpp>
#include <strata/memory/tier.hpp>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

STRATA_NAMESPACE_BEGIN

class memory_resource {
public:
  virtual ~memory_resource() = default;
  /// Returns at least `bytes` bytes aligned to `alignment`, or throws (out_of_budget, or
  /// strata::error when the system refuses). `what` names the asker for error messages.
  virtual void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) = 0;
  virtual void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept = 0;
  /// True if `p .. p+bytes` lies in memory this resource handed out (when it can tell).
  virtual bool owns(const void* p, std::size_t bytes) const noexcept {
    (void)p, (void)bytes;
    return true;
  }
  virtual tier_id tier() const noexcept = 0;
};

/// Pageable host memory, aligned (posix_memalign). `tier`: the tier it serves (host, or a
/// host-memory tier of your own).
class aligned_host_resource final : public memory_resource {
public:
  explicit aligned_host_resource(tier_id tier = tier_id::host) noexcept : tier_(tier) {}
  void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) override {
    void* p = nullptr;
    if (posix_memalign(&p, alignment < sizeof(void*) ? sizeof(void*) : alignment,
                       bytes ? bytes : 1) != 0)
      throw error("host allocation of " + format_bytes(bytes) + " for '" + std::string(what) +
                  "' failed");
    return p;
  }
  void deallocate(void* p, std::size_t, std::size_t) noexcept override { std::free(p); }
  tier_id tier() const noexcept override { return tier_; }

private:
  tier_id tier_;
};

/// Page-locked host memory. In the host build there is no DMA engine to lock pages for, so it
/// is page-aligned host memory with the same alignment and the same budget.
class pinned_resource final : public memory_resource {
public:
  void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) override {
    if (alignment > tier::pinned::alignment)
      throw config_error("pinned allocation for '" + std::string(what) + "' asks for " +
                         std::to_string(alignment) + "-byte alignment; pages give 4096");
#if STRATA_ENABLE_CUDA
    void* p = nullptr;
    check_cuda(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable),
               "cudaHostAlloc of " + format_bytes(bytes) + " for '" + std::string(what) + "'");
    return p;
#else
    return host_.allocate(bytes, tier::pinned::alignment, what);
#endif
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override {
#if STRATA_ENABLE_CUDA
    (void)bytes, (void)alignment;
    cudaFreeHost(p);
#else
    host_.deallocate(p, bytes, alignment);
#endif
  }
  tier_id tier() const noexcept override { return tier_id::pinned; }

private:
#if !STRATA_ENABLE_CUDA
  aligned_host_resource host_;
#endif
};

#if STRATA_ENABLE_CUDA
/// GPU memory from the device's stream-ordered allocator (cudaMallocAsync), made usable at
/// once by synchronising the allocation stream, so any stream may use the block. It remembers
/// every block it handed out, so owns() is exact, as the emulated arena's is: a host pointer, or
/// device memory this context did not allocate, passed off as the context's device memory is an
/// access_error in the copy engine, not a copy (or a fault) on the GPU.
class cuda_device_resource final : public memory_resource {
public:
  explicit cuda_device_resource(int device = 0) : device_(device) {}
  void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) override {
    if (alignment > tier::device::alignment)
      throw config_error("device allocation for '" + std::string(what) + "' asks for " +
                         std::to_string(alignment) + "-byte alignment; cudaMalloc gives 256");
    // Left current, not restored: switching a thread back to a device it never used would
    // create that device's primary context (the cost the copy queues' start hook avoids).
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    void* p = nullptr;
    const std::string ctx = "cudaMallocAsync of " + format_bytes(bytes) + " for '" +
                            std::string(what) + "'";
    check_cuda(cudaMallocAsync(&p, bytes ? bytes : 1, cudaStreamPerThread), ctx);
    check_cuda(cudaStreamSynchronize(cudaStreamPerThread), ctx);
    try {
      std::lock_guard lock(mutex_);
      blocks_.emplace(reinterpret_cast<std::uintptr_t>(p), bytes ? bytes : 1);
    } catch (...) {
      cudaFreeAsync(p, cudaStreamPerThread);
      throw;
    }
    return p;
  }
  void deallocate(void* p, std::size_t, std::size_t) noexcept override {
    {
      std::lock_guard lock(mutex_);
      blocks_.erase(reinterpret_cast<std::uintptr_t>(p));
    }
    cudaSetDevice(device_);
    cudaFreeAsync(p, cudaStreamPerThread);
    cudaStreamSynchronize(cudaStreamPerThread);
  }
  /// True if p .. p+bytes lies inside one block this resource allocated and has not freed.
  bool owns(const void* p, std::size_t bytes) const noexcept override {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    std::lock_guard lock(mutex_);
    auto it = blocks_.upper_bound(a);
    if (it == blocks_.begin()) return false;
    --it;
    return a - it->first <= it->second && bytes <= it->second - (a - it->first);
  }
  tier_id tier() const noexcept override { return tier_id::device; }

private:
  int device_;
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, std::size_t> blocks_;  // address -> bytes of each live block
};
#endif

/// Charges every allocation of an upstream resource to a tier budget first, so a budget
/// overrun is an out_of_budget naming the asker, not a failure deep inside the system.
class budgeted_resource final : public memory_resource {
public:
  budgeted_resource(memory_resource& upstream, tier_budget& budget)
      : upstream_(upstream), budget_(budget) {}
  void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) override {
    budget_.reserve(bytes, what);
    try {
      return upstream_.allocate(bytes, alignment, what);
    } catch (...) {
      budget_.release(bytes);
      throw;
    }
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override {
    upstream_.deallocate(p, bytes, alignment);
    budget_.release(bytes);
  }
  bool owns(const void* p, std::size_t bytes) const noexcept override {
    return upstream_.owns(p, bytes);
  }
  tier_id tier() const noexcept override { return upstream_.tier(); }

private:
  memory_resource& upstream_;
  tier_budget& budget_;
};

STRATA_NAMESPACE_END
