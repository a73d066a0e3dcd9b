// strata/optim/detail/adam_avx2.hpp — the AVX2 + FMA + F16C path of optim/adam.hpp's update
// (8 floats per vector), and the bf16 / f16 <-> f32 vector conversions it uses.
//
// What lives here: detail::avx2::adam_update<Decoupled, G, P> and detail::avx2::convert, the
// 256-bit twins of adam_avx512.hpp (read that header's notes on bitwise agreement: they apply
// here word for word). What does not: dispatch, threads, validation. Included by
// optim/adam.hpp only; empty unless STRATA_X86_SIMD.
//
// AVX2 has no masked 16-bit loads and stores, so the tail (n % 8 elements) is copied into a
// small zero-padded stack buffer, run through the same vector code, and copied back: the tail
// gets exactly the vector path's operations, never a scalar loop that the compiler might
// contract differently in a target("fma") function.
#pragma once

#include <strata/core/cpu_features.hpp>
#include <strata/core/dtype.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if STRATA_X86_SIMD
#  include <immintrin.h>

#  define STRATA_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#  define STRATA_TARGET_AVX2_INLINE STRATA_TARGET_AVX2 inline __attribute__((always_inline))

STRATA_NAMESPACE_BEGIN
namespace optim::detail::avx2 {

constexpr std::size_t width = 8;  // floats per vector

// ---- loads: 8 elements of T as f32 -------------------------------------------------------------

STRATA_TARGET_AVX2_INLINE __m256 bf16_bits_to_f32(__m128i h) {
  // As detail::bf16_bits_to_f32: the bits move to the top half, NaNs get the quiet bit.
  const __m256i x = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
  // Signed compare is right: x & 0x7fffffff is non-negative.
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_castsi256_ps(
      _mm256_or_si256(x, _mm256_and_si256(nan, _mm256_set1_epi32(0x00400000))));
}

template <class T>
STRATA_TARGET_AVX2_INLINE __m256 load_as_f32(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm256_loadu_ps(p);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<T, bf16>) return bf16_bits_to_f32(h);
    else return _mm256_cvtph_ps(h);  // f16: exact, NaNs quieted
  }
}

// ---- stores: 8 f32 as T ------------------------------------------------------------------------

STRATA_TARGET_AVX2_INLINE __m128i f32_to_bf16_bits(__m256 f) {
  // detail::f32_to_bf16_bits lane by lane (see adam_avx512.hpp).
  const __m256i x = _mm256_castps_si256(f);
  const __m256i hi = _mm256_srli_epi32(x, 16);
  const __m256i odd = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), odd), 16);
  const __m256i quiet = _mm256_or_si256(hi, _mm256_set1_epi32(0x0040));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);  // 8 x u32, each <= 0xffff
  // Narrow to 8 x u16 in order: packus works within 128-bit halves, so pack the two halves.
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

template <class T>
STRATA_TARGET_AVX2_INLINE void store_from_f32(T* p, __m256 x) {
  if constexpr (std::is_same_v<T, float>) {
    _mm256_storeu_ps(p, x);
  } else {
    __m128i h;
    if constexpr (std::is_same_v<T, bf16>) h = f32_to_bf16_bits(x);
    else h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  }
}

// ---- the update --------------------------------------------------------------------------------

struct scalars {
  __m256 s, wd, b1, c1, b2, c2, decay, k2, eps, neg_step;
};

/// One vector of the documented update at elements [i, i + 8).
template <bool Decoupled, class G, class P>
STRATA_TARGET_AVX2_INLINE void update_vector(const scalars& c, float* p, float* m, float* v,
                                             const G* grad, P* copy, std::size_t i) {
  __m256 g = _mm256_mul_ps(c.s, load_as_f32(grad + i));
  __m256 w = _mm256_loadu_ps(p + i);
  if constexpr (!Decoupled) g = _mm256_fmadd_ps(c.wd, w, g);
  const __m256 mi = _mm256_fmadd_ps(c.b1, _mm256_loadu_ps(m + i), _mm256_mul_ps(c.c1, g));
  const __m256 vi = _mm256_fmadd_ps(c.b2, _mm256_loadu_ps(v + i),
                                    _mm256_mul_ps(c.c2, _mm256_mul_ps(g, g)));
  if constexpr (Decoupled) w = _mm256_mul_ps(w, c.decay);
  const __m256 d = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, c.k2)), c.eps);
  w = _mm256_fmadd_ps(c.neg_step, _mm256_div_ps(mi, d), w);
  _mm256_storeu_ps(m + i, mi);
  _mm256_storeu_ps(v + i, vi);
  _mm256_storeu_ps(p + i, w);
  if constexpr (!std::is_same_v<P, no_copy>) store_from_f32(copy + i, w);
}

/// The update over [0, n) of each array (a chunk: the caller offsets the pointers).
template <bool Decoupled, class G, class P>
STRATA_TARGET_AVX2 void adam_update(const adam_step_scalars& k, float* p, float* m, float* v,
                                    const G* grad, P* copy, std::size_t n) noexcept {
  const scalars c{_mm256_set1_ps(k.s),     _mm256_set1_ps(k.wd_l2), _mm256_set1_ps(k.b1),
                  _mm256_set1_ps(k.c1),    _mm256_set1_ps(k.b2),    _mm256_set1_ps(k.c2),
                  _mm256_set1_ps(k.decay), _mm256_set1_ps(k.k2),    _mm256_set1_ps(k.eps),
                  _mm256_set1_ps(-k.step)};
  std::size_t i = 0;
  // Two vectors per trip: more loads in flight per thread for a loop bound by memory.
  for (; i + 2 * width <= n; i += 2 * width) {
    update_vector<Decoupled>(c, p, m, v, grad, copy, i);
    update_vector<Decoupled>(c, p, m, v, grad, copy, i + width);
  }
  for (; i + width <= n; i += width) update_vector<Decoupled>(c, p, m, v, grad, copy, i);
  if (i == n) return;

  // Tail: zero-padded copies (zeros compute harmlessly: d = eps, m / d = 0), copied back
  // element by element as bytes, so no float arithmetic happens outside the vector code.
  const std::size_t r = n - i;
  alignas(32) float tp[width] = {}, tm[width] = {}, tv[width] = {};
  alignas(32) G tg[width] = {};
  using copy_t = std::conditional_t<std::is_same_v<P, no_copy>, float, P>;
  alignas(32) copy_t tc[width] = {};
  std::memcpy(tp, p + i, r * sizeof(float));
  std::memcpy(tm, m + i, r * sizeof(float));
  std::memcpy(tv, v + i, r * sizeof(float));
  std::memcpy(tg, grad + i, r * sizeof(G));
  if constexpr (std::is_same_v<P, no_copy>) {
    update_vector<Decoupled>(c, tp, tm, tv, tg, copy, 0);
  } else {
    update_vector<Decoupled>(c, tp, tm, tv, tg, tc, 0);
    std::memcpy(copy + i, tc, r * sizeof(P));
  }
  std::memcpy(p + i, tp, r * sizeof(float));
  std::memcpy(m + i, tm, r * sizeof(float));
  std::memcpy(v + i, tv, r * sizeof(float));
}

/// Bulk conversion between float, bf16 and f16 with the loads and stores above (To or From is
/// float). Bitwise equal to core/dtype.hpp's convert().
template <class From, class To>
STRATA_TARGET_AVX2 void convert(const From* src, To* dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + width <= n; i += width) store_from_f32(dst + i, load_as_f32(src + i));
  if (i == n) return;
  alignas(32) From ts[width] = {};
  alignas(32) To td[width] = {};
  std::memcpy(ts, src + i, (n - i) * sizeof(From));
  store_from_f32(td, load_as_f32(ts));
  std::memcpy(dst + i, td, (n - i) * sizeof(To));
}

}  // namespace optim::detail::avx2
STRATA_NAMESPACE_END

#  undef STRATA_TARGET_AVX2_INLINE
#  undef STRATA_TARGET_AVX2
#endif  // STRATA_X86_SIMD
