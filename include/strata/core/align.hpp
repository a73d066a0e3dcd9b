// strata/core/align.hpp — alignment arithmetic shared by the memory resources and IO.
//
// Alignments are powers of two; every helper is constexpr so tier traits can use them.
#pragma once

#include <strata/core/config.hpp>

#include <cstdint>

STRATA_NAMESPACE_BEGIN

constexpr bool is_pow2(std::size_t x) noexcept { return x != 0 && (x & (x - 1)) == 0; }

/// Smallest multiple of `alignment` (a power of two) that is >= n.
constexpr std::size_t align_up(std::size_t n, std::size_t alignment) noexcept {
  return (n + alignment - 1) & ~(alignment - 1);
}

/// Largest multiple of `alignment` (a power of two) that is <= n.
constexpr std::size_t align_down(std::size_t n, std::size_t alignment) noexcept {
  return n & ~(alignment - 1);
}

inline bool is_aligned(const void* p, std::size_t alignment) noexcept {
  return (reinterpret_cast<std::uintptr_t>(p) & (alignment - 1)) == 0;
}

constexpr bool is_aligned(std::size_t n, std::size_t alignment) noexcept {
  return (n & (alignment - 1)) == 0;
}

STRATA_NAMESPACE_END
