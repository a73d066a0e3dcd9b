// strata/tensor/lease.hpp — the RAII right to use a tensor's memory on one tier.
//
// While a lease lives, the data stays where it is. Dropping it (or calling release()) lets the
// tensor write dirty data back to its home tier and evict the copy. A lease taken with
// `read_write` marks the data dirty; one taken with `read_only` (the default) does not, and its
// view is const. Leases are move-only.
#pragma once

#include <strata/tensor/detail/tensor_core.hpp>
#include <strata/tensor/view.hpp>

#include <memory>

STRATA_NAMESPACE_BEGIN

/// Access-mode tags, passed as arguments: `t.acquire<tier::device>(strata::read_write)`.
struct read_only_t {
  explicit read_only_t() = default;
};
struct read_write_t {
  explicit read_write_t() = default;
};
inline constexpr read_only_t read_only{};
inline constexpr read_write_t read_write{};

class tensor_ref;

/// [[nodiscard]]: a lease dropped at once fetches, waits and releases for nothing.
template <class T, memory_tier Tier>
class [[nodiscard]] lease {
public:
  lease() = default;
  lease(lease&& o) noexcept
      : core_(std::move(o.core_)), slot_(o.slot_), view_(std::move(o.view_)) {}
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      release();
      core_ = std::move(o.core_);
      slot_ = o.slot_;
      view_ = std::move(o.view_);
    }
    return *this;
  }
  ~lease() { release(); }

  /// Ends the lease now (the destructor does it otherwise). Views from it die with it.
  void release() noexcept {
    if (!core_) return;
    auto core = std::move(core_);
    view_ = {};
    try {
      core->release(slot_, writable);
    } catch (...) {  // a write-back that cannot even be queued: the tensor keeps it dirty
    }
  }

  static constexpr bool writable = !std::is_const_v<T>;
  const strata::view<T, Tier>& view() const noexcept { return view_; }
  T* data() const noexcept { return view_.data(); }
  const strata::shape& shape() const noexcept { return view_.shape(); }
  explicit operator bool() const noexcept { return core_ != nullptr; }

private:
  template <class, class, class>
  friend class tiered_tensor;
  friend class tensor_ref;
  lease(std::shared_ptr<detail::tensor_core> core, std::size_t slot)
      : core_(std::move(core)), slot_(slot) {
    auto [ptr, token] = core_->acquire(slot_, writable);
    view_ = strata::view<T, Tier>(static_cast<T*>(ptr), core_->shape(), token);
  }

  std::shared_ptr<detail::tensor_core> core_;
  std::size_t slot_ = 0;
  strata::view<T, Tier> view_;
};

STRATA_NAMESPACE_END
