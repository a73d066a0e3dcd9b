// strata/memory/pool.hpp — a caching resource: freed blocks are kept for the next request.
//
// cudaHostAlloc and cudaMallocAsync are far too slow to call per tensor fetch, and a layer walk
// allocates the same sizes over and over. The pool keeps freed blocks in bins by exact size and
// hands them out again. When the upstream refuses (the emulated arena is full, cudaMallocAsync
// is out of memory), the pool first gives its idle blocks back and retries once, so cached
// memory never causes a failure by itself. Budgets sit above the pool (context.hpp): they count
// the bytes tensors hold, not the idle blocks kept here.
#pragma once

#include <strata/memory/resource.hpp>

#include <map>
#include <mutex>
#include <vector>

STRATA_NAMESPACE_BEGIN

class pool_resource final : public memory_resource {
public:
  explicit pool_resource(memory_resource& upstream) : upstream_(upstream) {}
  ~pool_resource() override { release_idle(); }
  pool_resource(const pool_resource&) = delete;
  pool_resource& operator=(const pool_resource&) = delete;

  void* allocate(std::size_t bytes, std::size_t alignment, std::string_view what) override {
    const key k{bytes, alignment};
    {
      std::lock_guard lock(mutex_);
      if (auto it = idle_.find(k); it != idle_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= bytes;
        return p;
      }
    }
    try {
      return upstream_.allocate(bytes, alignment, what);
    } catch (const error&) {
      if (release_idle() == 0) throw;
      return upstream_.allocate(bytes, alignment, what);
    }
  }

  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override {
    std::lock_guard lock(mutex_);
    try {
      idle_[key{bytes, alignment}].push_back(p);
      idle_bytes_ += bytes;
    } catch (...) {  // no memory for the bookkeeping: give the block straight back
      upstream_.deallocate(p, bytes, alignment);
    }
  }

  /// Returns every idle block to the upstream; the number of bytes given back.
  std::size_t release_idle() noexcept {
    std::lock_guard lock(mutex_);
    std::size_t freed = 0;
    for (auto& [k, blocks] : idle_) {
      for (void* p : blocks) upstream_.deallocate(p, k.bytes, k.alignment);
      freed += k.bytes * blocks.size();
    }
    idle_.clear();
    idle_bytes_ = 0;
    return freed;
  }

  std::size_t idle_bytes() const {
    std::lock_guard lock(mutex_);
    return idle_bytes_;
  }
  bool owns(const void* p, std::size_t bytes) const noexcept override {
    return upstream_.owns(p, bytes);
  }
  tier_id tier() const noexcept override { return upstream_.tier(); }

private:
  struct key {
    std::size_t bytes, alignment;
    friend auto operator<=>(const key&, const key&) = default;
  };
  memory_resource& upstream_;
  mutable std::mutex mutex_;
  std::map<key, std::vector<void*>> idle_;
  std::size_t idle_bytes_ = 0;
};

STRATA_NAMESPACE_END
