// ctest-timeout: 120
// The mini-GPT's backward passes against finite differences, layer by layer and whole.
//
// The kernels are templates over the real type, so every gradient here is checked on the very
// same code instantiated in DOUBLE: central differences with eps = 1e-5 are then accurate to
// ~1e-9 relative, and the check can be tight (|analytic - numeric| <= 1e-6 * max(|a|, |n|) +
// 1e-9 at every sampled coordinate) where float differences would hide an error of a few
// percent in their noise. A second set of checks runs the float model on the same weights and
// asks that it agree with the double one (2e-5 of each tensor's largest gradient), which is
// what makes the float kernels' own rounding (and fast exp/tanh) trustworthy.
// Backward kernels accumulate: each check starts the gradients at random values and takes
// the difference, so "+=" is part of what is tested.
#include "catch.hpp"

#include "gpt_config.hpp"
#include "host/attention.hpp"
#include "host/block.hpp"
#include "host/kernels.hpp"
#include "host/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

namespace {

using vecd = std::vector<double>;

constexpr double fd_eps = 1e-5;
constexpr double fd_rtol = 1e-6;
constexpr double fd_atol = 1e-9;

vecd randn(std::size_t n, std::uint64_t seed, double sd = 1.0, double mean = 0.0) {
  gpt::rng gen(seed);
  vecd v(n);
  for (auto& x : v) x = mean + sd * gen.normal();
  return v;
}

double dot(const vecd& a, const double* b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct fd_report {
  int checked = 0, failed = 0;
  double worst = 0;  // largest |a - n| / (rtol * max(|a|,|n|) + atol); <= 1 passes
  std::string first_failure;
};

// Compares analytic[i] with the central difference of f() in p[offset + i], at every
// coordinate when the tensor is small, else at `samples` random ones (always including the
// first and the last).
template <class F>
fd_report check_grad(const std::string& what, double* p, const double* analytic, std::size_t n,
                     F&& f, int samples, std::uint64_t seed) {
  std::vector<std::size_t> idx;
  if (n <= static_cast<std::size_t>(samples)) {
    idx.resize(n);
    std::iota(idx.begin(), idx.end(), std::size_t{0});
  } else {
    gpt::rng gen(seed);
    idx.push_back(0);
    idx.push_back(n - 1);
    while (idx.size() < static_cast<std::size_t>(samples))
      idx.push_back(static_cast<std::size_t>(gen.next_u64() % n));
  }
  fd_report r;
  for (std::size_t i : idx) {
    const double saved = p[i];
    p[i] = saved + fd_eps;
    const double fp = f();
    p[i] = saved - fd_eps;
    const double fm = f();
    p[i] = saved;
    const double num = (fp - fm) / (2 * fd_eps);
    const double a = analytic[i];
    const double bound = fd_rtol * std::max(std::abs(a), std::abs(num)) + fd_atol;
    const double ratio = std::abs(a - num) / bound;
    r.worst = std::max(r.worst, ratio);
    ++r.checked;
    if (ratio > 1) {
      if (r.failed++ == 0) {
        std::ostringstream os;
        os << what << "[" << i << "]: analytic " << a << " numeric " << num;
        r.first_failure = os.str();
      }
    }
  }
  return r;
}

#define REQUIRE_GRAD(report)                                                                      \
  do {                                                                                            \
    const fd_report& r_ = (report);                                                               \
    INFO(r_.first_failure << " (checked " << r_.checked << ", worst error/tolerance " << r_.worst \
                          << ")");                                                                \
    CHECK(r_.checked > 0);                                                                        \
    CHECK(r_.failed == 0);                                                                        \
  } while (0)

gpt::gpt_config tiny_config() {
  gpt::gpt_config cfg;
  cfg.vocab = 256, cfg.context = 8, cfg.layers = 2, cfg.heads = 2, cfg.width = 16;
  return cfg;
}

// Block parameters that exercise every term: GPT-2 init plus noise on biases and LN weights
// (at init those are exactly 0 and 1, where some mistakes cancel).
vecd random_block_params(const gpt::gpt_config& cfg, std::uint64_t seed) {
  const std::vector<float> init = gpt::initial_layer(cfg, 1, seed);
  vecd p(init.begin(), init.end());
  gpt::rng gen(seed);
  for (auto& x : p) x += 0.05 * gen.normal();
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("gpt config: slots tile the flat arrays, counts and validation", "[gpt]") {
  gpt::gpt_config cfg;  // defaults: V 256, T 128, L 4, NH 4, C 128
  REQUIRE_NOTHROW(cfg.validate());
  for (auto slots : {gpt::block_slots(cfg), gpt::embed_slots(cfg)}) {
    std::size_t off = 0;
    for (const auto& s : slots) {
      CHECK(s.offset == off);
      std::size_t n = 1;
      for (int d : s.shape) n *= static_cast<std::size_t>(d);
      CHECK(s.numel == n);
      off += s.numel;
    }
    CHECK(off == (slots.size() == 12 ? gpt::block_numel(cfg) : gpt::embed_numel(cfg)));
  }
  CHECK(gpt::block_slots(cfg)[2].name == "attn.c_attn.weight");
  CHECK(gpt::block_slots(cfg)[2].shape == std::vector<int>{384, 128});  // (out, in)
  CHECK(gpt::block_tensor_name(3, gpt::block_slots(cfg)[11]) == "h.3.mlp.c_proj.bias");
  // block_tensors::carve (what the kernels use) agrees with the slots.
  std::vector<float> dummy(gpt::block_numel(cfg));
  const auto t = gpt::block_tensors<float*>::carve(dummy.data(), cfg.width);
  const float* expect[] = {t.ln1_w, t.ln1_b, t.qkv_w, t.qkv_b, t.attproj_w, t.attproj_b,
                           t.ln2_w, t.ln2_b, t.fc_w,  t.fc_b,  t.fcproj_w,  t.fcproj_b};
  const auto slots = gpt::block_slots(cfg);
  for (std::size_t i = 0; i < slots.size(); ++i) CHECK(expect[i] == dummy.data() + slots[i].offset);
  // 12 C^2 + 13 C per block; (V + T + 2) C for the rest.
  CHECK(gpt::parameter_count(cfg) == (256 + 128 + 2) * 128 + 4 * (12 * 128 * 128 + 13 * 128));
  CHECK(gpt::flops_per_token(cfg) ==
        Approx(6.0 * gpt::parameter_count(cfg) + 12.0 * 4 * 128 * 128));
  auto bad = cfg;
  bad.heads = 3;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("heads"));
  bad = cfg;
  bad.vocab = 0;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("vocab"));
  // 4 x width is a slot's dimension (an int): a width beyond INT_MAX / 4 is refused, not
  // overflowed into a negative shape.
  bad = cfg;
  bad.heads = 1;
  bad.width = std::numeric_limits<int>::max() / 4 + 1;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("width must be at most 536870911") &&
                                        Catch::Contains("got 536870912"));
  bad.width = std::numeric_limits<int>::max() / 4;
  CHECK_NOTHROW(bad.validate());
}

namespace {
// find_slot's result refers into the list it searched, so the list must not be a temporary
// (find_slot(block_slots(cfg), ...) dangled at the end of the statement: a heap-use-after-free
// under ASan). The rvalue overload is deleted; these say so at compile time.
template <class List>
concept find_slot_accepts = requires(List&& slots) {
  gpt::find_slot(static_cast<List&&>(slots), std::string("ln_1.weight"));
};
static_assert(find_slot_accepts<const std::vector<gpt::tensor_slot>&>);
static_assert(find_slot_accepts<std::vector<gpt::tensor_slot>&>);
static_assert(!find_slot_accepts<std::vector<gpt::tensor_slot>>);  // a temporary
static_assert(!find_slot_accepts<std::vector<gpt::tensor_slot>&&>);
}  // namespace

TEST_CASE("gpt config: find_slot finds by name in a list that outlives it", "[gpt]") {
  const gpt::gpt_config cfg;
  const std::vector<gpt::tensor_slot> slots = gpt::block_slots(cfg);
  const gpt::tensor_slot& fc = gpt::find_slot(slots, "mlp.c_fc.weight");
  CHECK(&fc == &slots[8]);
  CHECK(fc.shape == std::vector<int>{4 * cfg.width, cfg.width});
  CHECK_THROWS_WITH(gpt::find_slot(slots, "mlp.c_fc.wieght"), Catch::Contains("mlp.c_fc.wieght"));
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("gpt gradients: encoder (repeated tokens accumulate)", "[gpt]") {
  const int B = 2, T = 5, C = 8, V = 7;
  const std::vector<int> tokens = {3, 1, 3, 3, 0, 6, 1, 1, 2, 3};
  vecd wte = randn(V * C, 1), wpe = randn(T * C, 2), R = randn(B * T * C, 3);
  vecd out(B * T * C);
  auto f = [&] {
    gpt::encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dot(R, out.data());
  };
  vecd dwte0 = randn(V * C, 4), dwpe0 = randn(T * C, 5), dwte = dwte0, dwpe = dwpe0;
  gpt::encoder_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  for (std::size_t i = 0; i < dwte.size(); ++i) dwte[i] -= dwte0[i];
  for (std::size_t i = 0; i < dwpe.size(); ++i) dwpe[i] -= dwpe0[i];
  REQUIRE_GRAD(check_grad("dwte", wte.data(), dwte.data(), wte.size(), f, 1000, 6));
  REQUIRE_GRAD(check_grad("dwpe", wpe.data(), dwpe.data(), wpe.size(), f, 1000, 7));
}

TEST_CASE("gpt gradients: layernorm", "[gpt]") {
  const int N = 6, C = 16;
  vecd inp = randn(N * C, 10, 2.0, 3.0);  // a mean far from 0
  vecd w = randn(C, 11, 0.3, 1.0), b = randn(C, 12, 0.3), R = randn(N * C, 13);
  vecd out(N * C), mean(N), rstd(N);
  auto f = [&] {
    gpt::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), N,
                           C);
    return dot(R, out.data());
  };
  f();
  vecd di0 = randn(N * C, 14), dw0 = randn(C, 15), db0 = randn(C, 16);
  vecd di = di0, dw = dw0, db = db0;
  gpt::layernorm_backward(di.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  for (int i = 0; i < N * C; ++i) di[i] -= di0[i];
  for (int c = 0; c < C; ++c) dw[c] -= dw0[c], db[c] -= db0[c];
  REQUIRE_GRAD(check_grad("dinp", inp.data(), di.data(), di.size(), f, 1000, 17));
  REQUIRE_GRAD(check_grad("dweight", w.data(), dw.data(), dw.size(), f, 1000, 18));
  REQUIRE_GRAD(check_grad("dbias", b.data(), db.data(), db.size(), f, 1000, 19));
  // The kept statistics are the row's mean and 1/sqrt(var + eps).
  f();
  double m = 0, v = 0;
  for (int c = 0; c < C; ++c) m += inp[c];
  m /= C;
  for (int c = 0; c < C; ++c) v += (inp[c] - m) * (inp[c] - m);
  CHECK(mean[0] == Approx(m).epsilon(1e-12));
  CHECK(rstd[0] == Approx(1 / std::sqrt(v / C + 1e-5)).epsilon(1e-12));
}

TEST_CASE("gpt gradients: matmul (odd sizes, with and without bias)", "[gpt]") {
  const int N = 5, C = 7, OC = 9;
  vecd inp = randn(N * C, 20), W = randn(OC * C, 21), bias = randn(OC, 22), R = randn(N * OC, 23);
  vecd out(N * OC);
  auto f = [&] {
    gpt::matmul_forward(out.data(), inp.data(), W.data(), bias.data(), N, C, OC);
    return dot(R, out.data());
  };
  f();
  // Forward against the definition.
  double max_err = 0;
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias[o];
      for (int c = 0; c < C; ++c) s += inp[n * C + c] * W[o * C + c];
      max_err = std::max(max_err, std::abs(s - out[n * OC + o]));
    }
  CHECK(max_err < 1e-12);
  vecd no_bias(N * OC), zeros(OC, 0.0), zero_bias(N * OC);
  gpt::matmul_forward(no_bias.data(), inp.data(), W.data(), nullptr, N, C, OC);
  gpt::matmul_forward(zero_bias.data(), inp.data(), W.data(), zeros.data(), N, C, OC);
  CHECK(no_bias == zero_bias);

  vecd di0 = randn(N * C, 24), dW0 = randn(OC * C, 25), db0 = randn(OC, 26);
  vecd di = di0, dW = dW0, db = db0;
  gpt::matmul_backward(di.data(), dW.data(), db.data(), R.data(), inp.data(), W.data(), N, C, OC);
  for (std::size_t i = 0; i < di.size(); ++i) di[i] -= di0[i];
  for (std::size_t i = 0; i < dW.size(); ++i) dW[i] -= dW0[i];
  for (std::size_t i = 0; i < db.size(); ++i) db[i] -= db0[i];
  REQUIRE_GRAD(check_grad("dinp", inp.data(), di.data(), di.size(), f, 1000, 27));
  REQUIRE_GRAD(check_grad("dweight", W.data(), dW.data(), dW.size(), f, 1000, 28));
  REQUIRE_GRAD(check_grad("dbias", bias.data(), db.data(), db.size(), f, 1000, 29));
  // dinp and dbias may be left out.
  vecd dW2 = dW0;
  gpt::matmul_backward(nullptr, dW2.data(), nullptr, R.data(), inp.data(), W.data(), N, C, OC);
  for (std::size_t i = 0; i < dW2.size(); ++i)
    CHECK(dW2[i] - dW0[i] == Approx(dW[i]).margin(1e-12));
}

TEST_CASE("gpt gradients: gelu (tanh approximation)", "[gpt]") {
  const std::size_t n = 64;
  vecd inp(n), R = randn(n, 30), out(n);
  for (std::size_t i = 0; i < n; ++i) inp[i] = -6.0 + 12.0 * i / (n - 1) + 0.01;  // both tails
  auto f = [&] {
    gpt::gelu_forward(out.data(), inp.data(), n);
    return dot(R, out.data());
  };
  f();
  const double x = inp[40];
  CHECK(out[40] ==
        Approx(0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)))));
  vecd di0 = randn(n, 31), di = di0;
  gpt::gelu_backward(di.data(), inp.data(), R.data(), n);
  for (std::size_t i = 0; i < n; ++i) di[i] -= di0[i];
  REQUIRE_GRAD(check_grad("dinp", inp.data(), di.data(), n, f, 1000, 32));
  // The float path (fast tanh) matches the double one.
  std::vector<float> xf(inp.begin(), inp.end()), of(n), dif(n, 0.0f), Rf(R.begin(), R.end());
  gpt::gelu_forward(of.data(), xf.data(), n);
  gpt::gelu_backward(dif.data(), xf.data(), Rf.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(of[i] == Approx(out[i]).margin(1e-6));
    CHECK(dif[i] == Approx(di[i]).margin(1e-5));
  }
}

TEST_CASE("gpt gradients: attention (T not a multiple of the tile)", "[gpt]") {
  const int B = 2, T = 11, C = 12, NH = 3, tile = 4;
  vecd qkv = randn(B * T * 3 * C, 40), R = randn(B * T * C, 41);
  vecd out(B * T * C), lse(B * NH * T);
  auto f = [&] {
    gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, tile);
    return dot(R, out.data());
  };
  f();
  vecd d0 = randn(qkv.size(), 42), d = d0;
  gpt::attention_backward(d.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH,
                          tile);
  for (std::size_t i = 0; i < d.size(); ++i) d[i] -= d0[i];
  REQUIRE_GRAD(check_grad("dqkv", qkv.data(), d.data(), d.size(), f, 400, 43));
}

TEST_CASE("gpt gradients: head (ln_f, tied LM head, cross-entropy)", "[gpt]") {
  const int N = 6, C = 16, V = 23;
  const std::vector<int> targets = {4, 22, -1, 0, 4, 9};  // one position without a target
  vecd x = randn(N * C, 50), wte = randn(V * C, 51, 0.3), lw = randn(C, 52, 0.2, 1.0),
       lb = randn(C, 53, 0.2);
  vecd xf(N * C), mean(N), rstd(N), logits(N * V), losses(N);
  auto f = [&] {
    return gpt::head_forward(xf.data(), mean.data(), rstd.data(), logits.data(), losses.data(),
                             x.data(), targets.data(), wte.data(), lw.data(), lb.data(), N, C, V);
  };
  const double loss = f();
  // The loss is the mean over the 5 rows with a target of -log softmax.
  double expect = 0;
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      CHECK(losses[n] == 0);
      continue;
    }
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(logits[n * V + v]);
    CHECK(losses[n] == Approx(std::log(z) - logits[n * V + targets[n]]).epsilon(1e-12));
    expect += losses[n];
  }
  CHECK(loss == Approx(expect / 5).epsilon(1e-12));

  vecd dx0 = randn(N * C, 54), dlw0 = randn(C, 55), dlb0 = randn(C, 56), dwte0 = randn(V * C, 57);
  vecd dx = dx0, dlw = dlw0, dlb = dlb0, dwte = dwte0, dlogits(N * V), dxf(N * C);
  gpt::head_backward(dx.data(), dlw.data(), dlb.data(), dwte.data(), dlogits.data(), dxf.data(),
                     logits.data(), xf.data(), x.data(), mean.data(), rstd.data(), targets.data(),
                     wte.data(), lw.data(), N, C, V);
  for (std::size_t i = 0; i < dx.size(); ++i) dx[i] -= dx0[i];
  for (std::size_t i = 0; i < dwte.size(); ++i) dwte[i] -= dwte0[i];
  for (int c = 0; c < C; ++c) dlw[c] -= dlw0[c], dlb[c] -= dlb0[c];
  REQUIRE_GRAD(check_grad("dx", x.data(), dx.data(), dx.size(), f, 1000, 58));
  REQUIRE_GRAD(check_grad("dwte", wte.data(), dwte.data(), dwte.size(), f, 1000, 59));
  REQUIRE_GRAD(check_grad("dln_f.weight", lw.data(), dlw.data(), C, f, 1000, 60));
  REQUIRE_GRAD(check_grad("dln_f.bias", lb.data(), dlb.data(), C, f, 1000, 61));
  // dloss scales the gradient.
  vecd dx_half(N * C, 0.0), dlw2(C, 0.0), dlb2(C, 0.0), dwte2(V * C, 0.0);
  f();
  gpt::head_backward(dx_half.data(), dlw2.data(), dlb2.data(), dwte2.data(), dlogits.data(),
                     dxf.data(), logits.data(), xf.data(), x.data(), mean.data(), rstd.data(),
                     targets.data(), wte.data(), lw.data(), N, C, V, 0.5);
  for (std::size_t i = 0; i < dx.size(); ++i)
    CHECK(dx_half[i] == Approx(0.5 * dx[i]).margin(1e-12));
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("gpt gradients: one block, through its recompute", "[gpt]") {
  const auto cfg = tiny_config();
  const int B = 2;
  for (int T : {8, 5}) {  // full context, and a shorter batch
    INFO("T = " << T);
    vecd params = random_block_params(cfg, 70);
    vecd x = randn(B * T * cfg.width, 71), R = randn(B * T * cfg.width, 72);
    vecd y(x.size());
    gpt::basic_block_scratch<double> scratch(cfg, B);
    auto f = [&] {
      gpt::block_forward(cfg, B, T, params.data(), x.data(), y.data(), scratch);
      return dot(R, y.data());
    };
    vecd dx(x.size()), dparams(params.size(), 123.0);  // both overwritten
    // The scratch holds another input's activations: the backward must recompute, not reuse.
    vecd other = randn(x.size(), 73);
    gpt::block_forward(cfg, B, T, params.data(), other.data(), y.data(), scratch);
    gpt::block_backward(cfg, B, T, params.data(), x.data(), R.data(), dx.data(), dparams.data(),
                        scratch);
    REQUIRE_GRAD(check_grad("dx", x.data(), dx.data(), dx.size(), f, 300, 74));
    for (const auto& slot : gpt::block_slots(cfg))
      REQUIRE_GRAD(check_grad(slot.name, params.data() + slot.offset, dparams.data() + slot.offset,
                              slot.numel, f, 200, 75));
    // dx may alias dy.
    vecd inout = R, dparams2(params.size());
    gpt::block_backward(cfg, B, T, params.data(), x.data(), inout.data(), inout.data(),
                        dparams2.data(), scratch);
    CHECK(inout == dx);
    CHECK(dparams2 == dparams);
  }
}

TEST_CASE("gpt gradients: whole model, every parameter tensor", "[gpt]") {
  const auto cfg = tiny_config();  // L 2, NH 2, C 16, context 8, V 256
  const int B = 2;
  gpt::basic_host_model<double> model(cfg, B);
  model.init_weights(7);
  gpt::rng gen(8);
  for (auto& p : model.embed_params()) p += 0.01 * gen.normal();
  for (int l = 0; l < cfg.layers; ++l)
    for (auto& p : model.block_params(l)) p += 0.05 * gen.normal();
  // The float model on the same weights.
  gpt::host_model fm(cfg, B);
  fm.embed_params().assign(model.embed_params().begin(), model.embed_params().end());
  for (int l = 0; l < cfg.layers; ++l)
    fm.block_params(l).assign(model.block_params(l).begin(), model.block_params(l).end());

  for (int T : {8, 6}) {  // the full context, and shorter sequences
    INFO("T = " << T);
    std::vector<int> tokens(B * T), targets(B * T);
    for (int i = 0; i < B * T; ++i) {
      tokens[i] = static_cast<int>(gen.next_u64() % 256);
      targets[i] = static_cast<int>(gen.next_u64() % 256);
    }
    targets[3] = -1;  // an ignored position
    auto f = [&] {
      return static_cast<double>(model.forward(tokens.data(), targets.data(), B, T));
    };
    const double loss_d = f();
    model.backward();
    const vecd embed_grad = model.embed_grads();
    std::vector<vecd> block_grad;
    for (int l = 0; l < cfg.layers; ++l) block_grad.push_back(model.block_grads(l));

    // Up to 200 coordinates of every tensor (all of the small ones).
    for (const auto& slot : gpt::embed_slots(cfg))
      REQUIRE_GRAD(check_grad(slot.name, model.embed_params().data() + slot.offset,
                              embed_grad.data() + slot.offset, slot.numel, f, 200, 80 + T));
    for (int l = 0; l < cfg.layers; ++l)
      for (const auto& slot : gpt::block_slots(cfg))
        REQUIRE_GRAD(
            check_grad(gpt::block_tensor_name(l, slot), model.block_params(l).data() + slot.offset,
                       block_grad[l].data() + slot.offset, slot.numel, f, 200, 90 + T + l));

    // float == double, within float rounding: the loss to 1e-5 relative, every gradient to
    // 2e-5 of its tensor's largest (measured: ~5e-7).
    const float loss_f = fm.forward(tokens.data(), targets.data(), B, T);
    CHECK(loss_f == Approx(loss_d).epsilon(1e-5));
    fm.backward();
    auto agree = [](const std::string& what, const std::vector<float>& g, const vecd& ref) {
      double scale = 0, err = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        scale = std::max(scale, std::abs(ref[i]));
        err = std::max(err, std::abs(g[i] - ref[i]));
      }
      INFO(what << ": max |float - double| " << err << ", max |grad| " << scale);
      CHECK(scale > 0);
      CHECK(err <= 2e-5 * scale);
    };
    agree("embed", fm.embed_grads(), embed_grad);
    for (int l = 0; l < cfg.layers; ++l)
      agree("block " + std::to_string(l), fm.block_grads(l), block_grad[l]);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("gpt model: loss at init is ln(V), results repeat bit for bit", "[gpt]") {
  const gpt::gpt_config cfg;  // V 256, T 128, L 4, NH 4, C 128
  const int B = 2, T = cfg.context;
  gpt::host_model model(cfg, B);
  model.init_weights(1234);
  gpt::rng gen(99);
  std::vector<int> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = static_cast<int>(gen.next_u64() % 256);
    targets[i] = static_cast<int>(gen.next_u64() % 256);
  }
  const float loss = model.forward(tokens.data(), targets.data(), B, T);
  INFO("loss at init " << loss << ", ln(V) " << std::log(256.0));
  CHECK(std::abs(loss - std::log(256.0)) < 0.1);
  model.backward();
  const auto g1 = model.block_grads(1), e1 = model.embed_grads();
  CHECK(model.forward(tokens.data(), targets.data(), B, T) == loss);
  model.backward();
  CHECK(model.block_grads(1) == g1);  // fixed-order reductions: no dependence on thread timing
  CHECK(model.embed_grads() == e1);
  // Bad input is refused with the culprit named.
  tokens[5] = 256;
  CHECK_THROWS_WITH(model.forward(tokens.data(), targets.data(), B, T),
                    Catch::Contains("token 256"));
  CHECK_THROWS_AS(model.forward(tokens.data(), nullptr, B + 1, T), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("gpt kernels: a NaN input gives NaN, in vector loops too, and nothing else changes",
          "[gpt]") {
  // A diverging run feeds NaN logits to softmax and NaN pre-activations to GELU. The exponent
  // of fast_exp used to come from converting a float to int, undefined for NaN (UBSan:
  // "nan is outside the range of representable values of type 'int'"); it must give NaN,
  // also when the compiler vectorises the loop, and leave its neighbours as they were.
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(gpt::fast_exp(qnan)));
  CHECK(std::isnan(gpt::fast_exp(-qnan)));
  CHECK(std::isnan(gpt::fast_tanh(qnan)));
  std::vector<float> in(203), exp_out(in.size()), tanh_out(in.size());
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = i % 7 == 3 ? qnan : -30.0f + 0.3f * static_cast<float>(i);
  const int n = static_cast<int>(in.size());
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    exp_out[i] = gpt::fast_exp(in[i]);
    tanh_out[i] = gpt::fast_tanh(in[i]);
  }
  int nan_where_nan = 0, same_elsewhere = 0, nan_count = 0;
  for (int i = 0; i < n; ++i) {
    if (std::isnan(in[i])) {
      ++nan_count;
      nan_where_nan += std::isnan(exp_out[i]) && std::isnan(tanh_out[i]);
    } else {
      same_elsewhere += exp_out[i] == gpt::fast_exp(in[i]) && tanh_out[i] == gpt::fast_tanh(in[i]) &&
                        std::abs(exp_out[i] - std::exp(double(in[i]))) <= 2e-7 * std::exp(double(in[i]));
    }
  }
  CHECK(nan_count == 29);
  CHECK(nan_where_nan == nan_count);
  CHECK(same_elsewhere == n - nan_count);
  // Through a kernel: GELU of a NaN is NaN, its neighbours are finite.
  std::vector<float> g(in.size());
  gpt::gelu_forward(g.data(), in.data(), n);
  CHECK(std::isnan(g[3]));
  CHECK(std::isfinite(g[4]));
}

TEST_CASE("gpt kernels: float fast exp/tanh accuracy, GEMMs split over threads", "[gpt]") {
  // fast_exp: relative error < 2e-7 wherever the result is a normal float; fast_tanh: absolute
  // error < 5e-7; both saturate cleanly outside.
  double worst_exp = 0, worst_tanh = 0;
  for (double x = -87.0; x <= 88.0; x += 0.00731) {
    const float xf = static_cast<float>(x);
    const double ref = std::exp(double(xf));
    worst_exp = std::max(worst_exp, std::abs(gpt::fast_exp(xf) - ref) / ref);
    if (std::abs(x) < 20)
      worst_tanh = std::max(worst_tanh, std::abs(gpt::fast_tanh(xf) - std::tanh(double(xf))));
  }
  CHECK(worst_exp < 2e-7);
  CHECK(worst_tanh < 5e-7);
  CHECK(gpt::fast_exp(-200.0f) == 0.0f);
  CHECK(gpt::fast_tanh(1e6f) == 1.0f);
  CHECK(gpt::fast_tanh(-1e6f) == -1.0f);
  CHECK(std::isnan(gpt::fast_exp(std::nanf(""))));
  // Far outside: still 0 and "huge" (x below -8.7e6 makes the shifted sum negative).
  CHECK(gpt::fast_exp(-1e7f) == 0.0f);
  CHECK(gpt::fast_exp(-1e8f) == 0.0f);
  CHECK(gpt::fast_exp(1e7f) > 1e38f);

  // With OpenBLAS single-threaded, matmuls split their rows over the OpenMP threads: the
  // result must not change (against a double reference, and split == unsplit within float).
  const int N = 300, C = 96, OC = 200;  // big enough to be split, rows not a multiple of 16
  vecd inp = randn(N * C, 90), W = randn(OC * C, 91), bias = randn(OC, 92);
  std::vector<float> fi(inp.begin(), inp.end()), fW(W.begin(), W.end()),
      fb(bias.begin(), bias.end());
  std::vector<float> threaded(N * OC), dW_threaded(OC * C, 0.0f);
  gpt::use_one_thread_pool();
  CHECK(gpt::blas_single_threaded());
  gpt::matmul_forward(threaded.data(), fi.data(), fW.data(), fb.data(), N, C, OC);
  gpt::matmul_backward(nullptr, dW_threaded.data(), nullptr, threaded.data(), fi.data(), fW.data(),
                       N, C, OC);
  double err = 0;
  vecd ref(N * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias[o];
      for (int c = 0; c < C; ++c) s += double(fi[n * C + c]) * fW[o * C + c];
      ref[n * OC + o] = s;
      err = std::max(err, std::abs(s - threaded[n * OC + o]));
    }
  CHECK(err < 1e-4);
  double err_dw = 0, scale = 0;
  for (int o = 0; o < OC; ++o)
    for (int c = 0; c < C; ++c) {
      double s = 0;
      for (int n = 0; n < N; ++n) s += double(threaded[n * OC + o]) * fi[n * C + c];
      err_dw = std::max(err_dw, std::abs(s - dW_threaded[o * C + c]));
      scale = std::max(scale, std::abs(s));
    }
  CHECK(err_dw < 1e-5 * scale);
}
