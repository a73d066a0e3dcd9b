// strata/optim/detail/adam_host.hpp — definitions for optim/adam.hpp (host paths).
#pragma once

#include <strata/optim/adam.hpp>

#include <cmath>
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

inline simd_level detect_simd() noexcept { return simd_level::scalar; }

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
  (void)level;
  (void)threads;
  detail::adam_scalar(k, master.data(), m.data(), v.data(), grad.data(), copy, n);
}

}  // namespace optim
STRATA_NAMESPACE_END
