// Tests for strata/optim/grad_stats.hpp: measure_gradient for f32 / bf16 / f16 against a plain
// long-double reference (Inf/NaN counted, not summed), clip_coefficient, and the backbone
// equivalence: a gradient split over 1-4 ranks of comm::thread_world, each rank measuring its
// shard and calling all_reduce_stats, gives the unsharded norm within the bound documented in
// grad_stats.hpp, the same clip coefficient and skip decision, and a clipped Adam update on each
// shard that is bitwise the unsharded clipped update.
#include "catch.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>
#include <strata/optim/adam.hpp>
#include <strata/optim/grad_stats.hpp>
#include <strata/optim/loss_scaler.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

using namespace strata;
using namespace std::chrono_literals;

namespace {

template <class G>
G from_float(float x) {
  if constexpr (std::is_same_v<G, float>) return x;
  else return G{x};
}

template <class G>
float to_f(G g) {
  if constexpr (std::is_same_v<G, float>) return g;
  else return static_cast<float>(g);
}

// Inf, -Inf and NaN of each type, as stored bits.
template <class G>
G special(int which) {
  if constexpr (std::is_same_v<G, float>) {
    const float v[] = {std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity(),
                       std::numeric_limits<float>::quiet_NaN()};
    return v[which];
  } else if constexpr (std::is_same_v<G, f16>) {
    const std::uint16_t v[] = {0x7c00, 0xfc00, 0x7e01};
    return f16::from_bits(v[which]);
  } else {
    const std::uint16_t v[] = {0x7f80, 0xff80, 0x7fc1};
    return bf16::from_bits(v[which]);
  }
}

/// Gradient-like values with magnitudes from 1e-4 to 1e2, both signs, representable in G
/// without overflow (f16 tops out at 65504, and is the narrowest).
template <class G>
std::vector<G> gradient(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exp10(-4, 2);
  std::vector<G> v(n);
  for (auto& x : v)
    x = from_float<G>(scale * mant(rng) * std::pow(10.0f, static_cast<float>(exp10(rng))));
  return v;
}

/// The definition, as plainly as possible: long double, one element after another.
template <class G>
optim::grad_stats reference_stats(const std::vector<G>& g, float multiplier) {
  long double sum = 0;
  std::uint64_t bad = 0;
  for (const G& e : g) {
    const float f = to_f(e);
    if (!std::isfinite(f)) {
      ++bad;
      continue;
    }
    const long double x = static_cast<long double>(multiplier) * f;
    sum += x * x;
  }
  return {static_cast<double>(sum), bad};
}

/// The documented relative bound on a sum of squares of n terms (grad_stats.hpp).
double sum_bound(std::size_t n, int ranks = 1) {
  return 2.0 * (static_cast<double>(n) / 8 + 16 + ranks) * std::ldexp(1.0, -53);
}

bool same_bits(const std::vector<float>& a, const float* b) {
  // memcmp's pointers must be valid even for 0 bytes (an empty vector's data() may be null).
  return a.empty() || std::memcmp(a.data(), b, a.size() * sizeof(float)) == 0;
}

template <class G>
void check_measure() {
  const std::size_t sizes[] = {0, 1, 7, 8, 9, 65535, 65536, 65537, 200003};
  const float multipliers[] = {1.0f, 1.0f / 1024.0f, 3.0f};
  unsigned seed = 1;
  for (std::size_t n : sizes)
    for (float mult : multipliers) {
      auto g = gradient<G>(n, seed++);
      std::uint64_t injected = 0;
      for (std::size_t i = 5; i < n; i += 9973) g[i] = special<G>(static_cast<int>(injected++ % 3));
      const auto got = optim::measure_gradient(std::span<const G>(g), mult);
      const auto want = reference_stats(g, mult);
      INFO("n = " << n << ", multiplier = " << mult);
      CHECK(got.nonfinite == injected);
      CHECK(got.finite() == (injected == 0));
      CHECK(std::isfinite(got.sum_squares));
      CHECK(std::abs(got.sum_squares - want.sum_squares) <= sum_bound(n) * want.sum_squares);
      if (n == 0) CHECK(got.sum_squares == 0.0);
    }

  // Exactly representable: n ones times 0.5 square to n / 4, whatever the summation order.
  std::vector<G> ones(100001, from_float<G>(1.0f));
  CHECK(optim::measure_gradient(std::span<const G>(ones), 0.5f).sum_squares == 100001 / 4.0);
  // The order is fixed by the length only: the same data at another address gives the same bits.
  auto g = gradient<G>(150000, 77);
  std::vector<G> copy(g.size() + 1);
  std::memcpy(copy.data() + 1, g.data(), g.size() * sizeof(G));
  const auto a = optim::measure_gradient(std::span<const G>(g), 0.25f);
  const auto b = optim::measure_gradient(std::span<const G>(copy).subspan(1), 0.25f);
  CHECK(a.sum_squares == b.sum_squares);

  // Long enough for the thread pool to split it: still the blocks' sums added in index order,
  // bit for bit, whichever thread measured which block.
  auto big = gradient<G>(9 * optim::measure_block_elements + 17, 78);
  big[3 * optim::measure_block_elements + 1] = special<G>(0);
  const auto whole = optim::measure_gradient(std::span<const G>(big), 0.5f);
  optim::grad_stats by_block;
  for (std::size_t b = 0; b < big.size(); b += optim::measure_block_elements)
    by_block += optim::measure_gradient(
        std::span<const G>(big).subspan(b, std::min(optim::measure_block_elements, big.size() - b)),
        0.5f);
  CHECK(std::memcmp(&whole, &by_block, sizeof whole) == 0);
  CHECK(whole.nonfinite == 1);
  const auto want = reference_stats(big, 0.5f);
  CHECK(std::abs(whole.sum_squares - want.sum_squares) <= sum_bound(big.size()) * want.sum_squares);
}

}  // namespace

TEST_CASE("measure_gradient: f32, bf16 and f16 against a long-double reference, Inf/NaN counted") {
  check_measure<float>();
  check_measure<bf16>();
  check_measure<f16>();
}

TEST_CASE("measure_gradient: a non-finite multiplier is a config_error") {
  std::vector<float> g(10, 1.0f);
  CHECK_THROWS_AS(optim::measure_gradient(std::span<const float>(g),
                                          std::numeric_limits<float>::infinity()),
                  config_error);
  std::string message;
  try {
    optim::measure_gradient(std::span<const float>(g), std::nanf(""));
  } catch (const config_error& e) {
    message = e.what();
  }
  CHECK(message.find("multiplier") != std::string::npos);
}

TEST_CASE("global_norm and clip_coefficient") {
  optim::grad_stats s{25.0, 0};
  CHECK(optim::global_norm(s) == 5.0);
  CHECK(optim::clip_coefficient(5.0, 0.0) == 1.0f);     // clipping off
  CHECK(optim::clip_coefficient(5.0, -1.0) == 1.0f);
  CHECK(optim::clip_coefficient(5.0, 10.0) == 1.0f);    // already small enough
  CHECK(optim::clip_coefficient(5.0, 1.0) == static_cast<float>(1.0 / (5.0 + 1e-6)));
  CHECK(optim::clip_coefficient(0.0, 1.0) == 1.0f);
  CHECK(optim::clip_coefficient(std::nan(""), 1.0) == 1.0f);
  CHECK(optim::clip_coefficient(std::numeric_limits<double>::infinity(), 1.0) == 0.0f);

  optim::grad_stats t{1.5, 2};
  t += optim::grad_stats{2.5, 3};
  CHECK(t.sum_squares == 4.0);
  CHECK(t.nonfinite == 5);
  CHECK_FALSE(t.finite());
}

TEST_CASE("all_reduce_stats on one rank (comm::solo) returns its input bit for bit") {
  comm::solo c;
  const optim::grad_stats s{0.1 + 1e-17, 3};
  const auto r = optim::all_reduce_stats(c, s);
  CHECK(std::memcmp(&r, &s, sizeof s) == 0);
}

namespace {

// One training run over `steps` steps, on a gradient of n elements split over `ranks` ranks
// (shard = ceil(n / ranks), the last ones shorter or empty), with dynamic loss scaling and
// clipping to max_norm. Compared with the same run on one unsharded array.
template <class G>
void sharded_equals_unsharded(std::size_t n, int ranks) {
  const int steps = 6;
  const int poisoned_step = 3;  // one element of one shard is NaN on this step
  const double max_norm = 1.0;
  optim::adam_params params;
  params.lr = 1e-2f;
  params.weight_decay = 0.01f;

  const auto world_size = static_cast<std::size_t>(ranks);
  const std::size_t shard = (n + world_size - 1) / world_size;  // padded: the last may be short
  auto begin_of = [&](int r) { return std::min(n, shard * static_cast<std::size_t>(r)); };
  auto end_of = [&](int r) { return std::min(n, shard * static_cast<std::size_t>(r + 1)); };
  auto grad_of_step = [&](int step) {
    // Loss-scaled gradients: norm ~ hundreds before unscaling, so clipping to 1 is active.
    auto g = gradient<G>(n, 1000u + static_cast<unsigned>(step), 64.0f);
    if (step == poisoned_step) g[n / 2] = special<G>(2);
    return g;
  };
  const auto initial = gradient<float>(n, 5);

  // ---- unsharded reference
  std::vector<float> p = initial, m(n, 0.0f), v(n, 0.0f);
  std::vector<double> ref_norm(steps);
  std::vector<float> ref_clip(steps);
  std::vector<bool> ref_took(steps);
  {
    auto scaler = optim::loss_scaler::dynamic(64.0f, 2);
    std::uint64_t t = 0;
    for (int step = 0; step < steps; ++step) {
      const auto g = grad_of_step(step);
      const float unscale = scaler.grad_multiplier();
      const auto stats = optim::measure_gradient(std::span<const G>(g), unscale);
      ref_norm[step] = optim::global_norm(stats);
      ref_took[step] = scaler.update(!stats.finite());
      if (!ref_took[step]) continue;
      ref_clip[step] = optim::clip_coefficient(ref_norm[step], max_norm);
      const auto k = optim::adam_step_scalars::make(params, ++t, unscale * ref_clip[step]);
      optim::adam_update(k, std::span<float>(p), std::span<float>(m), std::span<float>(v),
                         std::span<const G>(g));
    }
  }

  // ---- sharded: each rank keeps its shard of p, m, v and sees only its shard of the gradient
  struct rank_result {
    std::vector<optim::grad_stats> stats;
    std::vector<float> clip;
    std::vector<bool> took;
    std::vector<float> p, m, v;
  };
  std::vector<rank_result> results(static_cast<std::size_t>(ranks));
  comm::thread_world world(ranks, 10s);
  world.run([&](comm::threads& c) {
    rank_result& out = results[static_cast<std::size_t>(c.rank())];
    const std::size_t b = begin_of(c.rank()), e = end_of(c.rank());
    std::vector<float> ps(initial.begin() + static_cast<std::ptrdiff_t>(b),
                          initial.begin() + static_cast<std::ptrdiff_t>(e));
    std::vector<float> ms(e - b, 0.0f), vs(e - b, 0.0f);
    auto scaler = optim::loss_scaler::dynamic(64.0f, 2);
    std::uint64_t t = 0;
    for (int step = 0; step < steps; ++step) {
      const auto g = grad_of_step(step);
      const std::span<const G> mine = std::span<const G>(g).subspan(b, e - b);
      const float unscale = scaler.grad_multiplier();
      const auto stats = optim::all_reduce_stats(c, optim::measure_gradient(mine, unscale));
      out.stats.push_back(stats);
      out.took.push_back(scaler.update(!stats.finite()));
      if (!out.took.back()) {
        out.clip.push_back(0.0f);
        continue;
      }
      out.clip.push_back(optim::clip_coefficient(optim::global_norm(stats), max_norm));
      const auto k = optim::adam_step_scalars::make(params, ++t, unscale * out.clip.back());
      optim::adam_update(k, std::span<float>(ps), std::span<float>(ms), std::span<float>(vs),
                         mine);
    }
    out.p = std::move(ps);
    out.m = std::move(ms);
    out.v = std::move(vs);
  });

  INFO("n = " << n << ", ranks = " << ranks << ", G size " << sizeof(G));
  const double norm_bound = sum_bound(n, ranks) / 2 + 1e-16;  // sqrt halves a relative error
  int clipped_steps = 0;
  for (int step = 0; step < steps; ++step) {
    INFO("step " << step);
    for (int r = 0; r < ranks; ++r) {
      const auto& res = results[static_cast<std::size_t>(r)];
      // Every rank holds the same bits (rank-order fold of exactly transported stats).
      CHECK(std::memcmp(&res.stats[step], &results[0].stats[step], sizeof res.stats[step]) == 0);
      CHECK(res.took[step] == ref_took[step]);
      CHECK(res.stats[step].nonfinite == (step == poisoned_step ? 1u : 0u));
      const double norm = optim::global_norm(res.stats[step]);
      CHECK(std::abs(norm - ref_norm[step]) <= norm_bound * ref_norm[step]);
      if (ref_took[step]) CHECK(res.clip[step] == ref_clip[step]);
    }
    if (ref_took[step] && ref_clip[step] < 1.0f) ++clipped_steps;
  }
  CHECK_FALSE(ref_took[poisoned_step]);
  if (n > 100) CHECK(clipped_steps == steps - 1);  // clipping was active: the coefficient mattered

  for (int r = 0; r < ranks; ++r) {
    const auto& res = results[static_cast<std::size_t>(r)];
    const std::size_t b = begin_of(r);
    REQUIRE(res.p.size() == end_of(r) - b);
    CHECK(same_bits(res.p, p.data() + b));
    CHECK(same_bits(res.m, m.data() + b));
    CHECK(same_bits(res.v, v.data() + b));
  }
}

}  // namespace

TEST_CASE("clipping with a sharded norm == clipping unsharded, 1-4 ranks, f32 / bf16 / f16") {
  const std::size_t sizes[] = {3, 4099, 300007};  // 3 < 4 ranks: some shards are empty
  for (std::size_t n : sizes)
    for (int ranks = 1; ranks <= 4; ++ranks) {
      sharded_equals_unsharded<float>(n, ranks);
      sharded_equals_unsharded<bf16>(n, ranks);
      sharded_equals_unsharded<f16>(n, ranks);
    }
}
