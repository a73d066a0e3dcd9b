// strata/tensor/view.hpp — what compute sees: a pointer and a shape on one tier.
//
// A view is handed out by a lease and is valid while that lease lives. It knows its tier at
// compile time: element access from host code compiles only for host-accessible tiers (device
// memory goes to kernels by `data()`). Every view also carries a token of its lease, so
// `alive()` tells whether the lease still stands, and the checked accessors (`operator[]`,
// `span()`) throw access_error instead of touching memory that has been evicted. `data()` is
// unchecked: the raw pointer for kernels and BLAS. Where the standard library has mdspan,
// `mdspan<Rank>()` gives a multidimensional view of the same memory.
#pragma once

#include <strata/core/error.hpp>
#include <strata/core/shape.hpp>
#include <strata/memory/tier.hpp>

#include <memory>
#include <span>
#include <string>
#include <type_traits>

#if __has_include(<mdspan>)
#  include <mdspan>
#endif

STRATA_NAMESPACE_BEGIN

template <class T, memory_tier Tier>
class view {
public:
  using element_type = T;
  using tier_type = Tier;

  view() = default;
  view(T* data, strata::shape s, std::weak_ptr<const void> token)
      : data_(data), shape_(s), token_(std::move(token)) {}

  /// A read-only view of the same memory.
  template <class U = T>
    requires(!std::is_const_v<U>)
  operator view<const U, Tier>() const {
    return {data_, shape_, token_};
  }

  T* data() const noexcept { return data_; }
  const strata::shape& shape() const noexcept { return shape_; }
  std::size_t size() const noexcept { return shape_.numel(); }
  std::size_t size_bytes() const noexcept { return shape_.numel() * sizeof(T); }

  /// True while the lease that produced this view is held.
  bool alive() const noexcept { return !token_.expired(); }

  T& operator[](std::size_t i) const {
    static_assert(Tier::host_accessible,
                  "view: this tier is not host-accessible; host code cannot index device or nvme "
                  "memory. Pass data() to a kernel, or acquire the tensor on tier::host or "
                  "tier::pinned");
    check_alive();
    return data_[i];
  }

  std::span<T> span() const {
    static_assert(Tier::host_accessible,
                  "view: this tier is not host-accessible; host code cannot read device or nvme "
                  "memory. Acquire the tensor on tier::host or tier::pinned");
    check_alive();
    return {data_, size()};
  }

#if defined(__cpp_lib_mdspan)
  template <std::size_t Rank>
  auto mdspan() const {
    check_alive();
    std::array<std::size_t, Rank> ext{};
    for (std::size_t i = 0; i < Rank; ++i) ext[i] = shape_[i];
    return std::mdspan<T, std::dextents<std::size_t, Rank>>(data_, ext);
  }
#endif

private:
  void check_alive() const {
    if (token_.expired())
      throw access_error(std::string("view on tier '") + Tier::name + "' of shape " +
                         shape_.to_string() + " used after its lease was released");
  }

  T* data_ = nullptr;
  strata::shape shape_{};
  std::weak_ptr<const void> token_;
};

STRATA_NAMESPACE_END
