// strata/memory/budget.hpp — how many bytes a tier may hold, and how many it holds now.
//
// One budget per tier lives in the context. Every allocation on a tier reserves its bytes
// here first; a reservation that does not fit throws out_of_budget naming the tier, what asked,
// the bytes requested and the bytes left. The peak is kept so a run can compare what it used
// against its memory plan.
#pragma once

#include <strata/core/error.hpp>
#include <strata/memory/tier.hpp>

#include <atomic>
#include <limits>

STRATA_NAMESPACE_BEGIN

class tier_budget {
public:
  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();

  /// `name`: what messages call the tier (its trait); the library's tiers are named by default.
  explicit tier_budget(tier_id tier, std::size_t limit = unlimited, const char* name = nullptr)
      : tier_(tier), name_(name ? name : ::strata::tier_name(tier)), limit_(limit) {}
  tier_budget(const tier_budget&) = delete;
  tier_budget& operator=(const tier_budget&) = delete;

  /// Takes `bytes` from the budget or throws out_of_budget; `what` names the asker.
  void reserve(std::size_t bytes, std::string_view what) {
    std::size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ || used > limit_ - bytes)
        throw out_of_budget(name_, bytes, used > limit_ ? 0 : limit_ - used, limit_,
                            what);
    } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
    std::size_t now = used + bytes, peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }

  void release(std::size_t bytes) noexcept { used_.fetch_sub(bytes, std::memory_order_relaxed); }

  tier_id tier() const noexcept { return tier_; }
  const char* tier_name() const noexcept { return name_; }
  std::size_t limit() const noexcept { return limit_; }
  std::size_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  std::size_t peak() const noexcept { return peak_.load(std::memory_order_relaxed); }
  std::size_t available() const noexcept {
    std::size_t u = used();
    return u > limit_ ? 0 : limit_ - u;
  }
  /// Starts a new peak measurement from the current use.
  void reset_peak() noexcept { peak_.store(used(), std::memory_order_relaxed); }

private:
  tier_id tier_;
  const char* name_;
  std::size_t limit_;
  std::atomic<std::size_t> used_{0};
  std::atomic<std::size_t> peak_{0};
};

STRATA_NAMESPACE_END
