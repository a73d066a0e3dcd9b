// strata/core/dtype.hpp — the element types strata stores, and their conversions.
//
// What lives here: the storage types f16, bf16 and int4x2 (with float and std::int8_t, the five
// types a tiered tensor can hold), the runtime tag `dtype` with sizes and names, the trait
// dtype_of / concept storage_type, exact f32 <-> f16 / bf16 conversions (round to nearest even,
// usable on host, in kernels and in constant expressions), symmetric int8 quantisation, int4
// packing, and host bulk conversion loops for casts and mixed-precision optimizers.
// What does not: arithmetic on f16/bf16 (they are storage types; compute in float, or use
// cuda_fp16.h / cuda_bf16.h inside kernels), vectorised SIMD kernels (optim/), shapes and
// byte alignment (core/shape.hpp), errors.
//
// Bits are the same in host, cuda-runtime and cuda-device builds: a tensor written by one is
// read bit-for-bit by another, and the conversions agree with __float2half_rn /
// __float2bfloat16_rn on every non-NaN input.
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/detail/float16_bits.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

STRATA_NAMESPACE_BEGIN

// ---- 16-bit floats ----------------------------------------------------------------------------

/// IEEE 754 binary16 ("half"), as stored. No arithmetic and no operator==: two NaNs with the
/// same bits are not equal as values, and +0 / -0 are equal as values with different bits, so
/// neither meaning of == would be right everywhere. Compare values through float, or bits
/// through same_bits().
///
/// The default constructor leaves `bits` uninitialised (like float), so arrays of f16 cost
/// nothing to allocate; `f16{}` is +0.
struct f16 {
  std::uint16_t bits;

  f16() = default;

  /// Rounds to nearest, ties to even. Takes exactly float: `f16{0x3c00}` would otherwise
  /// silently mean 15360.0 rather than the bit pattern (use from_bits for that), and a double
  /// would be rounded twice.
  template <std::same_as<float> F>
  STRATA_HOST_DEVICE constexpr explicit f16(F value) noexcept
      : bits(detail::f32_to_f16_bits(value)) {}

  STRATA_HOST_DEVICE static constexpr f16 from_bits(std::uint16_t b) noexcept {
    f16 r{};
    r.bits = b;
    return r;
  }

  /// Exact: every half is a float.
  STRATA_HOST_DEVICE constexpr explicit operator float() const noexcept {
    return detail::f16_bits_to_f32(bits);
  }
};

/// bfloat16 (the upper half of an f32: same exponent range, 8 significant bits), as stored.
/// Same rules as f16: no arithmetic, no operator==, uninitialised by default, `bf16{}` is +0.
struct bf16 {
  std::uint16_t bits;

  bf16() = default;

  /// Rounds to nearest, ties to even (not truncation, which is what a plain shift would do).
  template <std::same_as<float> F>
  STRATA_HOST_DEVICE constexpr explicit bf16(F value) noexcept
      : bits(detail::f32_to_bf16_bits(value)) {}

  STRATA_HOST_DEVICE static constexpr bf16 from_bits(std::uint16_t b) noexcept {
    bf16 r{};
    r.bits = b;
    return r;
  }

  /// Exact: every bf16 is a float.
  STRATA_HOST_DEVICE constexpr explicit operator float() const noexcept {
    return detail::bf16_bits_to_f32(bits);
  }
};

/// Round to nearest even. NaN stays NaN (quiet, same sign, top payload bits kept); |x| >= 65520
/// becomes ±Inf; results below 2^-14 are half subnormals; ±0 keep their sign.
STRATA_HOST_DEVICE constexpr f16 to_f16(float x) noexcept { return f16{x}; }
/// Round to nearest even. NaN stays NaN (quiet, same sign, top payload bits kept); values past
/// the largest bf16 (~3.3895e38) by at least half an ulp become ±Inf; f32 subnormals round to
/// bf16 subnormals; ±0 keep their sign.
STRATA_HOST_DEVICE constexpr bf16 to_bf16(float x) noexcept { return bf16{x}; }
/// Exact. A NaN comes back as a quiet NaN with its sign and payload.
STRATA_HOST_DEVICE constexpr float to_float(f16 h) noexcept { return static_cast<float>(h); }
/// Exact. A NaN comes back as a quiet NaN with its sign and payload.
STRATA_HOST_DEVICE constexpr float to_float(bf16 b) noexcept { return static_cast<float>(b); }

STRATA_HOST_DEVICE constexpr bool same_bits(f16 a, f16 b) noexcept { return a.bits == b.bits; }
STRATA_HOST_DEVICE constexpr bool same_bits(bf16 a, bf16 b) noexcept { return a.bits == b.bits; }

// Classification without a round trip through float; loss scaling checks gradients with these.
STRATA_HOST_DEVICE constexpr bool is_nan(f16 h) noexcept { return (h.bits & 0x7fffu) > 0x7c00u; }
STRATA_HOST_DEVICE constexpr bool is_nan(bf16 b) noexcept { return (b.bits & 0x7fffu) > 0x7f80u; }
STRATA_HOST_DEVICE constexpr bool is_finite(f16 h) noexcept {
  return (h.bits & 0x7c00u) != 0x7c00u;
}
STRATA_HOST_DEVICE constexpr bool is_finite(bf16 b) noexcept {
  return (b.bits & 0x7f80u) != 0x7f80u;
}

// ---- int8: symmetric quantisation -------------------------------------------------------------

/// Quantise x with step `scale`: round_half_even(x / scale) clamped to [-127, 127]. -128 is never
/// produced, so the range is symmetric and negation cannot overflow. NaN -> 0 (a NaN has no
/// nearest integer, and 0 is what dequantises to "no signal"); ±Inf and x / 0 saturate.
STRATA_HOST_DEVICE constexpr std::int8_t to_i8_saturate(float x, float scale) noexcept {
  float q = x / scale;
  if (detail::f32_is_nan(q)) return 0;
  q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
  return static_cast<std::int8_t>(detail::round_half_even_small(q));
}

/// Dequantise: q * scale.
STRATA_HOST_DEVICE constexpr float from_i8(std::int8_t q, float scale) noexcept {
  return static_cast<float>(q) * scale;
}

// ---- int4: two signed nibbles per byte --------------------------------------------------------

/// Two signed 4-bit values in [-8, 7], two's complement: element 0 in the low nibble, element 1
/// in the high nibble. An array of n int4 elements is int4_units_for(n) int4x2s; an odd n leaves
/// the last high nibble unused (kept 0 by pack_int4). Aggregate: `int4x2{0x7f}` is the byte.
struct int4x2 {
  std::uint8_t bits;
};

inline constexpr int int4_min = -8;
inline constexpr int int4_max = 7;

/// Element 0 (low nibble), sign-extended.
STRATA_HOST_DEVICE constexpr int lo(int4x2 p) noexcept { return ((p.bits & 0x0f) ^ 0x08) - 0x08; }
/// Element 1 (high nibble), sign-extended.
STRATA_HOST_DEVICE constexpr int hi(int4x2 p) noexcept { return ((p.bits >> 4) ^ 0x08) - 0x08; }

/// Packs two values, clamping each to [-8, 7] (out-of-range input saturates, never wraps).
STRATA_HOST_DEVICE constexpr int4x2 pack_int4(int lo_value, int hi_value) noexcept {
  const auto clamp = [](int v) { return v < int4_min ? int4_min : (v > int4_max ? int4_max : v); };
  const unsigned l = static_cast<unsigned>(clamp(lo_value)) & 0x0fu;
  const unsigned h = static_cast<unsigned>(clamp(hi_value)) & 0x0fu;
  return int4x2{static_cast<std::uint8_t>(l | (h << 4))};
}

STRATA_HOST_DEVICE constexpr bool same_bits(int4x2 a, int4x2 b) noexcept {
  return a.bits == b.bits;
}

/// Storage units (bytes) that hold `count` int4 elements.
STRATA_HOST_DEVICE constexpr std::size_t int4_units_for(std::size_t count) noexcept {
  return count / 2 + count % 2;
}

/// Element i of a packed int4 array (i counts elements, not bytes).
STRATA_HOST_DEVICE constexpr int int4_get(const int4x2* data, std::size_t i) noexcept {
  return (i % 2 == 0) ? lo(data[i / 2]) : hi(data[i / 2]);
}

/// Sets element i of a packed int4 array to v (clamped to [-8, 7]), leaving its neighbour alone.
STRATA_HOST_DEVICE constexpr void int4_set(int4x2* data, std::size_t i, int v) noexcept {
  int4x2& unit = data[i / 2];
  unit = (i % 2 == 0) ? pack_int4(v, hi(unit)) : pack_int4(lo(unit), v);
}

// ---- the runtime tag --------------------------------------------------------------------------

/// What a tensor holds, for code that decides at run time (checkpoint headers, plans, traces).
enum class dtype : std::uint8_t { f32, f16, bf16, i8, i4 };

STRATA_HOST_DEVICE constexpr std::size_t dtype_bits(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return 32;
    case dtype::f16: return 16;
    case dtype::bf16: return 16;
    case dtype::i8: return 8;
    case dtype::i4: return 4;
  }
  return 0;
}

/// Short lower-case name, as written in checkpoints, traces and messages.
STRATA_HOST_DEVICE constexpr const char* dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
    case dtype::i8: return "i8";
    case dtype::i4: return "i4";
  }
  return "?";
}

/// Bytes needed for `count` elements; an odd count of i4 rounds up to a whole byte.
STRATA_HOST_DEVICE constexpr std::size_t dtype_bytes_for(dtype t, std::size_t count) noexcept {
  // Per type rather than count * bits / 8, so no intermediate can overflow.
  return t == dtype::i4 ? int4_units_for(count) : count * (dtype_bits(t) / 8);
}

// ---- compile-time mapping ---------------------------------------------------------------------

/// Satisfied by exactly the five storage types (no cv-qualified or other arithmetic types: a
/// tensor of double or int is not something strata can move, cast or checksum as such).
template <class T>
concept storage_type = std::same_as<T, float> || std::same_as<T, f16> || std::same_as<T, bf16> ||
                       std::same_as<T, std::int8_t> || std::same_as<T, int4x2>;

/// dtype_of<T>::value is T's dtype. No `value` for other types, so it is SFINAE-friendly.
/// int4x2 maps to dtype::i4 although one int4x2 holds two elements: a T* into i4 storage
/// steps over int4x2 units, while counts in dtype_bytes_for and shapes are in elements.
template <class T>
struct dtype_of {};
template <>
struct dtype_of<float> : std::integral_constant<dtype, dtype::f32> {};
template <>
struct dtype_of<f16> : std::integral_constant<dtype, dtype::f16> {};
template <>
struct dtype_of<bf16> : std::integral_constant<dtype, dtype::bf16> {};
template <>
struct dtype_of<std::int8_t> : std::integral_constant<dtype, dtype::i8> {};
template <>
struct dtype_of<int4x2> : std::integral_constant<dtype, dtype::i4> {};

template <storage_type T>
inline constexpr dtype dtype_of_v = dtype_of<T>::value;

/// Elements held by one T: 2 for int4x2, 1 for the others.
template <storage_type T>
inline constexpr std::size_t elements_per_unit_v = std::same_as<T, int4x2> ? 2 : 1;

namespace detail {
template <dtype D>
struct storage_of;
template <>
struct storage_of<dtype::f32> { using type = float; };
template <>
struct storage_of<dtype::f16> { using type = f16; };
template <>
struct storage_of<dtype::bf16> { using type = bf16; };
template <>
struct storage_of<dtype::i8> { using type = std::int8_t; };
template <>
struct storage_of<dtype::i4> { using type = int4x2; };
}  // namespace detail

/// The storage type of a dtype (the inverse of dtype_of_v).
template <dtype D>
using storage_of_t = typename detail::storage_of<D>::type;

// ---- bulk conversions (host) ------------------------------------------------------------------
// Plain loops over the branch-free scalar routines, so the compiler can vectorise them; the
// results are bit-identical to the scalar functions. src and dst must not overlap.

inline void convert(const float* src, f16* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i].bits = detail::f32_to_f16_bits(src[i]);
}
inline void convert(const f16* src, float* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = detail::f16_bits_to_f32(src[i].bits);
}
inline void convert(const float* src, bf16* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i].bits = detail::f32_to_bf16_bits(src[i]);
}
inline void convert(const bf16* src, float* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = detail::bf16_bits_to_f32(src[i].bits);
}

// ---- checks -----------------------------------------------------------------------------------
// Tensors are moved as bytes (memcpy, DMA, file IO), so every storage type must be a plain,
// exactly-sized value with no padding.

static_assert(sizeof(f16) == 2 && alignof(f16) == 2);
static_assert(sizeof(bf16) == 2 && alignof(bf16) == 2);
static_assert(sizeof(int4x2) == 1);
static_assert(std::is_trivially_copyable_v<f16> && std::is_standard_layout_v<f16> &&
              std::is_trivially_default_constructible_v<f16>);
static_assert(std::is_trivially_copyable_v<bf16> && std::is_standard_layout_v<bf16> &&
              std::is_trivially_default_constructible_v<bf16>);
static_assert(std::is_trivially_copyable_v<int4x2> && std::is_standard_layout_v<int4x2>);
static_assert(storage_type<float> && storage_type<f16> && storage_type<bf16> &&
              storage_type<std::int8_t> && storage_type<int4x2>);
static_assert(!storage_type<double> && !storage_type<const float> && !storage_type<std::uint8_t>);
static_assert(!std::is_convertible_v<float, f16> && !std::is_convertible_v<f16, float>,
              "f16 <-> float conversions round or widen; they must be spelled out");
static_assert(!std::is_constructible_v<f16, int> && !std::is_constructible_v<f16, double>);
static_assert(dtype_of_v<storage_of_t<dtype::i4>> == dtype::i4);

STRATA_NAMESPACE_END
