// strata/exec/staging_ring.hpp — the bounded set of pinned buffers that staged copies go through.
//
// Routes like device <- host and device <- nvme cannot move bytes in one DMA: they pass through
// pinned slots. The ring owns a fixed number of fixed-size slots, allocated once from the pinned
// tier (so they count in the pinned budget and in the memory plan) and lent to copies. A copy
// takes all the slots it wants at once or waits, so two queues sharing the ring never deadlock.
#pragma once

#include <strata/memory/buffer.hpp>

#include <condition_variable>
#include <mutex>
#include <vector>

STRATA_NAMESPACE_BEGIN

class staging_ring {
public:
  staging_ring(memory_resource& pinned, std::size_t slot_bytes, std::size_t slots) {
    if (slots == 0 || slot_bytes == 0)
      throw config_error("staging ring: needs at least one slot of at least one byte (got " +
                         std::to_string(slots) + " slots of " + format_bytes(slot_bytes) + ")");
    slot_bytes_ = align_up(slot_bytes, tier::pinned::alignment);
    for (std::size_t i = 0; i < slots; ++i) {
      buffers_.emplace_back(pinned, slot_bytes_, tier::pinned::alignment, "staging ring");
      free_.push_back(buffers_.back().data());
    }
  }

  /// Slots lent to one copy; given back on destruction.
  class lease {
  public:
    lease(staging_ring& ring, std::vector<void*> slots) : ring_(&ring), slots_(std::move(slots)) {}
    lease(lease&& o) noexcept : ring_(std::exchange(o.ring_, nullptr)), slots_(std::move(o.slots_)) {}
    lease& operator=(lease&&) = delete;
    ~lease() {
      if (ring_) ring_->give_back(slots_);
    }
    std::size_t count() const noexcept { return slots_.size(); }
    std::byte* operator[](std::size_t i) const noexcept { return static_cast<std::byte*>(slots_[i]); }

  private:
    staging_ring* ring_;
    std::vector<void*> slots_;
  };

  /// Takes min(wanted, slot count) slots, waiting until that many are free together.
  lease acquire(std::size_t wanted) {
    const std::size_t n = wanted < buffers_.size() ? wanted : buffers_.size();
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return free_.size() >= n; });
    std::vector<void*> got(free_.end() - static_cast<std::ptrdiff_t>(n), free_.end());
    free_.resize(free_.size() - n);
    return lease(*this, std::move(got));
  }

  std::size_t slot_bytes() const noexcept { return slot_bytes_; }
  std::size_t slots() const noexcept { return buffers_.size(); }
  std::size_t total_bytes() const noexcept { return slot_bytes_ * buffers_.size(); }

private:
  void give_back(const std::vector<void*>& slots) {
    {
      std::lock_guard lock(mutex_);
      free_.insert(free_.end(), slots.begin(), slots.end());
    }
    cv_.notify_all();
  }

  std::size_t slot_bytes_ = 0;
  std::vector<buffer> buffers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<void*> free_;
};

STRATA_NAMESPACE_END
