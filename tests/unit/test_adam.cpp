// Tests for strata/optim/adam.hpp: the host Adam/AdamW update.
//
// - The vector conversions (bf16 / f16 <-> f32) of each SIMD path equal core/dtype.hpp's scalar
//   ones bit for bit: every 16-bit pattern, and ~1.3 M float patterns chosen around the
//   rounding points, subnormals, overflow and NaNs.
// - Every SIMD path this CPU has equals the scalar path bit for bit (master, m, v, the copy)
//   for every gradient type x copy type, at sizes that are not multiples of the vector width,
//   over 20 steps, for AdamW with bias correction and Adam (L2) without, including special
//   gradients (±0, subnormals, huge, ±Inf, which also makes NaNs); multi-threaded runs equal
//   single-threaded ones.
// - An independent reference in double, written from the textbook definitions, stays close
//   to the float update over 500 steps (the tolerance and its reason are stated there).
// - Bad hyper-parameters, mismatched lengths, and SIMD levels the CPU lacks are config_errors
//   that say what was wrong.
// Levels the CPU lacks are skipped with a WARN.
#include "catch.hpp"

#include <strata/optim/adam.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using strata::bf16;
using strata::f16;
using strata::config_error;
using namespace strata::optim;

template <class T>
struct tag {
  using type = T;
};

const char* type_name(tag<float>) { return "float"; }
const char* type_name(tag<bf16>) { return "bf16"; }
const char* type_name(tag<f16>) { return "f16"; }
const char* type_name(tag<no_copy>) { return "no_copy"; }

/// The SIMD levels this CPU runs; WARNs once per missing level.
std::vector<simd_level> vector_levels() {
  std::vector<simd_level> out;
  static bool warned = false;
  const auto& f = strata::cpu();
  for (simd_level l : {simd_level::avx2, simd_level::avx512}) {
    const bool ok = l == simd_level::avx2 ? f.has_avx2_path() : f.has_avx512_path();
    if (ok && STRATA_X86_SIMD) out.push_back(l);
    else if (!warned)
      WARN("simd_level " << simd_level_name(l) << " not available here (CPU: " << f.describe()
                         << "): its checks are skipped");
  }
  warned = true;
  return out;
}

template <class T>
std::uint32_t bits(T x) {
  if constexpr (std::is_same_v<T, float>) return std::bit_cast<std::uint32_t>(x);
  else return x.bits;
}

/// Byte-wise comparison of two arrays; describes the first difference.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b, std::string& why,
               const char* what) {
  if (a.size() != b.size()) {
    why = std::string(what) + ": sizes differ";
    return false;
  }
  if (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0) return true;
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (bits(a[i]) != bits(b[i]) && bad++ == 0) first = i;
  std::ostringstream s;
  s << what << ": " << bad << " of " << a.size() << " elements differ; first at " << first
    << ": 0x" << std::hex << bits(a[first]) << " vs 0x" << bits(b[first]);
  why = s.str();
  return false;
}

// ---- conversions -------------------------------------------------------------------------------

/// Float patterns that stress the rounding of f32 -> bf16 / f16: every top-16-bit pattern with
/// low halves at and around the bf16 rounding point; every f16-relevant exponent with low 13
/// bits around the f16 rounding point (and further down, where f16 subnormals round); random.
std::vector<float> float_patterns() {
  std::vector<std::uint32_t> p;
  const std::uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x0fff, 0x1000,
                                0x1001, 0x2fff, 0x3000, 0x5000, 0xc000, 0xe001, 0x4000, 0x00ff};
  for (std::uint32_t hi = 0; hi < 0x10000; ++hi)
    for (std::uint32_t lo : lows) p.push_back((hi << 16) | lo);
  std::mt19937 rng(7);
  // Exponents 100..145 cover f16 subnormals, normals and overflow; vary the low 14 bits.
  for (std::uint32_t e = 100; e <= 145; ++e)
    for (int i = 0; i < 2000; ++i) {
      const std::uint32_t sign = (rng() & 1u) << 31;
      const std::uint32_t man = rng() & 0x7fffffu;
      const std::uint32_t pick = rng() % 4;
      std::uint32_t low = man & 0x3fffu;
      if (pick == 0) low = 0x1000;  // exactly half an f16 ulp (normals)
      if (pick == 1) low = (man & 0x2000u) | 0x0fffu;
      p.push_back(sign | (e << 23) | (man & ~0x3fffu) | low);
    }
  for (int i = 0; i < 200000; ++i) p.push_back(static_cast<std::uint32_t>(rng()));
  std::vector<float> out(p.size());
  std::memcpy(out.data(), p.data(), p.size() * sizeof(float));
  return out;
}

#if STRATA_X86_SIMD
template <class From, class To>
void simd_convert(simd_level l, const From* s, To* d, std::size_t n) {
  if (l == simd_level::avx512) strata::optim::detail::avx512::convert(s, d, n);
  else strata::optim::detail::avx2::convert(s, d, n);
}

template <class To>
void check_from_float(simd_level l, const std::vector<float>& in) {
  std::vector<To> want(in.size()), got(in.size());
  strata::convert(in.data(), want.data(), in.size());
  // In pieces of odd lengths, so the tails of the vector loops are exercised too.
  for (std::size_t i = 0, len = 1; i < in.size(); i += len, len = len * 3 % 1001 + 1)
    simd_convert(l, in.data() + i, got.data() + i, std::min(len, in.size() - i));
  std::string why;
  INFO(simd_level_name(l) << ": float -> " << type_name(tag<To>{}));
  CHECK(same_bits(want, got, why, "converted"));
  INFO(why);
}

template <class From>
void check_to_float(simd_level l) {
  std::vector<From> in(0x10000);
  for (std::uint32_t b = 0; b < 0x10000; ++b)
    in[b] = From::from_bits(static_cast<std::uint16_t>(b));
  std::vector<float> want(in.size()), got(in.size());
  strata::convert(in.data(), want.data(), in.size());
  for (std::size_t i = 0, len = 1; i < in.size(); i += len, len = len * 5 % 997 + 1)
    simd_convert(l, in.data() + i, got.data() + i, std::min(len, in.size() - i));
  std::string why;
  const bool same = same_bits(want, got, why, "converted");
  INFO(simd_level_name(l) << ": " << type_name(tag<From>{}) << " -> float: " << why);
  CHECK(same);
}
#endif

TEST_CASE("SIMD conversions equal core/dtype.hpp bit for bit, NaNs included") {
  const auto levels = vector_levels();
#if STRATA_X86_SIMD
  const std::vector<float> floats = float_patterns();
  for (simd_level l : levels) {
    check_to_float<bf16>(l);
    check_to_float<f16>(l);
    check_from_float<bf16>(l, floats);
    check_from_float<f16>(l, floats);
  }
#endif
  if (levels.empty()) SUCCEED("no vector path on this machine");
}

// ---- every path == scalar ----------------------------------------------------------------------

struct config {
  const char* name;
  adam_params h;
  float grad_multiplier;
};

std::vector<config> configs() {
  adam_params adamw;  // AdamW with bias correction
  adamw.lr = 1e-2f;
  adamw.weight_decay = 0.05f;
  adam_params adam_l2;  // Adam (L2) without bias correction
  adam_params& a = adam_l2;
  a.lr = 3e-3f;
  a.beta1 = 0.8f;
  a.beta2 = 0.99f;
  a.eps = 1e-6f;
  a.weight_decay = 0.1f;
  a.mode = weight_decay_mode::l2;
  a.bias_correction = false;
  return {{"adamw+bias_correction", adamw, 1.0f / 1024}, {"adam_l2-bias_correction", a, 1.0f}};
}

/// The state of one run: master, m, v, copy (as bits of P; empty for no_copy).
template <class P>
struct state {
  std::vector<float> p, m, v;
  std::vector<std::conditional_t<std::is_same_v<P, no_copy>, float, P>> copy;
};

/// Gradients for step t: random normal values (times 1024 where grad_multiplier is 1/1024, as
/// with a loss scale), and at fixed positions ±0, subnormals, huge values and ±Inf.
template <class G>
std::vector<G> make_grads(std::size_t n, int t, float scale) {
  std::mt19937 rng(static_cast<unsigned>(1000 + t * 7 + n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<G> g(n);
  for (std::size_t i = 0; i < n; ++i) {
    float x = nd(rng) * scale;
    switch (i % 97) {
      case 5: x = 0.0f; break;
      case 11: x = -0.0f; break;
      case 17: x = 1e-40f; break;  // an f32 subnormal (f16: 0, bf16: subnormal)
      case 23: x = (t % 3 == 0) ? 3e38f : x; break;  // g * g overflows to Inf
      case 29: x = (t == 7) ? std::numeric_limits<float>::infinity() : x; break;
      case 31: x = (t == 9) ? -std::numeric_limits<float>::infinity() : x; break;
      case 37: x = 7e-6f; break;  // an f16 subnormal
      default: break;
    }
    if constexpr (std::is_same_v<G, float>) g[i] = x;
    else g[i] = G(x);
  }
  return g;
}

template <class P>
state<P> initial_state(std::size_t n) {
  std::mt19937 rng(static_cast<unsigned>(n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  state<P> s;
  s.p.resize(n);
  s.m.resize(n);
  s.v.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    s.p[i] = nd(rng);
    s.m[i] = nd(rng) * 1e-2f;
    s.v[i] = std::fabs(nd(rng)) * 1e-4f;
  }
  if constexpr (!std::is_same_v<P, no_copy>) s.copy.assign(n, P(0.0f));
  return s;
}

template <class G, class P>
void run(state<P>& s, const config& c, std::size_t n, int steps, simd_level level,
         unsigned threads) {
  const float scale = c.grad_multiplier == 1.0f ? 1.0f : 1.0f / c.grad_multiplier;
  for (int t = 1; t <= steps; ++t) {
    const std::vector<G> g = make_grads<G>(n, t, scale);
    const auto k = adam_step_scalars::make(c.h, static_cast<std::uint64_t>(t), c.grad_multiplier);
    P* copy = nullptr;
    if constexpr (!std::is_same_v<P, no_copy>) copy = s.copy.data();
    adam_update<G, P>(k, s.p, s.m, s.v, std::span<const G>(g), copy, level, threads);
  }
}

/// "" when a and b hold the same bits everywhere, else what differs.
template <class P>
std::string compare(const state<P>& a, const state<P>& b) {
  std::string why;
  if (!same_bits(a.p, b.p, why, "master")) return why;
  if (!same_bits(a.m, b.m, why, "m")) return why;
  if (!same_bits(a.v, b.v, why, "v")) return why;
  if (!same_bits(a.copy, b.copy, why, "copy")) return why;
  return {};
}

template <class G, class P>
void check_paths_equal_scalar(const std::vector<simd_level>& levels) {
  const std::size_t sizes[] = {0, 1, 3, 15, 16, 17, 31, 33, 1000, 100003};
  constexpr int steps = 20;
  for (const config& c : configs())
    for (std::size_t n : sizes) {
      state<P> want = initial_state<P>(n);
      run<G>(want, c, n, steps, simd_level::scalar, 1);
      for (simd_level l : levels) {
        state<P> got = initial_state<P>(n);
        run<G>(got, c, n, steps, l, 1);
        const std::string diff = compare(want, got);
        INFO(simd_level_name(l) << " vs scalar, G = " << type_name(tag<G>{}) << ", P = "
                                << type_name(tag<P>{}) << ", " << c.name << ", n = " << n
                                << ": " << diff);
        CHECK(diff.empty());
      }
      // The specials must have done something: Inf gradients at step 7 and 9 leave NaN masters
      // (m / d = Inf / Inf), so equality above covered NaN handling too.
      if (n > 31 && c.grad_multiplier == 1.0f) CHECK(std::isnan(want.p[29]));
    }
}

template <class G>
void check_all_copies(const std::vector<simd_level>& levels) {
  check_paths_equal_scalar<G, no_copy>(levels);
  check_paths_equal_scalar<G, float>(levels);
  check_paths_equal_scalar<G, bf16>(levels);
  check_paths_equal_scalar<G, f16>(levels);
}

TEST_CASE("every SIMD path equals the scalar path bit for bit") {
  const auto levels = vector_levels();
  if (levels.empty()) {
    SUCCEED("no vector path on this machine");
    return;
  }
  check_all_copies<float>(levels);
  check_all_copies<bf16>(levels);
  check_all_copies<f16>(levels);
}

template <class G, class P>
void check_threads(simd_level level) {
  const config c = configs()[0];
  struct run_case {
    std::size_t n;
    unsigned threads;
  };
  // threads = 0 splits only above 2 x 64 Ki elements; explicit counts split anything, and
  // more chunks than cores simply queue.
  const run_case cases[] = {{300007, 0}, {100003, 2}, {100003, 3}, {100003, 7}, {1000, 4},
                            {33, 2}};
  for (auto [n, threads] : cases) {
    state<P> one = initial_state<P>(n), many = initial_state<P>(n);
    run<G>(one, c, n, 3, level, 1);
    run<G>(many, c, n, 3, level, threads);
    const std::string diff = compare(one, many);
    INFO(simd_level_name(level) << ", G = " << type_name(tag<G>{}) << ", P = "
                                << type_name(tag<P>{}) << ", n = " << n << ", threads = "
                                << threads << ": " << diff);
    CHECK(diff.empty());
  }
}

TEST_CASE("multi-threaded updates equal single-threaded ones") {
  std::vector<simd_level> levels = vector_levels();
  levels.insert(levels.begin(), simd_level::scalar);
  for (simd_level l : levels) {
    check_threads<float, bf16>(l);
    check_threads<bf16, no_copy>(l);
    check_threads<f16, f16>(l);
  }
}

// ---- an independent reference in double --------------------------------------------------------

TEST_CASE("the float update follows a textbook Adam/AdamW in double over 500 steps") {
  // Written from the definitions (Kingma & Ba; Loshchilov & Hutter for AdamW), in double,
  // sharing nothing with the library but the hyper-parameters:
  //   g += wd * p (Adam);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
  //   mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t);
  //   p -= lr * (mhat / (sqrt(vhat) + eps)) [+ lr * wd * p, AdamW, with the p before the step]
  // Gradients are those of a noisy quadratic, 0.5 * a_i * (p - target)^2, computed from each
  // run's own p, so the runs stay coupled to their own trajectory as in training.
  //
  // Tolerance: |p_float - p_double| <= 2e-5 * (1 + |p_double|) at every step. Why that size:
  // each step rounds p (twice, ~6e-8 relative each) and the update lr * mhat / (sqrt(vhat) +
  // eps), whose relative error is a few float ulps (m and v are running averages whose
  // rounding errors decay with b1, b2; c1, c2 and the bias corrections are rounded to float
  // once), and the gradient, computed from each run's own p, feeds those differences back.
  // Over 500 steps with lr = 1e-2 that allows ~500 * (1.2e-7 + 1e-2 * 1e-6) ~ 7e-5 in the
  // worst case; measured here: 7.4e-6 (AdamW), 1.2e-6 (Adam L2). Mistakes land far outside:
  // bias correction left out 0.085, decay applied to the updated p 9.9e-4, L2 term halved
  // 0.13, eps inside the sqrt 3.6e-5 (AdamW, eps 1e-8) and 6.4e-3 (Adam, eps 1e-6).
  const std::size_t n = 4099;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> curv(0.1f, 2.0f);
  std::vector<float> p0(n), target(n), a(n), noise(n * 8);
  for (std::size_t i = 0; i < n; ++i) {
    p0[i] = nd(rng);
    target[i] = nd(rng);
    a[i] = curv(rng);
  }
  for (float& x : noise) x = nd(rng) * 0.1f;

  for (const config& c : configs()) {
    const adam_params& h = c.h;
    std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f);
    std::vector<double> pd(p0.begin(), p0.end()), md(n, 0.0), vd(n, 0.0);
    const double b1 = h.beta1, b2 = h.beta2, lr = h.lr, wd = h.weight_decay, eps = h.eps;
    double worst = 0, worst_m = 0;
    std::size_t mistakes = 0;
    for (int t = 1; t <= 500; ++t) {
      // The gradient each run sees, rounded to float (what a model hands the optimizer), and
      // fed to both unscaled (grad_multiplier 1 here; scaling is covered bitwise above).
      std::vector<float> gf(n), gd_f(n);
      for (std::size_t i = 0; i < n; ++i) {
        const float e = noise[(i * 8 + static_cast<std::size_t>(t)) % noise.size()];
        gf[i] = a[i] * (p[i] - target[i]) + e;
        gd_f[i] = static_cast<float>(a[i] * (pd[i] - target[i]) + e);
      }
      adam_update<float>(adam_step_scalars::make(h, static_cast<std::uint64_t>(t)), p, m, v,
                         std::span<const float>(gf), nullptr, simd_level::automatic, 0);
      const double bc1 = h.bias_correction ? 1 - std::pow(b1, t) : 1.0;
      const double bc2 = h.bias_correction ? 1 - std::pow(b2, t) : 1.0;
      for (std::size_t i = 0; i < n; ++i) {
        double g = gd_f[i];
        if (h.mode == weight_decay_mode::l2) g += wd * pd[i];
        md[i] = b1 * md[i] + (1 - b1) * g;
        vd[i] = b2 * vd[i] + (1 - b2) * g * g;
        const double mhat = md[i] / bc1, vhat = vd[i] / bc2;
        double next = pd[i] - lr * (mhat / (std::sqrt(vhat) + eps));
        if (h.mode == weight_decay_mode::decoupled) next -= lr * wd * pd[i];
        pd[i] = next;
        const double err = std::fabs(p[i] - pd[i]) / (1 + std::fabs(pd[i]));
        worst = std::max(worst, err);
        if (err > 2e-5) ++mistakes;
        worst_m = std::max(worst_m, std::fabs(m[i] - md[i]) / (1e-3 + std::fabs(md[i])));
      }
    }
    INFO(c.name << ": worst |p - p_ref| / (1 + |p_ref|) = " << worst << ", elements x steps "
                << "beyond 2e-5: " << mistakes << "; worst relative m error " << worst_m);
    CHECK(mistakes == 0);
    CHECK(worst_m < 1e-2);
    // And the runs went somewhere: p moved towards the targets by far more than the tolerance.
    double moved = 0;
    for (std::size_t i = 0; i < n; ++i) moved = std::max(moved, std::fabs(pd[i] - p0[i]));
    CHECK(moved > 0.5);
  }
}

// ---- errors ------------------------------------------------------------------------------------

std::string error_of(const adam_params& h) {
  try {
    h.validate("group 3");
  } catch (const config_error& e) {
    return e.what();
  }
  return {};
}

TEST_CASE("adam_params::validate names the field") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(error_of(adam_params{}).empty());
  struct bad_case {
    const char* field;
    adam_params h;
  };
  std::vector<bad_case> cases;
  auto with = [](auto set) {
    adam_params h;
    set(h);
    return h;
  };
  cases.push_back({"lr", with([&](adam_params& h) { h.lr = -1e-3f; })});
  cases.push_back({"lr", with([&](adam_params& h) { h.lr = inf; })});
  cases.push_back({"beta1", with([&](adam_params& h) { h.beta1 = 1.0f; })});
  cases.push_back({"beta1", with([&](adam_params& h) { h.beta1 = nan; })});
  cases.push_back({"beta2", with([&](adam_params& h) { h.beta2 = -0.1f; })});
  cases.push_back({"eps", with([&](adam_params& h) { h.eps = 0.0f; })});
  cases.push_back({"weight_decay", with([&](adam_params& h) { h.weight_decay = -1.0f; })});
  cases.push_back({"weight_decay", with([&](adam_params& h) { h.weight_decay = nan; })});
  for (const auto& c : cases) {
    const std::string msg = error_of(c.h);
    INFO("expected a message naming " << c.field << ", got: " << msg);
    CHECK(msg.find(std::string(c.field) + " = ") != std::string::npos);
    CHECK(msg.find("group 3") != std::string::npos);
  }
  CHECK_THROWS_AS(adam_step_scalars::make(adam_params{}, 0), config_error);
}

TEST_CASE("adam_update refuses mismatched lengths and a missing copy pointer") {
  std::vector<float> p(10), m(10), v(9), g(10);
  const auto k = adam_step_scalars::make(adam_params{}, 1);
  try {
    adam_update<float>(k, p, m, v, std::span<const float>(g));
    FAIL("no error for v of 9 elements");
  } catch (const config_error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("v 9") != std::string::npos);
  }
  v.resize(10);
  auto bf16_copy_without_pointer = [&] {
    adam_update<float, bf16>(k, p, m, v, std::span<const float>(g), nullptr);
  };
  CHECK_THROWS_AS(bf16_copy_without_pointer(), config_error);
  CHECK_NOTHROW(adam_update<float>(k, p, m, v, std::span<const float>(g)));
}

TEST_CASE("a SIMD level the CPU lacks is a config_error naming it") {
  using strata::cpu_features;
  using strata::optim::detail::resolve_simd;
  const cpu_features none{};
  cpu_features only_avx2{};
  only_avx2.avx = only_avx2.avx2 = only_avx2.fma = only_avx2.f16c = true;

  CHECK(resolve_simd(simd_level::automatic, none, "t") == simd_level::scalar);
  CHECK(resolve_simd(simd_level::scalar, none, "t") == simd_level::scalar);
  auto message = [](simd_level l, const cpu_features& f) {
    try {
      resolve_simd(l, f, "adam_update");
    } catch (const config_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string no_avx2 = message(simd_level::avx2, none);
  INFO(no_avx2);
  CHECK(no_avx2.find("avx2") != std::string::npos);
#if STRATA_X86_SIMD
  CHECK(no_avx2.find("the CPU has: none") != std::string::npos);
  CHECK(resolve_simd(simd_level::automatic, only_avx2, "t") == simd_level::avx2);
  CHECK(resolve_simd(simd_level::avx2, only_avx2, "t") == simd_level::avx2);
  const std::string no_512 = message(simd_level::avx512, only_avx2);
  INFO(no_512);
  CHECK(no_512.find("avx512") != std::string::npos);
  CHECK(no_512.find("the CPU has: avx avx2 fma f16c") != std::string::npos);
#endif
  // On this machine: automatic is the widest level cpu() allows, and asking adam_update for a
  // level it lacks throws before touching anything.
  CHECK(detect_simd() == strata::optim::detail::widest_simd(strata::cpu()));
  std::vector<float> p{1.0f}, m{0.0f}, v{0.0f}, g{1.0f};
  const auto k = adam_step_scalars::make(adam_params{}, 1);
  for (simd_level l : {simd_level::avx2, simd_level::avx512}) {
    const bool have = l == simd_level::avx2 ? strata::cpu().has_avx2_path()
                                            : strata::cpu().has_avx512_path();
    if (have && STRATA_X86_SIMD) CHECK_NOTHROW(adam_update<float>(k, p, m, v, g, nullptr, l));
    else CHECK_THROWS_AS(adam_update<float>(k, p, m, v, g, nullptr, l), config_error);
  }
}

}  // namespace
