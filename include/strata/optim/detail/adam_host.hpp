// strata/optim/detail/adam_host.hpp — definitions for optim/adam.hpp (host paths).
//
// What lives here: adam_params::validate, adam_step_scalars::make, the choice of path
// (detect_simd, detail::resolve_simd), the scalar reference loop, and adam_update itself:
// checks, the split over the thread pool, and the call into the scalar, AVX2
// (adam_avx2.hpp) or AVX-512 (adam_avx512.hpp) loop. Included at the end of optim/adam.hpp
// (not the other way round, so the single-header generator meets no include cycle).
#pragma once

#include <strata/core/cpu_features.hpp>
#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>
#include <strata/exec/thread_pool.hpp>
#include <strata/optim/detail/adam_avx2.hpp>
#include <strata/optim/detail/adam_avx512.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

STRATA_NAMESPACE_BEGIN
namespace optim {

inline void adam_params::validate(const std::string& who) const {
  auto bad = [&](const char* field, float value, const char* rule) {
    throw config_error(who + ": " + field + " = " + std::to_string(value) + " (" + rule + ")");
  };
  if (!std::isfinite(lr) || lr < 0) bad("lr", lr, "must be finite and >= 0");
  if (!(beta1 >= 0 && beta1 < 1)) bad("beta1", beta1, "must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) bad("beta2", beta2, "must be in [0, 1)");
  if (!std::isfinite(eps) || !(eps > 0)) bad("eps", eps, "must be finite and > 0");
  if (!std::isfinite(weight_decay) || weight_decay < 0)
    bad("weight_decay", weight_decay, "must be finite and >= 0");
}

inline adam_step_scalars adam_step_scalars::make(const adam_params& h, std::uint64_t t,
                                                 float grad_multiplier) {
  if (t == 0) throw config_error("adam: step number t starts at 1");
  adam_step_scalars k;
  const double b1 = h.beta1, b2 = h.beta2, lr = h.lr, wd = h.weight_decay;
  const double td = static_cast<double>(t);
  const double bc1 = h.bias_correction ? 1.0 - std::pow(b1, td) : 1.0;
  const double bc2 = h.bias_correction ? 1.0 - std::pow(b2, td) : 1.0;
  k.s = grad_multiplier;
  k.decoupled = h.mode == weight_decay_mode::decoupled;
  k.wd_l2 = k.decoupled ? 0.0f : h.weight_decay;
  k.b1 = h.beta1;
  k.c1 = static_cast<float>(1.0 - b1);
  k.b2 = h.beta2;
  k.c2 = static_cast<float>(1.0 - b2);
  k.decay = k.decoupled ? static_cast<float>(1.0 - lr * wd) : 1.0f;
  k.k2 = static_cast<float>(1.0 / bc2);
  k.eps = h.eps;
  k.step = static_cast<float>(lr / bc1);
  return k;
}

inline const char* simd_level_name(simd_level l) noexcept {
  switch (l) {
    case simd_level::scalar: return "scalar";
    case simd_level::avx2: return "avx2";
    case simd_level::avx512: return "avx512";
    case simd_level::automatic: return "automatic";
  }
  return "?";
}

namespace detail {

/// The widest path `f` allows (pure, so tests can ask about CPUs other than this one).
inline simd_level widest_simd(const cpu_features& f) noexcept {
  if (f.has_avx512_path()) return simd_level::avx512;
  if (f.has_avx2_path()) return simd_level::avx2;
  return simd_level::scalar;
}

/// The path that runs for `asked` on a CPU with features `f`: automatic -> the widest; an
/// explicit level the CPU (or this build) cannot run -> config_error naming both.
inline simd_level resolve_simd(simd_level asked, const cpu_features& f, const char* who) {
  if (asked == simd_level::automatic) return widest_simd(f);
  if (asked == simd_level::scalar) return asked;
  if (asked != simd_level::avx2 && asked != simd_level::avx512)
    throw config_error(std::string(who) + ": unknown simd_level " +
                       std::to_string(static_cast<int>(asked)));
  if (!STRATA_X86_SIMD)
    throw config_error(std::string(who) + ": simd_level " + simd_level_name(asked) +
                       " is not compiled into this build (vector paths need x86-64 with GCC or "
                       "Clang, outside nvcc); use simd_level::scalar or automatic");
  const bool ok = asked == simd_level::avx2 ? f.has_avx2_path() : f.has_avx512_path();
  if (!ok)
    throw config_error(std::string(who) + ": simd_level " + simd_level_name(asked) +
                       " asked for, but this CPU does not support it (" +
                       (asked == simd_level::avx2 ? "needs avx2 fma f16c"
                                                  : "needs avx512f avx512bw avx512vl avx2 fma "
                                                    "f16c") +
                       "; the CPU has: " + f.describe() + "; the widest usable level is " +
                       simd_level_name(widest_simd(f)) + ")");
  return asked;
}

}  // namespace detail

inline simd_level detect_simd() noexcept { return detail::widest_simd(cpu()); }

namespace detail {

template <class G>
inline float grad_to_float(G g) noexcept {
  if constexpr (std::is_same_v<G, float>) return g;
  else return static_cast<float>(g);
}

// The documented formula, one element at a time (the reference every other path matches).
template <class G, class P>
inline void adam_scalar(const adam_step_scalars& k, float* p, float* m, float* v, const G* grad,
                        P* copy, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    float g = k.s * grad_to_float(grad[i]);
    float w = p[i];
    if (!k.decoupled) g = std::fma(k.wd_l2, w, g);
    const float mi = std::fma(k.b1, m[i], k.c1 * g);
    const float vi = std::fma(k.b2, v[i], k.c2 * (g * g));
    if (k.decoupled) w = w * k.decay;
    const float d = std::sqrt(vi * k.k2) + k.eps;
    w = std::fma(-k.step, mi / d, w);
    m[i] = mi;
    v[i] = vi;
    p[i] = w;
    if constexpr (!std::is_same_v<P, no_copy>) copy[i] = P(w);
  }
}

// A loop over one chunk: [0, n) of each array, pointers already offset.
template <class G, class P>
using adam_kernel = void (*)(const adam_step_scalars&, float*, float*, float*, const G*, P*,
                             std::size_t) noexcept;

template <class G, class P>
adam_kernel<G, P> pick_adam_kernel(simd_level level, bool decoupled) noexcept {
#if STRATA_X86_SIMD
  if (level == simd_level::avx512)
    return decoupled ? &avx512::adam_update<true, G, P> : &avx512::adam_update<false, G, P>;
  if (level == simd_level::avx2)
    return decoupled ? &avx2::adam_update<true, G, P> : &avx2::adam_update<false, G, P>;
#endif
  (void)level;
  (void)decoupled;
  return &adam_scalar<G, P>;
}

// Workers get at least this many elements when `threads` is 0: below it, waking a worker costs
// more than the work (64 Ki elements move ~2 MB, tens of microseconds at memory speed).
inline constexpr std::size_t adam_min_elements_per_worker = std::size_t{64} << 10;

}  // namespace detail

template <class G, class P>
void adam_update(const adam_step_scalars& k, std::span<float> master, std::span<float> m,
                 std::span<float> v, std::span<const G> grad, P* copy, simd_level level,
                 unsigned threads) {
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, bf16> || std::is_same_v<G, f16>,
                "adam_update: gradients are float, bf16 or f16");
  static_assert(std::is_same_v<P, no_copy> || std::is_same_v<P, float> ||
                    std::is_same_v<P, bf16> || std::is_same_v<P, f16>,
                "adam_update: the parameter copy is no_copy, float, bf16 or f16");
  const std::size_t n = master.size();
  if (m.size() != n || v.size() != n || grad.size() != n)
    throw config_error("adam_update: master has " + std::to_string(n) + " elements, m " +
                       std::to_string(m.size()) + ", v " + std::to_string(v.size()) +
                       ", grad " + std::to_string(grad.size()) + "; they must be equal");
  if constexpr (!std::is_same_v<P, no_copy>)
    if (!copy && n) throw config_error("adam_update: a parameter copy type without a pointer");
  const simd_level path = detail::resolve_simd(level, cpu(), "adam_update");
  if (n == 0) return;
  const auto kernel = detail::pick_adam_kernel<G, P>(path, k.decoupled);

  float* const pw = master.data();
  float* const pm = m.data();
  float* const pv = v.data();
  const G* const pg = grad.data();
  // One chunk: run here, without touching (or starting) the pool.
  if (threads == 1 || (threads == 0 && n < 2 * detail::adam_min_elements_per_worker)) {
    kernel(k, pw, pm, pv, pg, copy, n);
    return;
  }
  // Chunk boundaries fall on 64 bytes of every array (16 floats, 32 16-bit values), so no two
  // threads write one cache line when the arrays start on a line, as strata's buffers do.
  constexpr std::size_t smallest =
      std::min({sizeof(float), sizeof(G), std::is_same_v<P, no_copy> ? sizeof(float) : sizeof(P)});
  constexpr std::size_t line_elements = 64 / smallest;
  thread_pool& pool = default_thread_pool();
  parallel_for_options opt;
  opt.align = line_elements;
  opt.max_chunks = threads;  // 0: the pool's concurrency (the hardware's)
  const std::size_t min_chunk = threads == 0 ? detail::adam_min_elements_per_worker : line_elements;
  pool.parallel_for(n, min_chunk, opt, [&](std::size_t b, std::size_t e) {
    P* c = nullptr;
    if constexpr (!std::is_same_v<P, no_copy>) c = copy + b;
    kernel(k, pw + b, pm + b, pv + b, pg + b, c, e - b);
  });
}

}  // namespace optim
STRATA_NAMESPACE_END
