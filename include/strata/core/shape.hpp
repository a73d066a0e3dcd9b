// strata/core/shape.hpp — the extents of a tensor and the byte sizes they imply.
//
// A shape is a small fixed-capacity list of extents (up to 8 dimensions, row-major).
// It carries no element type: byte sizes come from `bytes_of<T>(shape)`.
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/error.hpp>

#include <array>
#include <initializer_list>
#include <string>

STRATA_NAMESPACE_BEGIN

class shape {
public:
  static constexpr std::size_t max_rank = 8;

  constexpr shape() = default;
  constexpr shape(std::initializer_list<std::size_t> extents) {
    if (extents.size() > max_rank) throw config_error("shape: more than 8 dimensions");
    for (std::size_t e : extents) extents_[rank_++] = e;
  }

  constexpr std::size_t rank() const noexcept { return rank_; }
  constexpr std::size_t operator[](std::size_t i) const noexcept { return extents_[i]; }
  constexpr const std::size_t* begin() const noexcept { return extents_.data(); }
  constexpr const std::size_t* end() const noexcept { return extents_.data() + rank_; }

  /// Number of elements; a rank-0 shape is a scalar (1 element).
  constexpr std::size_t numel() const noexcept {
    std::size_t n = 1;
    for (std::size_t i = 0; i < rank_; ++i) n *= extents_[i];
    return n;
  }

  /// Row-major stride of dimension i, in elements.
  constexpr std::size_t stride(std::size_t i) const noexcept {
    std::size_t s = 1;
    for (std::size_t j = i + 1; j < rank_; ++j) s *= extents_[j];
    return s;
  }

  friend constexpr bool operator==(const shape& a, const shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (std::size_t i = 0; i < a.rank_; ++i)
      if (a.extents_[i] != b.extents_[i]) return false;
    return true;
  }

  /// "(2, 3, 4)"
  std::string to_string() const {
    std::string s = "(";
    for (std::size_t i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(extents_[i]);
    }
    return s + ")";
  }

private:
  std::array<std::size_t, max_rank> extents_{};
  std::size_t rank_ = 0;
};

/// Bytes that `s.numel()` elements of T occupy.
template <class T>
constexpr std::size_t bytes_of(const shape& s) noexcept {
  return s.numel() * sizeof(T);
}

STRATA_NAMESPACE_END
