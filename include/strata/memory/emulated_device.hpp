// strata/memory/emulated_device.hpp — the device tier of the host build: a bounded arena.
//
// On a machine without a GPU, tier::device is this arena: one reserved block of host address
// space with a fixed capacity, carved first-fit into blocks and coalesced on free. It has the
// failure modes of real GPU memory — it fills up (out_of_budget, also from fragmentation), and
// a pointer either belongs to it or does not (copies check `owns`, so host memory passed off
// as device memory is an access_error). Data reaches it only through the copy queues.
// Not here: anything CUDA; in the CUDA build the device tier is cuda_device_resource.
#pragma once

#include <strata/core/align.hpp>
#include <strata/core/error.hpp>
#include <strata/memory/resource.hpp>

#include <sys/mman.h>

#include <iterator>
#include <map>
#include <mutex>

STRATA_NAMESPACE_BEGIN

class emulated_device_arena final : public memory_resource {
public:
  /// Reserves `capacity` bytes of address space; pages are committed only when touched.
  explicit emulated_device_arena(std::size_t capacity)
      : capacity_(align_up(capacity ? capacity : 1, tier::device::alignment)) {
    void* p = ::mmap(nullptr, capacity_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      throw error("emulated device: cannot reserve " + format_bytes(capacity_) +
                  " of address space");
    base_ = static_cast<std::byte*>(p);
    free_.emplace(0, capacity_);
  }
  ~emulated_device_arena() override { ::munmap(base_, capacity_); }
  emulated_device_arena(const emulated_device_arena&) = delete;
  emulated_device_arena& operator=(const emulated_device_arena&) = delete;

  void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) override {
    if (alignment > tier::device::alignment)
      throw config_error("emulated device allocation for '" + std::string(what) +
                         "' asks for " + std::to_string(alignment) + "-byte alignment; it gives " +
                         std::to_string(tier::device::alignment));
    const std::size_t size = align_up(bytes ? bytes : 1, tier::device::alignment);
    std::lock_guard lock(mutex_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < size) continue;
      const std::size_t offset = it->first, rest = it->second - size;
      free_.erase(it);
      if (rest) free_.emplace(offset + size, rest);
      used_.emplace(offset, size);
      return base_ + offset;
    }
    std::size_t largest = 0;
    for (auto& [off, len] : free_) largest = len > largest ? len : largest;
    // "available" is the largest free block: with a fragmented arena that is less than the
    // free total, and the message says so.
    const bool fragmented = largest < capacity_ - in_use_locked();
    throw out_of_budget(tier::device::name, bytes, largest, capacity_,
                        fragmented ? std::string(what) + " [arena fragmented]" : std::string(what));
  }

  void deallocate(void* p, std::size_t, std::size_t) noexcept override {
    std::lock_guard lock(mutex_);
    auto u = used_.find(static_cast<std::size_t>(static_cast<std::byte*>(p) - base_));
    if (u == used_.end()) return;  // not ours: nothing safe to do in a noexcept path
    std::size_t offset = u->first, size = u->second;
    used_.erase(u);
    // Coalesce with the free neighbours on both sides.
    auto next = free_.lower_bound(offset);
    if (next != free_.end() && offset + size == next->first) {
      size += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += size;
        return;
      }
    }
    free_.emplace(offset, size);
  }

  bool owns(const void* p, std::size_t bytes) const noexcept override {
    auto* b = static_cast<const std::byte*>(p);
    if (b < base_ || b + bytes > base_ + capacity_) return false;
    std::lock_guard lock(mutex_);
    auto it = used_.upper_bound(static_cast<std::size_t>(b - base_));
    if (it == used_.begin()) return false;
    --it;
    return static_cast<std::size_t>(b - base_) + bytes <= it->first + it->second;
  }

  tier_id tier() const noexcept override { return tier_id::device; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t in_use() const {
    std::lock_guard lock(mutex_);
    return in_use_locked();
  }

private:
  std::size_t in_use_locked() const {
    std::size_t n = 0;
    for (auto& [off, len] : used_) n += len;
    return n;
  }

  std::size_t capacity_;
  std::byte* base_ = nullptr;
  mutable std::mutex mutex_;
  std::map<std::size_t, std::size_t> free_;  // offset -> length, disjoint, coalesced
  std::map<std::size_t, std::size_t> used_;  // offset -> length
};

STRATA_NAMESPACE_END
