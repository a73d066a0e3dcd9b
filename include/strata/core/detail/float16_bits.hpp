// strata/core/detail/float16_bits.hpp — bit-level f32 <-> f16 / bf16 conversions.
//
// What lives here: the integer routines behind strata::to_f16 / to_bf16 / to_float, written
// on raw bit patterns so they are constexpr, give the same answer on host and device, and do
// not depend on the floating-point environment (rounding mode, FTZ/DAZ, -ffast-math).
// What does not: the public types and API (see core/dtype.hpp); nothing here is meant to be
// called directly by users.
//
// Every routine is branch-free (selects instead of ifs) so the bulk loops in dtype.hpp can be
// vectorised by the compiler, and scalar and bulk conversions share one definition.
#pragma once

#include <strata/core/config.hpp>

#include <cstdint>

#if !defined(__CUDACC__)
#  include <bit>
#endif

STRATA_NAMESPACE_BEGIN
namespace detail {

// nvcc treats std::bit_cast as a host-only constexpr function (calling it from a __device__
// function needs --expt-relaxed-constexpr); the builtin that implements it works everywhere.
template <class To, class From>
STRATA_HOST_DEVICE constexpr To bit_cast(const From& from) noexcept {
  static_assert(sizeof(To) == sizeof(From), "strata::detail::bit_cast: sizes differ");
#if defined(__CUDACC__)
  return __builtin_bit_cast(To, from);
#else
  return std::bit_cast<To>(from);
#endif
}

// ---- binary16 (IEEE half): 1 sign, 5 exponent (bias 15), 10 mantissa bits -----------------

inline constexpr std::uint32_t f32_abs_mask = 0x7fff'ffffu;
inline constexpr std::uint32_t f32_inf_bits = 0x7f80'0000u;

// |x| >= this (65520 = halfway between 65504, the largest half, and 2^16) rounds to Inf.
inline constexpr std::uint32_t f16_overflow_f32_bits = 0x477f'f000u;
// |x| < this (2^-14, the smallest normal half) encodes as a subnormal half or zero.
inline constexpr std::uint32_t f16_min_normal_f32_bits = 0x3880'0000u;

/// f32 -> binary16 bits, round to nearest, ties to even. NaN -> quiet NaN keeping the sign
/// and the top 9 payload bits; values >= 65520 in magnitude -> Inf; ±0 kept.
STRATA_HOST_DEVICE constexpr std::uint16_t f32_to_f16_bits(float value) noexcept {
  const std::uint32_t x = detail::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t a = x & f32_abs_mask;

  // Normal half: rebias the exponent (127 -> 15, i.e. subtract 112 << 23), then drop 13
  // mantissa bits with round-half-even. A carry out of the mantissa bumps the exponent, which
  // is the correct result. Only meaningful for 2^-14 <= |x| < 65520; the selects below pick
  // another branch elsewhere (the unsigned subtraction may wrap there, harmlessly).
  std::uint32_t normal = a - (112u << 23);
  normal = (normal + 0x0fffu + ((normal >> 13) & 1u)) >> 13;

  // Subnormal half: the value in units of 2^-24 is mant * 2^(e - 126), e the biased f32
  // exponent, so shift the 24-bit significand right by 126 - e and round half-even by hand.
  // Shifts past 25 all give 0 (the significand is < 2^24 <= half), so clamp to keep the shift
  // defined; f32 subnormals (e == 0) land there too and correctly become ±0.
  const std::uint32_t e = a >> 23;
  const std::uint32_t shift = e >= 126u ? 1u : (126u - e > 25u ? 25u : 126u - e);
  const std::uint32_t sig = (a & 0x007f'ffffu) | 0x0080'0000u;
  const std::uint32_t q = sig >> shift;
  const std::uint32_t rem = sig & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  // q may become 0x400 here: that is exactly the smallest normal half, as it should be.
  const std::uint32_t subnormal = q + ((rem > half) | ((rem == half) & q & 1u));

  std::uint32_t r = a < f16_min_normal_f32_bits ? subnormal : normal;
  r = a >= f16_overflow_f32_bits ? 0x7c00u : r;
  // NaN: set the quiet bit so the result can never read as Inf (payload could be all zero).
  r = a > f32_inf_bits ? (0x7e00u | ((a >> 13) & 0x03ffu)) : r;
  return static_cast<std::uint16_t>(sign | r);
}

/// binary16 bits -> f32, exact. NaNs come back quiet with sign and payload kept.
STRATA_HOST_DEVICE constexpr float f16_bits_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu;
  const std::uint32_t m = h & 0x03ffu;

  const std::uint32_t normal = ((e + 112u) << 23) | (m << 13);
  const std::uint32_t inf_nan = f32_inf_bits | (m << 13) | (m != 0u ? 0x0040'0000u : 0u);
  // m * 2^-24: the conversion and the product are exact and the result is a normal float, so
  // this is right whatever the rounding mode and with FTZ/DAZ on (and zero for m == 0).
  const std::uint32_t subnormal =
      detail::bit_cast<std::uint32_t>(static_cast<float>(m) * 0x1p-24f);

  const std::uint32_t r = e == 0u ? subnormal : (e == 31u ? inf_nan : normal);
  return detail::bit_cast<float>(sign | r);
}

// ---- bfloat16: the top half of an f32 (1 sign, 8 exponent, 7 mantissa bits) ---------------

/// f32 -> bfloat16 bits, round to nearest, ties to even. bf16 shares f32's exponent range, so
/// f32 subnormals round to bf16 subnormals and the carry handles overflow to Inf by itself.
/// NaN -> quiet NaN keeping the sign and the top 6 payload bits.
STRATA_HOST_DEVICE constexpr std::uint16_t f32_to_bf16_bits(float value) noexcept {
  const std::uint32_t x = detail::bit_cast<std::uint32_t>(value);
  const std::uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const std::uint32_t nan = (x >> 16) | 0x0040u;
  return static_cast<std::uint16_t>((x & f32_abs_mask) > f32_inf_bits ? nan : rounded);
}

/// bfloat16 bits -> f32, exact. NaNs come back quiet with sign and payload kept.
STRATA_HOST_DEVICE constexpr float bf16_bits_to_f32(std::uint16_t b) noexcept {
  const std::uint32_t x = static_cast<std::uint32_t>(b) << 16;
  const std::uint32_t quiet = (x & f32_abs_mask) > f32_inf_bits ? 0x0040'0000u : 0u;
  return detail::bit_cast<float>(x | quiet);
}

// ---- helpers for the int8 quantiser ---------------------------------------------------------

STRATA_HOST_DEVICE constexpr bool f32_is_nan(float x) noexcept {
  // A bit test, not x != x: -ffast-math may fold the latter to false.
  return (detail::bit_cast<std::uint32_t>(x) & f32_abs_mask) > f32_inf_bits;
}

/// Round half to even for |x| <= 2^23 without std::nearbyint (host-only, depends on the
/// rounding mode, not constexpr). All steps are exact in float.
STRATA_HOST_DEVICE constexpr int round_half_even_small(float x) noexcept {
  const int t = static_cast<int>(x);  // truncates toward zero
  const float frac = x - static_cast<float>(t);
  const int away = x < 0.0f ? -1 : 1;
  const float mag = frac < 0.0f ? -frac : frac;
  if (mag > 0.5f || (mag == 0.5f && (t & 1) != 0)) return t + away;
  return t;
}

}  // namespace detail
STRATA_NAMESPACE_END
