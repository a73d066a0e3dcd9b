// strata/core/quant.hpp — group-wise asymmetric 4-bit quantisation (q4), as FlexGen and
// ZeRO-Inference store offloaded weights.
//
// What lives here: the 36-byte q4_group (64 unsigned 4-bit codes with an f16 scale and an f16
// minimum), its sizes, and host loops that quantise and dequantise one row or a row-major
// matrix of rows. What does not: symmetric int8 and signed int4 packing (core/dtype.hpp), the
// dequantising GEMMs and kernels of the inference floor (infer/), choosing what to quantise.
//
// Layout, the same in memory, in files and on every build mode: a row of n floats (a weight
// matrix's input dimension, contiguous) is cut into q4_groups_for(n) groups of 64 consecutive
// elements; element 2k of a group sits in the low nibble of packed[k], element 2k+1 in the high
// nibble. Element value = code * float(scale) + float(min), code in 0..15. A last partial group
// keeps its unused codes 0, so equal rows give equal bytes (checksums and tests rely on it).
//
//   row (n floats)        [ g0: x0 .. x63 | g1: x64 .. x127 | ... | partial: .. x(n-1), 0 .. ]
//   matrix (rows, n)  ->  (rows, q4_groups_for(n)) q4_groups, row r at r * q4_groups_for(n)
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/detail/float16_bits.hpp>
#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

STRATA_NAMESPACE_BEGIN

// ---- the format -------------------------------------------------------------------------------

/// Elements per group: 64 codes share one scale and one minimum (32 bytes of codes, 4 of
/// metadata: 4.5 bits per element).
inline constexpr std::size_t q4_group_size = 64;

/// One group as stored. Aggregate and trivially copyable: groups move as bytes (memcpy, DMA,
/// file IO) like every other storage type.
struct q4_group {
  std::uint8_t packed[q4_group_size / 2];  // code 2k: low nibble of packed[k]; 2k+1: high
  f16 scale;                               // >= 0; 0 when every element equals min
  f16 min;                                 // the largest f16 <= the group's smallest element
};

/// Groups in a row of n elements: ceil(n / 64).
constexpr std::size_t q4_groups_for(std::size_t n) noexcept {
  return n / q4_group_size + (n % q4_group_size != 0 ? 1 : 0);
}

/// Bytes of a (rows, n) matrix in q4: every row starts on a whole group.
constexpr std::size_t q4_bytes_for(std::size_t rows, std::size_t n) noexcept {
  return rows * q4_groups_for(n) * sizeof(q4_group);
}

// ---- one row ----------------------------------------------------------------------------------

/// Quantises src[0, n) into dst[0, q4_groups_for(n)). Per group, with lo / hi its smallest and
/// largest element:
///   min   = the largest f16 <= lo (rounded toward -inf, so no element lies below code 0);
///   scale = the smallest f16 >= 0 with min + 15 * scale >= hi, exactly (rounded toward +inf,
///           so no element lies above code 15; 0 for a group whose elements all equal min);
///   code  = round_half_even((x - min) / scale), in 0..15 (0 where scale is 0).
/// Every element then dequantises to within q4_error_bound(group) of itself.
/// Throws config_error, naming the element and its value, if an element is NaN, infinite or
/// beyond f16's range (|x| > 65504): min and scale are f16, so such a group has no faithful
/// encoding. The whole row is checked before anything is written: on a throw dst is untouched.
inline void quantize_q4(const float* src, std::size_t n, q4_group* dst);

/// Dequantises q4_groups_for(n) groups into dst[0, n): dst[i] = code * float(scale) +
/// float(min), rounded once to float — bit-identical to the exact value rounded to nearest, on
/// every compiler and with or without FMA contraction (see the definition for why).
inline void dequantize_q4(const q4_group* src, std::size_t n, float* dst) noexcept;

/// The largest |dequantised - original| that quantize_q4 allows for an element of g:
///   0.5 * scale * (1 + 2^-10) + 2^-22 * (|min| + 15 * scale).
/// Half a step is what rounding to the nearest code costs. The 2^-10 covers the float
/// roundings in computing (x - min) / scale (two, each <= 2^-24 relative, on a value <= 15:
/// < 2^-19 of a step) and results in float's subnormal range (<= 2^-150 absolute; a nonzero
/// scale is >= 2^-24). The second term covers the dequantiser's one rounding to float, which
/// scales with the group's magnitude (<= |min| + 15 * scale) rather than its step: a group of
/// nearly equal values far from zero has a step far below float's ulp there. 2^-22 is four
/// times the 2^-24 (half an ulp, relative) that rounding can cost, which leaves room for the
/// bound's own float arithmetic. (That spare room would cover the 2^-10's cases too; the 2^-10
/// stays so the bound reads as half a step with a margin, whatever the group's magnitude.)
inline float q4_error_bound(const q4_group& g) noexcept;

// ---- a row-major matrix -----------------------------------------------------------------------

/// quantize_q4 on each row of src (rows, n); row r's groups start at dst + r * q4_groups_for(n).
/// Throws as quantize_q4 does, naming the row too; the whole matrix is checked first, so on a
/// throw dst is untouched.
inline void quantize_q4_rows(const float* src, std::size_t rows, std::size_t n, q4_group* dst);

/// dequantize_q4 on each row: src holds rows * q4_groups_for(n) groups, dst is (rows, n).
inline void dequantize_q4_rows(const q4_group* src, std::size_t rows, std::size_t n,
                               float* dst) noexcept;

// ---- definitions ------------------------------------------------------------------------------

namespace detail {

/// Largest |x| a q4 element may have: the largest finite f16.
inline constexpr std::uint32_t q4_max_abs_f32_bits = 0x477f'e000u;  // 65504.0f

/// The next f16 toward -inf, by bits (f16 has no arithmetic). For finite h only: quantise calls
/// it on the nearest f16 to an element with |x| <= 65504.
constexpr f16 f16_next_down(f16 h) noexcept {
  if ((h.bits & 0x7fffu) == 0) return f16::from_bits(0x8001u);  // ±0 -> -2^-24
  if ((h.bits & 0x8000u) == 0) return f16::from_bits(static_cast<std::uint16_t>(h.bits - 1));
  return f16::from_bits(static_cast<std::uint16_t>(h.bits + 1));  // negative: magnitude grows
}

/// Throws unless every element of src[0, n) is a finite float within f16's range.
inline void q4_check_row(const float* src, std::size_t n, const char* who, std::size_t row,
                         bool name_row) {
  for (std::size_t i = 0; i < n; ++i) {
    // A bit test, so NaN is caught even under -ffast-math (which may fold x != x away).
    const std::uint32_t mag = detail::bit_cast<std::uint32_t>(src[i]) & f32_abs_mask;
    if (mag <= q4_max_abs_f32_bits) continue;
    const char* what = mag > f32_inf_bits    ? "NaN"
                       : mag == f32_inf_bits ? "infinite"
                                             : "beyond f16's range (|x| <= 65504)";
    char value[32];
    std::snprintf(value, sizeof value, "%.9g", static_cast<double>(src[i]));
    throw config_error(std::string(who) + ": element " + std::to_string(i) +
                       (name_row ? " of row " + std::to_string(row) : std::string()) +
                       " (of " + std::to_string(n) + " per row) is " + value + ", " + what +
                       "; q4 stores each group's min and scale as f16, so it cannot encode it");
  }
}

/// min + 15 * scale >= hi, exactly. 15 * scale is exact in float (4 x 11 significant bits);
/// both terms are multiples of 2^-24 below 2^20, so their sum is exact in double.
inline bool q4_covers(std::uint16_t scale_bits, float min, float hi) noexcept {
  const float top = 15.0f * detail::f16_bits_to_f32(scale_bits);
  return static_cast<double>(top) + static_cast<double>(min) >= static_cast<double>(hi);
}

/// One group of count (1..64) checked elements.
inline void quantize_q4_group(const float* x, std::size_t count, q4_group& g) noexcept {
  float lo = x[0], hi = x[0];
  for (std::size_t i = 1; i < count; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }

  // min: to nearest, then one step down if that landed above lo (lo lies between two adjacent
  // f16s, and the nearest is one of them). |lo| <= 65504 keeps it finite. A -0 becomes +0, so
  // the bytes do not depend on the sign of a zero.
  f16 min = to_f16(lo);
  if (to_float(min) > lo) min = f16_next_down(min);
  if (min.bits == 0x8000u) min.bits = 0;
  const float minf = to_float(min);

  // scale: start near (hi - min) / 15 and walk to the smallest f16 that covers hi exactly; for
  // non-negative f16s, bit order is value order. It stays finite: hi - min <= 2 * 65504, and
  // 8736 (an f16) >= 2 * 65504 / 15 covers any group, so the walk stops there at the latest.
  const double want = (static_cast<double>(hi) - static_cast<double>(minf)) / 15.0;
  std::uint16_t s = to_f16(static_cast<float>(want)).bits & 0x7fffu;  // drops a -0's sign
  while (s > 0 && q4_covers(static_cast<std::uint16_t>(s - 1), minf, hi)) --s;
  while (!q4_covers(s, minf, hi)) ++s;
  // Exact cover implies cover after the dequantiser's rounding (rounding is monotone and hi is a
  // float), which is what the error bound rests on. Checked all the same: flush-to-zero or
  // excess precision in a build would break the implication, and a step up restores the cover.
  while (15.0f * detail::f16_bits_to_f32(s) + minf < hi) ++s;
  g.scale = f16::from_bits(s);
  g.min = min;

  std::memset(g.packed, 0, sizeof g.packed);
  if (s == 0) return;  // every element equals min: all codes 0
  const float scalef = detail::f16_bits_to_f32(s);
  for (std::size_t i = 0; i < count; ++i) {
    // (x - min) / scale is in [0, 15] up to two float roundings, by the cover above, so
    // rounding gives 0..15; the clamp only guards the builds the cover check guards.
    int code = detail::round_half_even_small((x[i] - minf) / scalef);
    code = code < 0 ? 0 : (code > 15 ? 15 : code);
    g.packed[i / 2] |= static_cast<std::uint8_t>(code << (4 * (i % 2)));
  }
}

inline void quantize_q4_row_unchecked(const float* src, std::size_t n, q4_group* dst) noexcept {
  const std::size_t groups = q4_groups_for(n);
  for (std::size_t gi = 0; gi < groups; ++gi) {
    const std::size_t first = gi * q4_group_size;
    const std::size_t count = n - first < q4_group_size ? n - first : q4_group_size;
    quantize_q4_group(src + first, count, dst[gi]);
  }
}

/// All 64 elements of g into out[0, 64).
///
/// Why the bits are exact: code * scale is exact in float (a 4-bit integer times an 11-bit
/// significand, never below float's normal range since a nonzero f16 is >= 2^-24), so the one
/// rounding left is of code * scale + min. A compiler that contracts the expression to an FMA
/// rounds that same exact value once; one that does not rounds an exact product and then the
/// sum — also once. Both give the exact value rounded to nearest even, which is what a
/// reference computing in double (exact there: multiples of 2^-24 below 2^21) and rounding to
/// float gets.
inline void dequantize_q4_group(const q4_group& g, float* out) noexcept {
  const float scale = detail::f16_bits_to_f32(g.scale.bits);
  const float min = detail::f16_bits_to_f32(g.min.bits);
  // A fixed trip count and no calls: the compiler vectorises this loop.
  for (std::size_t k = 0; k < q4_group_size / 2; ++k) {
    const unsigned b = g.packed[k];
    out[2 * k] = static_cast<float>(b & 0x0fu) * scale + min;
    out[2 * k + 1] = static_cast<float>(b >> 4) * scale + min;
  }
}

}  // namespace detail

inline void quantize_q4(const float* src, std::size_t n, q4_group* dst) {
  detail::q4_check_row(src, n, "quantize_q4", 0, false);
  detail::quantize_q4_row_unchecked(src, n, dst);
}

inline void dequantize_q4(const q4_group* src, std::size_t n, float* dst) noexcept {
  const std::size_t full = n / q4_group_size;
  for (std::size_t gi = 0; gi < full; ++gi)
    detail::dequantize_q4_group(src[gi], dst + gi * q4_group_size);
  if (const std::size_t rest = n % q4_group_size; rest != 0) {
    // The partial group goes through the same loop (so the same bits), into a scratch block.
    float block[q4_group_size];
    detail::dequantize_q4_group(src[full], block);
    std::memcpy(dst + full * q4_group_size, block, rest * sizeof(float));
  }
}

inline float q4_error_bound(const q4_group& g) noexcept {
  const float scale = to_float(g.scale);
  const float min = to_float(g.min);
  const float magnitude = (min < 0.0f ? -min : min) + 15.0f * scale;
  return 0.5f * scale * (1.0f + 0x1p-10f) + 0x1p-22f * magnitude;
}

inline void quantize_q4_rows(const float* src, std::size_t rows, std::size_t n, q4_group* dst) {
  for (std::size_t r = 0; r < rows; ++r)
    detail::q4_check_row(src + r * n, n, "quantize_q4_rows", r, true);
  const std::size_t groups = q4_groups_for(n);
  for (std::size_t r = 0; r < rows; ++r)
    detail::quantize_q4_row_unchecked(src + r * n, n, dst + r * groups);
}

inline void dequantize_q4_rows(const q4_group* src, std::size_t rows, std::size_t n,
                               float* dst) noexcept {
  const std::size_t groups = q4_groups_for(n);
  for (std::size_t r = 0; r < rows; ++r) dequantize_q4(src + r * groups, n, dst + r * n);
}

// ---- checks -----------------------------------------------------------------------------------

static_assert(sizeof(q4_group) == 36 && alignof(q4_group) == 2, "36 bytes, no padding");
static_assert(std::is_trivially_copyable_v<q4_group> && std::is_standard_layout_v<q4_group>);
static_assert(q4_groups_for(0) == 0 && q4_groups_for(1) == 1 && q4_groups_for(64) == 1 &&
              q4_groups_for(65) == 2);

STRATA_NAMESPACE_END
