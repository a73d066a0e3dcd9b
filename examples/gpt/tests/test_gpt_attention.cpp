// ctest-timeout: 120
// Tiled online-softmax attention == the naive O(T^2) attention, forward and backward.
//
// The reference below builds the whole (T, T) score matrix per head, masks, softmaxes and
// multiplies — the textbook definition, in double. The tiled kernels never hold that matrix;
// they must give the same out, lse and dqkv for T below, at and above the tile size, T not a
// multiple of it, one or several heads. Tolerances: the double instantiation must match to
// 1e-12 (only summation order differs); the float one to 2e-5 absolute on outputs of order 1
// and 1e-4 of the largest gradient (float rounding plus the float fast exp, rel. error ~1e-7).
// The backward is also checked against central differences of the tiled forward (double).
#include "catch.hpp"

#include "host/attention.hpp"
#include "host/model.hpp"  // gpt::rng

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using vecd = std::vector<double>;

vecd randn(std::size_t n, std::uint64_t seed, double sd = 1.0) {
  gpt::rng gen(seed);
  vecd v(n);
  for (auto& x : v) x = sd * gen.normal();
  return v;
}

// Naive causal attention. att (B, NH, T, T) is kept for the backward.
void naive_forward(vecd& out, vecd& lse, vecd& att, const vecd& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH, C3 = 3 * C;
  const double scale = 1.0 / std::sqrt(double(hs));
  out.assign(static_cast<std::size_t>(B) * T * C, 0.0);
  lse.assign(static_cast<std::size_t>(B) * NH * T, 0.0);
  att.assign(static_cast<std::size_t>(B) * NH * T * T, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * C3 + h * hs];
        double* a = &att[((static_cast<std::size_t>(b) * NH + h) * T + t) * T];
        double mx = -std::numeric_limits<double>::infinity();
        for (int u = 0; u <= t; ++u) {
          const double* k = &qkv[(b * T + u) * C3 + C + h * hs];
          double s = 0;
          for (int d = 0; d < hs; ++d) s += q[d] * k[d];
          a[u] = s * scale;
          mx = std::max(mx, a[u]);
        }
        double sum = 0;
        for (int u = 0; u <= t; ++u) sum += std::exp(a[u] - mx);
        for (int u = 0; u <= t; ++u) a[u] = std::exp(a[u] - mx) / sum;
        lse[(b * NH + h) * T + t] = mx + std::log(sum);
        double* o = &out[(b * T + t) * C + h * hs];
        for (int u = 0; u <= t; ++u) {
          const double* v = &qkv[(b * T + u) * C3 + 2 * C + h * hs];
          for (int d = 0; d < hs; ++d) o[d] += a[u] * v[d];
        }
      }
}

// Naive backward through the stored probabilities: dV = P^T dO, dP = dO V^T,
// dS = P (dP - rowsum(P dP)), dQ = dS K / sqrt(hs), dK = dS^T Q / sqrt(hs).
void naive_backward(vecd& dqkv, const vecd& dout, const vecd& qkv, const vecd& att, int B, int T,
                    int C, int NH) {
  const int hs = C / NH, C3 = 3 * C;
  const double scale = 1.0 / std::sqrt(double(hs));
  dqkv.assign(qkv.size(), 0.0);
  std::vector<double> dp(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const double* a = &att[((static_cast<std::size_t>(b) * NH + h) * T + t) * T];
        const double* dO = &dout[(b * T + t) * C + h * hs];
        double pdp = 0;
        for (int u = 0; u <= t; ++u) {
          const double* v = &qkv[(b * T + u) * C3 + 2 * C + h * hs];
          double* dv = &dqkv[(b * T + u) * C3 + 2 * C + h * hs];
          dp[u] = 0;
          for (int d = 0; d < hs; ++d) dp[u] += dO[d] * v[d], dv[d] += a[u] * dO[d];
          pdp += a[u] * dp[u];
        }
        const double* q = &qkv[(b * T + t) * C3 + h * hs];
        double* dq = &dqkv[(b * T + t) * C3 + h * hs];
        for (int u = 0; u <= t; ++u) {
          const double ds = a[u] * (dp[u] - pdp) * scale;
          const double* k = &qkv[(b * T + u) * C3 + C + h * hs];
          double* dk = &dqkv[(b * T + u) * C3 + C + h * hs];
          for (int d = 0; d < hs; ++d) dq[d] += ds * k[d], dk[d] += ds * q[d];
        }
      }
}

double max_abs_diff(const vecd& a, const vecd& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
template <class F>
double max_abs_diff(const std::vector<F>& a, const vecd& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}
double max_abs(const vecd& a) {
  double m = 0;
  for (double x : a) m = std::max(m, std::abs(x));
  return m;
}

struct shape_case {
  int B, T, C, NH, tile;
};

}  // namespace

TEST_CASE("gpt attention: tiled == naive, forward and backward", "[gpt]") {
  const shape_case cases[] = {
      {2, 37, 24, 3, 16},                    // T not a multiple of the tile, 3 heads of 8
      {1, 32, 16, 2, 16},                    // T a multiple of the tile
      {2, 5, 16, 4, 16},                     // T below one tile
      {1, 1, 8, 1, 64},                      // a single position
      {2, 150, 64, 2, gpt::attention_tile},  // the default tile, heads of 32
  };
  for (const auto& sc : cases) {
    const int B = sc.B, T = sc.T, C = sc.C, NH = sc.NH, tile = sc.tile;
    INFO("B " << B << " T " << T << " C " << C << " NH " << NH << " tile " << tile);
    const vecd qkv = randn(static_cast<std::size_t>(B) * T * 3 * C, 1000 + T);
    const vecd dout = randn(static_cast<std::size_t>(B) * T * C, 2000 + T);
    vecd ref_out, ref_lse, att, ref_dqkv;
    naive_forward(ref_out, ref_lse, att, qkv, B, T, C, NH);
    naive_backward(ref_dqkv, dout, qkv, att, B, T, C, NH);
    const double gscale = max_abs(ref_dqkv);

    // double: the same maths in another order.
    vecd out(ref_out.size()), lse(ref_lse.size()), dqkv(qkv.size(), 0.0);
    gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, tile);
    gpt::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C,
                            NH, tile);
    CHECK(max_abs_diff(out, ref_out) < 1e-12);
    CHECK(max_abs_diff(lse, ref_lse) < 1e-12);
    CHECK(max_abs_diff(dqkv, ref_dqkv) < 1e-12 * std::max(1.0, gscale));

    // float: what the model runs.
    std::vector<float> qkv_f(qkv.begin(), qkv.end()), dout_f(dout.begin(), dout.end());
    std::vector<float> out_f(out.size()), lse_f(lse.size()), dqkv_f(qkv.size(), 0.0f);
    gpt::attention_forward(out_f.data(), lse_f.data(), qkv_f.data(), B, T, C, NH, tile);
    gpt::attention_backward(dqkv_f.data(), dout_f.data(), qkv_f.data(), out_f.data(), lse_f.data(),
                            B, T, C, NH, tile);
    CHECK(max_abs_diff(out_f, ref_out) < 2e-5);
    CHECK(max_abs_diff(lse_f, ref_lse) < 2e-5);
    CHECK(max_abs_diff(dqkv_f, ref_dqkv) < 1e-4 * gscale);
  }
}

TEST_CASE("gpt attention: the first position attends only to itself", "[gpt]") {
  // Causality, directly: out[t=0] is v[0], and changing a later key or value leaves earlier
  // outputs untouched (bitwise).
  const int B = 1, T = 20, C = 8, NH = 2, tile = 8, hs = C / NH;
  vecd qkv = randn(B * T * 3 * C, 5), out(B * T * C), lse(B * NH * T);
  gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, tile);
  for (int d = 0; d < C; ++d) CHECK(out[d] == Approx(qkv[2 * C + d]).epsilon(1e-14));
  const vecd before = out;
  for (int d = C; d < 3 * C; ++d) qkv[17 * 3 * C + d] += 1.0;  // k and v of position 17
  gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, tile);
  for (int t = 0; t < 17; ++t)  // every position before 17 (16 shares its tile: masked exactly)
    for (int d = 0; d < C; ++d) CHECK(out[t * C + d] == before[t * C + d]);
  (void)hs;
}

TEST_CASE("gpt attention: backward == central differences of the tiled forward", "[gpt]") {
  const int B = 2, T = 19, C = 12, NH = 2, tile = 8;
  vecd qkv = randn(B * T * 3 * C, 77), R = randn(B * T * C, 78);
  vecd out(B * T * C), lse(B * NH * T);
  auto f = [&] {
    gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, tile);
    double s = 0;
    for (std::size_t i = 0; i < out.size(); ++i) s += R[i] * out[i];
    return s;
  };
  f();
  vecd d(qkv.size(), 0.0);
  gpt::attention_backward(d.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH,
                          tile);
  // Every coordinate: 1368 of them, 2 forwards each.
  const double eps = 1e-5;
  int failed = 0;
  double worst = 0;
  for (std::size_t i = 0; i < qkv.size(); ++i) {
    const double saved = qkv[i];
    qkv[i] = saved + eps;
    const double fp = f();
    qkv[i] = saved - eps;
    const double fm = f();
    qkv[i] = saved;
    const double num = (fp - fm) / (2 * eps);
    const double bound = 1e-6 * std::max(std::abs(num), std::abs(d[i])) + 1e-9;
    const double ratio = std::abs(num - d[i]) / bound;
    worst = std::max(worst, ratio);
    failed += ratio > 1 ? 1 : 0;
  }
  INFO("worst error / tolerance " << worst);
  CHECK(failed == 0);
}
