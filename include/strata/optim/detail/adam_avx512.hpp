// strata/optim/detail/adam_avx512.hpp — the AVX-512 path of optim/adam.hpp's update (16 floats
// per vector), and the bf16 / f16 <-> f32 vector conversions it uses.
//
// What lives here: detail::avx512::adam_update<Decoupled, G, P>, one pass over n elements in
// exactly the documented order of operations; detail::avx512::convert (bulk conversions with
// the same loads and stores, which the tests compare against core/dtype.hpp bit for bit).
// What does not: choosing this path (adam_host.hpp does, after cpu() says AVX-512 F/BW/VL is
// usable), threads, validation. Included by optim/adam.hpp only; empty unless STRATA_X86_SIMD.
//
// Every function carries __attribute__((target(...))), so the including translation unit is
// compiled for baseline x86-64 and these instructions run only where the dispatcher chose
// them. Lambdas would not inherit the attribute, hence small always_inline helpers instead.
//
// Bitwise agreement with the scalar path:
// - only the documented operations, as intrinsics: vfmadd where the formula says fma, plain
//   vmulps / vaddps / vdivps / vsqrtps elsewhere (all correctly rounded, like their scalar
//   counterparts). No product in the formula feeds a plain addition, so the compiler has no
//   a*b+c to contract into an fma under -ffp-contract=fast.
// - the tail (n % 16 elements) runs the same vector code under a lane mask (masked loads read
//   zeros and do not fault past the end; masked stores leave the rest untouched), never a
//   scalar loop that a compiler might contract differently.
// - bf16 -> f32 is a shift plus dtype.hpp's quieting of NaNs; f32 -> bf16 repeats
//   detail::f32_to_bf16_bits with integer vector ops (round half even, NaN -> quiet NaN with
//   the top payload bits) — not VCVTNEPS2BF16, which flushes f32 subnormals to zero.
// - f16 uses VCVTPS2PH with round-to-nearest-even (immediate, not MXCSR) and VCVTPH2PS: equal
//   to detail::f32_to_f16_bits / f16_bits_to_f32 for every input, NaNs included (the tests
//   check all 2^16 halves and millions of floats), as long as MXCSR.DAZ is off — the default;
//   with DAZ on, the hardware reads f32 subnormals as zero and the scalar path does not.
#pragma once

#include <strata/core/cpu_features.hpp>
#include <strata/core/dtype.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if STRATA_X86_SIMD
#  include <immintrin.h>

// Also enables what the 512-bit code borrows from the 256-bit set (F16C for f16, FMA).
#  define STRATA_TARGET_AVX512                                                                  \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#  define STRATA_TARGET_AVX512_INLINE STRATA_TARGET_AVX512 inline __attribute__((always_inline))

// GCC 12's AVX-512 intrinsics (srli, slli, cvtepu16, cvtepi32_epi16, sqrt, ...) pass an
// "undefined" vector that -Wall reports as maybe-uninitialized wherever they are inlined
// (GCC PR 105593, fixed in GCC 13); silence that here so users' -Werror builds stay clean.
#  if defined(__GNUC__) && !defined(__clang__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#    pragma GCC diagnostic ignored "-Wuninitialized"
#  endif

STRATA_NAMESPACE_BEGIN
namespace optim::detail::avx512 {

constexpr std::size_t width = 16;  // floats per vector

// ---- loads: 16 elements of T as f32 ------------------------------------------------------------

template <bool Masked>
STRATA_TARGET_AVX512_INLINE __m512 load(const float* p, __mmask16 k) {
  if constexpr (Masked) return _mm512_maskz_loadu_ps(k, p);
  else return _mm512_loadu_ps(p);
}

template <bool Masked>
STRATA_TARGET_AVX512_INLINE __m256i load16(const void* p, __mmask16 k) {
  if constexpr (Masked) return _mm256_maskz_loadu_epi16(k, p);
  else return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

STRATA_TARGET_AVX512_INLINE __m512 bf16_bits_to_f32(__m256i h) {
  // As detail::bf16_bits_to_f32: the bits move to the top half, NaNs get the quiet bit.
  const __m512i x = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(
      _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_castsi512_ps(_mm512_mask_or_epi32(x, nan, x, _mm512_set1_epi32(0x00400000)));
}

template <bool Masked, class T>
STRATA_TARGET_AVX512_INLINE __m512 load_as_f32(const T* p, __mmask16 k) {
  if constexpr (std::is_same_v<T, float>) return load<Masked>(p, k);
  else if constexpr (std::is_same_v<T, bf16>) return bf16_bits_to_f32(load16<Masked>(p, k));
  else return _mm512_cvtph_ps(load16<Masked>(p, k));  // f16: exact, NaNs quieted
}

// ---- stores: 16 f32 as T -----------------------------------------------------------------------

template <bool Masked>
STRATA_TARGET_AVX512_INLINE void store(float* p, __m512 x, __mmask16 k) {
  if constexpr (Masked) _mm512_mask_storeu_ps(p, k, x);
  else _mm512_storeu_ps(p, x);
}

template <bool Masked>
STRATA_TARGET_AVX512_INLINE void store16(void* p, __m256i x, __mmask16 k) {
  if constexpr (Masked) _mm256_mask_storeu_epi16(p, k, x);
  else _mm256_storeu_si256(static_cast<__m256i*>(p), x);
}

STRATA_TARGET_AVX512_INLINE __m256i f32_to_bf16_bits(__m512 f) {
  // detail::f32_to_bf16_bits lane by lane: (x + 0x7fff + ((x >> 16) & 1)) >> 16, or for a NaN
  // (x >> 16) | 0x40. The sum cannot wrap for non-NaN x (at most 0xff80'0000 + 0x8000).
  const __m512i x = _mm512_castps_si512(f);
  const __m512i hi = _mm512_srli_epi32(x, 16);
  const __m512i odd = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd), 16);
  const __m512i quiet = _mm512_or_si512(hi, _mm512_set1_epi32(0x0040));
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(
      _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));  // 16 x u16
}

template <bool Masked, class T>
STRATA_TARGET_AVX512_INLINE void store_from_f32(T* p, __m512 x, __mmask16 k) {
  if constexpr (std::is_same_v<T, float>) store<Masked>(p, x, k);
  else if constexpr (std::is_same_v<T, bf16>) store16<Masked>(p, f32_to_bf16_bits(x), k);
  else store16<Masked>(p, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), k);
}

// ---- the update --------------------------------------------------------------------------------

struct scalars {
  __m512 s, wd, b1, c1, b2, c2, decay, k2, eps, neg_step;
};

/// One vector of the documented update at elements [i, i + 16) (the lanes in k when Masked).
template <bool Decoupled, bool Masked, class G, class P>
STRATA_TARGET_AVX512_INLINE void update_vector(const scalars& c, float* p, float* m, float* v,
                                               const G* grad, P* copy, std::size_t i,
                                               __mmask16 k) {
  __m512 g = _mm512_mul_ps(c.s, load_as_f32<Masked>(grad + i, k));
  __m512 w = load<Masked>(p + i, k);
  if constexpr (!Decoupled) g = _mm512_fmadd_ps(c.wd, w, g);
  const __m512 mi = _mm512_fmadd_ps(c.b1, load<Masked>(m + i, k), _mm512_mul_ps(c.c1, g));
  const __m512 vi =
      _mm512_fmadd_ps(c.b2, load<Masked>(v + i, k), _mm512_mul_ps(c.c2, _mm512_mul_ps(g, g)));
  if constexpr (Decoupled) w = _mm512_mul_ps(w, c.decay);
  const __m512 d = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, c.k2)), c.eps);
  w = _mm512_fmadd_ps(c.neg_step, _mm512_div_ps(mi, d), w);
  store<Masked>(m + i, mi, k);
  store<Masked>(v + i, vi, k);
  store<Masked>(p + i, w, k);
  if constexpr (!std::is_same_v<P, no_copy>) store_from_f32<Masked>(copy + i, w, k);
}

/// The update over [0, n) of each array (a chunk: the caller offsets the pointers).
template <bool Decoupled, class G, class P>
STRATA_TARGET_AVX512 void adam_update(const adam_step_scalars& k, float* p, float* m, float* v,
                                      const G* grad, P* copy, std::size_t n) noexcept {
  const scalars c{_mm512_set1_ps(k.s),     _mm512_set1_ps(k.wd_l2), _mm512_set1_ps(k.b1),
                  _mm512_set1_ps(k.c1),    _mm512_set1_ps(k.b2),    _mm512_set1_ps(k.c2),
                  _mm512_set1_ps(k.decay), _mm512_set1_ps(k.k2),    _mm512_set1_ps(k.eps),
                  _mm512_set1_ps(-k.step)};
  std::size_t i = 0;
  // Two vectors per trip: more loads in flight per thread for a loop bound by memory.
  for (; i + 2 * width <= n; i += 2 * width) {
    update_vector<Decoupled, false>(c, p, m, v, grad, copy, i, 0xffff);
    update_vector<Decoupled, false>(c, p, m, v, grad, copy, i + width, 0xffff);
  }
  for (; i + width <= n; i += width)
    update_vector<Decoupled, false>(c, p, m, v, grad, copy, i, 0xffff);
  if (i < n) {
    const auto tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    update_vector<Decoupled, true>(c, p, m, v, grad, copy, i, tail);
  }
}

/// Bulk conversion between float, bf16 and f16 with the loads and stores above (To or From is
/// float). Bitwise equal to core/dtype.hpp's convert().
template <class From, class To>
STRATA_TARGET_AVX512 void convert(const From* src, To* dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + width <= n; i += width)
    store_from_f32<false>(dst + i, load_as_f32<false>(src + i, 0xffff), 0xffff);
  if (i < n) {
    const auto tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    store_from_f32<true>(dst + i, load_as_f32<true>(src + i, tail), tail);
  }
}

}  // namespace optim::detail::avx512
STRATA_NAMESPACE_END

#  if defined(__GNUC__) && !defined(__clang__)
#    pragma GCC diagnostic pop
#  endif

#  undef STRATA_TARGET_AVX512_INLINE
#  undef STRATA_TARGET_AVX512
#endif  // STRATA_X86_SIMD
