// ctest-timeout: 300
// The mini-GPT's CUDA path == its host path: every kernel against the host kernel it twins,
// then the whole model's loss and gradients against host_model, then AdamW against strata's
// host Adam. Own main (tests/cuda/cuda_test.hpp): exits 77, skipped, without a usable GPU.
//
// Each kernel test runs twice:
//   f32   inputs, outputs and accumulation in fp32 (cuBLASLt with CUBLAS_COMPUTE_32F, no TF32).
//         Only summation order and exp/tanh implementations differ from the host (which uses
//         OpenBLAS and a Cephes exp), so the tolerance is 1e-4 of the largest reference value.
//   bf16  the inputs are rounded to bf16 first and the host computes on those same rounded
//         values in fp32; the GPU rounds its X outputs to bf16 (half an ulp: 2^-9 relative).
//         Tolerance 1e-2 of the largest reference value (a few bf16 ulps of headroom).
// Errors are printed with their tolerance, so a run on a GPU shows the margins.
// The whole model (vocab 97, context 24, 2 layers, 4 heads, width 64, B 3, T 21 < context,
// some targets -1) against host_model from the same init:
//   f32   loss within 1e-5 relative, every parameter tensor's gradient within 1e-3 of its
//         largest element;
//   bf16  (bf16 activations, residual stream and weights copy, fp32 master and gradients)
//         loss within 5e-3 relative, every gradient tensor within 5e-2 in relative L2 norm.
// Checkpointing on == off (within 1e-6: both run the same deterministic kernels), and the
// device AdamW == strata's scalar host Adam bit for bit over two steps, the bf16 copy == the
// master weights rounded.
#include "cuda_test.hpp"

#include "cuda/attention.cuh"
#include "cuda/gemm.cuh"
#include "cuda/kernels.cuh"
#include "cuda/model.cuh"
#include "host/attention.hpp"
#include "host/kernels.hpp"
#include "host/model.hpp"

#include <strata/optim/adam.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace {

namespace gg = gpt::gpu;
using gg::bf16;
using vecf = std::vector<float>;

constexpr double kernel_tol_f32 = 1e-4;
constexpr double kernel_tol_bf16 = 1e-2;
// bf16 attention on tensor cores rounds P and dS to bf16 before their second products.
constexpr double attention_tc_tol_bwd = 2e-2;

template <class X>
constexpr double kernel_tol() {
  return std::is_same_v<X, float> ? kernel_tol_f32 : kernel_tol_bf16;
}
template <class X>
const char* type_name() {
  return std::is_same_v<X, float> ? "f32" : "bf16";
}

vecf randn(std::size_t n, std::uint64_t seed, float sd = 1.0f) {
  gpt::rng gen(seed);
  vecf v(n);
  for (auto& x : v) x = static_cast<float>(sd * gen.normal());
  return v;
}

std::vector<int> random_ints(std::size_t n, int lo, int hi, std::uint64_t seed) {  // [lo, hi)
  gpt::rng gen(seed);
  std::vector<int> v(n);
  for (auto& x : v) x = lo + static_cast<int>(gen.uniform() * (hi - lo));
  return v;
}

/// v rounded to X's precision (what the GPU will see), as floats.
template <class X>
vecf rounded(vecf v) {
  for (auto& x : v) x = gg::to_f32(gg::from_f32<X>(x));
  return v;
}

template <class X>
gg::device_array<X> to_device(const vecf& v, const char* name = "test input") {
  std::vector<X> raw(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) raw[i] = gg::from_f32<X>(v[i]);
  gg::device_array<X> d(v.size(), name);
  gg::upload(d.data(), raw.data(), raw.size(), name);
  return d;
}

gg::device_array<int> to_device(const std::vector<int>& v) {
  gg::device_array<int> d(v.size(), "test ints");
  gg::upload(d.data(), v.data(), v.size(), "test ints");
  return d;
}

template <class X>
vecf to_host(const X* p, std::size_t n) {
  strata::check_cuda(cudaDeviceSynchronize(), "test sync");
  std::vector<X> raw(n);
  gg::download(raw.data(), p, n, "test output");
  vecf out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = gg::to_f32(raw[i]);
  return out;
}

// max |got - want| / max |want|; infinity when sizes differ or got has a NaN/Inf.
double max_error(const vecf& got, const vecf& want) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? worst / scale : worst;
}

// ||got - want||_2 / ||want||_2.
double l2_error(const vecf& got, const vecf& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void expect_close(const std::string& what, const vecf& got, const vecf& want, double tol,
                  bool l2 = false) {
  const double err = l2 ? l2_error(got, want) : max_error(got, want);
  const bool ok = err <= tol;
  std::printf("  %-4s %-44s %s error %.3g (tolerance %.1g)\n", ok ? "ok" : "BAD", what.c_str(),
              l2 ? "rel. L2" : "max", err, tol);
  GPU_CHECK(err <= tol);
}

vecf slice(const vecf& v, std::size_t off, std::size_t n) {
  return vecf(v.begin() + static_cast<std::ptrdiff_t>(off),
              v.begin() + static_cast<std::ptrdiff_t>(off + n));
}

// Rows (N, cols) out of a (N, ld) matrix.
vecf unpad(const vecf& v, int N, int cols, int ld) {
  vecf out(static_cast<std::size_t>(N) * cols);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(n) * cols + c] = v[static_cast<std::size_t>(n) * ld + c];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

template <class X>
void test_encoder() {
  const int B = 3, T = 17, C = 64, V = 50, N = B * T;
  const double tol = kernel_tol<X>();
  const auto tokens = random_ints(N, 0, V, 1);  // with repeats: the scatter must add them
  const vecf wte = rounded<X>(randn(std::size_t(V) * C, 2));
  const vecf wpe = rounded<X>(randn(std::size_t(T) * C, 3));
  auto d_tokens = to_device(tokens);
  auto d_wte = to_device<X>(wte), d_wpe = to_device<X>(wpe);
  gg::device_array<X> d_out(std::size_t(N) * C, "out");
  gg::encoder_forward(d_out.data(), d_tokens.data(), d_wte.data(), d_wpe.data(), B, T, C, nullptr);
  vecf out(std::size_t(N) * C);
  gpt::encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  expect_close(std::string("encoder_forward ") + type_name<X>(), to_host(d_out.data(), out.size()), out, tol);

  const vecf dout = rounded<X>(randn(std::size_t(N) * C, 4));
  vecf dwte = randn(std::size_t(V) * C, 5), dwpe = randn(std::size_t(T) * C, 6);  // += onto these
  auto d_dout = to_device<X>(dout);
  auto d_dwte = to_device<float>(dwte), d_dwpe = to_device<float>(dwpe);
  gg::device_token_index ix(N);
  ix.assign(gg::build_token_index(tokens.data(), N, V), nullptr);
  gg::encoder_backward(d_dwte.data(), d_dwpe.data(), d_dout.data(), ix, B, T, C, nullptr);
  gpt::encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  expect_close(std::string("encoder_backward dwte ") + type_name<X>(), to_host(d_dwte.data(), dwte.size()), dwte, tol);
  expect_close(std::string("encoder_backward dwpe ") + type_name<X>(), to_host(d_dwpe.data(), dwpe.size()), dwpe, tol);
}

template <class X>
void test_layernorm() {
  const int N = 37, C = 80;  // C not a multiple of the warp: the lanes' loops end unevenly
  const double tol = kernel_tol<X>();
  const vecf inp = rounded<X>(randn(std::size_t(N) * C, 10, 2.0f));
  vecf w = randn(C, 11), b = randn(C, 12);
  for (auto& x : w) x += 1.0f;
  w = rounded<X>(w), b = rounded<X>(b);
  auto d_inp = to_device<X>(inp), d_w = to_device<X>(w), d_b = to_device<X>(b);
  gg::device_array<X> d_out(std::size_t(N) * C, "out");
  gg::device_array<float> d_mean(N, "mean"), d_rstd(N, "rstd");
  gg::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_inp.data(), d_w.data(),
                        d_b.data(), N, C, nullptr);
  vecf out(std::size_t(N) * C), mean(N), rstd(N);
  gpt::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), N, C);
  const std::string t = type_name<X>();
  expect_close("layernorm_forward out " + t, to_host(d_out.data(), out.size()), out, tol);
  expect_close("layernorm_forward mean " + t, to_host(d_mean.data(), N), mean, kernel_tol_f32);
  expect_close("layernorm_forward rstd " + t, to_host(d_rstd.data(), N), rstd, kernel_tol_f32);

  // Backward from the host's statistics (the GPU's were just checked), accumulating.
  const vecf dout = rounded<X>(randn(std::size_t(N) * C, 13));
  vecf dinp = rounded<X>(randn(std::size_t(N) * C, 14)), dw = randn(C, 15), db = randn(C, 16);
  auto d_dout = to_device<X>(dout), d_dinp = to_device<X>(dinp);
  auto d_dw = to_device<float>(dw), d_db = to_device<float>(db);
  auto d_mean_h = to_device<float>(mean), d_rstd_h = to_device<float>(rstd);
  gg::device_array<float> ws(gg::colsum_workspace_floats(N, C), "ws");
  gg::layernorm_backward(d_dinp.data(), d_dw.data(), d_db.data(), ws.data(), d_dout.data(),
                         d_inp.data(), d_w.data(), d_mean_h.data(), d_rstd_h.data(), N, C, true,
                         nullptr);
  gpt::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  expect_close("layernorm_backward dinp (+=) " + t, to_host(d_dinp.data(), dinp.size()), dinp, tol);
  expect_close("layernorm_backward dweight (+=) " + t, to_host(d_dw.data(), C), dw, tol);
  expect_close("layernorm_backward dbias (+=) " + t, to_host(d_db.data(), C), db, tol);
}

template <class X>
void test_matmul() {
  const int N = 45, C = 64, OC = 96;
  const double tol = kernel_tol<X>();
  const std::string t = type_name<X>();
  gg::gemm_engine g;
  const vecf inp = rounded<X>(randn(std::size_t(N) * C, 20));
  const vecf w = rounded<X>(randn(std::size_t(OC) * C, 21, 0.1f));
  const vecf bias = rounded<X>(randn(OC, 22));
  auto d_inp = to_device<X>(inp), d_w = to_device<X>(w), d_bias = to_device<X>(bias);
  gg::device_array<X> d_out(std::size_t(N) * OC, "out");
  vecf out(std::size_t(N) * OC);
  for (bool with_bias : {true, false}) {
    gg::matmul_forward(g, d_out.data(), d_inp.data(), d_w.data(), with_bias ? d_bias.data() : nullptr,
                       N, C, OC, nullptr);
    gpt::matmul_forward(out.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, N, C, OC);
    expect_close("matmul_forward " + std::string(with_bias ? "with bias " : "no bias ") + t,
                 to_host(d_out.data(), out.size()), out, tol);
  }

  // Backward, accumulating onto random gradients.
  const vecf dout = rounded<X>(randn(std::size_t(N) * OC, 23));
  vecf dinp = rounded<X>(randn(std::size_t(N) * C, 24));
  vecf dw = randn(std::size_t(OC) * C, 25), db = randn(OC, 26);
  auto d_dout = to_device<X>(dout), d_dinp = to_device<X>(dinp);
  auto d_dw = to_device<float>(dw), d_db = to_device<float>(db);
  gg::device_array<float> ws(gg::colsum_workspace_floats(N, OC), "ws");
  gg::matmul_backward(g, d_dinp.data(), d_dw.data(), d_db.data(), ws.data(), d_dout.data(),
                      d_inp.data(), d_w.data(), N, C, OC, true, true, nullptr);
  gpt::matmul_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), N, C, OC);
  expect_close("matmul_backward dinp (+=) " + t, to_host(d_dinp.data(), dinp.size()), dinp, tol);
  expect_close("matmul_backward dweight (+=) " + t, to_host(d_dw.data(), dw.size()), dw, tol);
  expect_close("matmul_backward dbias (+=) " + t, to_host(d_db.data(), db.size()), db, tol);

  // Overwriting: whatever was there is gone.
  gg::matmul_backward(g, d_dinp.data(), d_dw.data(), d_db.data(), ws.data(), d_dout.data(),
                      d_inp.data(), d_w.data(), N, C, OC, false, false, nullptr);
  std::fill(dinp.begin(), dinp.end(), 0.0f), std::fill(dw.begin(), dw.end(), 0.0f),
      std::fill(db.begin(), db.end(), 0.0f);
  gpt::matmul_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), N, C, OC);
  expect_close("matmul_backward dinp (=) " + t, to_host(d_dinp.data(), dinp.size()), dinp, tol);
  expect_close("matmul_backward dweight (=) " + t, to_host(d_dw.data(), dw.size()), dw, tol);
  expect_close("matmul_backward dbias (=) " + t, to_host(d_db.data(), db.size()), db, tol);

  // An odd output width written with a padded row stride (the vocab of the head): the padding
  // is neither written by the forward nor read by the backward.
  const int V = 101, ld = 128;
  const vecf wv = rounded<X>(randn(std::size_t(V) * C, 27, 0.1f));
  auto d_wv = to_device<X>(wv);
  vecf padded(std::size_t(N) * ld, 7.0f);
  auto d_padded = to_device<X>(padded);
  gg::matmul_forward(g, d_padded.data(), d_inp.data(), d_wv.data(), static_cast<const X*>(nullptr),
                     N, C, V, nullptr, ld);
  vecf outv(std::size_t(N) * V);
  gpt::matmul_forward(outv.data(), inp.data(), wv.data(), nullptr, N, C, V);
  const vecf got = to_host(d_padded.data(), padded.size());
  expect_close("matmul_forward ld 128, OC 101 " + t, unpad(got, N, V, ld), outv, tol);
  bool pad_kept = true;
  for (int n = 0; n < N; ++n)
    for (int c = V; c < ld; ++c) pad_kept = pad_kept && got[std::size_t(n) * ld + c] == 7.0f;
  GPU_CHECK(pad_kept);

  vecf doutv = rounded<X>(randn(std::size_t(N) * ld, 28));
  for (int n = 0; n < N; ++n)
    for (int c = V; c < ld; ++c) doutv[std::size_t(n) * ld + c] = 1e30f;  // must not be read
  auto d_doutv = to_device<X>(doutv);
  gg::device_array<X> d_dinpv(std::size_t(N) * C, "dinp");
  gg::device_array<float> d_dwv(std::size_t(V) * C, "dweight");
  gg::matmul_backward_input(g, d_dinpv.data(), d_doutv.data(), d_wv.data(), N, C, V, false, nullptr, ld);
  gg::matmul_backward_weight(g, d_dwv.data(), d_doutv.data(), d_inp.data(), N, C, V, false, nullptr, ld);
  vecf dinpv(std::size_t(N) * C, 0.0f), dwv(std::size_t(V) * C, 0.0f);
  const vecf dout_dense = unpad(doutv, N, V, ld);
  gpt::matmul_backward(dinpv.data(), dwv.data(), static_cast<float*>(nullptr), dout_dense.data(),
                       inp.data(), wv.data(), N, C, V);
  expect_close("matmul_backward_input ld 128 " + t, to_host(d_dinpv.data(), dinpv.size()), dinpv, tol);
  expect_close("matmul_backward_weight ld 128 " + t, to_host(d_dwv.data(), dwv.size()), dwv, tol);
}

template <class X>
void test_gelu_residual() {
  const std::size_t n = 10007;
  const double tol = kernel_tol<X>();
  const std::string t = type_name<X>();
  const vecf inp = rounded<X>(randn(n, 30, 2.0f)), other = rounded<X>(randn(n, 31));
  auto d_inp = to_device<X>(inp), d_other = to_device<X>(other);
  gg::device_array<X> d_out(n, "out");
  gg::gelu_forward(d_out.data(), d_inp.data(), n, nullptr);
  vecf out(n);
  gpt::gelu_forward(out.data(), inp.data(), n);
  expect_close("gelu_forward " + t, to_host(d_out.data(), n), out, tol);

  const vecf dout = rounded<X>(randn(n, 32));
  vecf dinp = rounded<X>(randn(n, 33));
  auto d_dout = to_device<X>(dout), d_dinp = to_device<X>(dinp);
  gg::gelu_backward(d_dinp.data(), d_inp.data(), d_dout.data(), n, true, nullptr);
  gpt::gelu_backward(dinp.data(), inp.data(), dout.data(), n);
  expect_close("gelu_backward (+=) " + t, to_host(d_dinp.data(), n), dinp, tol);
  gg::gelu_backward(d_dinp.data(), d_inp.data(), d_dout.data(), n, false, nullptr);
  std::fill(dinp.begin(), dinp.end(), 0.0f);
  gpt::gelu_backward(dinp.data(), inp.data(), dout.data(), n);
  expect_close("gelu_backward (=) " + t, to_host(d_dinp.data(), n), dinp, tol);

  gg::residual_forward(d_out.data(), d_inp.data(), d_other.data(), n, nullptr);
  gpt::residual_forward(out.data(), inp.data(), other.data(), n);
  expect_close("residual_forward " + t, to_host(d_out.data(), n), out, tol);
}

// The head as the model runs it: ln_f, tied LM head into padded logits, cross-entropy, and
// back, against host head_forward / head_backward.
template <class X>
void test_head() {
  const int N = 29, C = 64, V = 101, ld = 128;
  const double tol = kernel_tol<X>();
  const std::string t = type_name<X>();
  gg::gemm_engine g;
  const vecf x = rounded<X>(randn(std::size_t(N) * C, 40));
  const vecf wte = rounded<X>(randn(std::size_t(V) * C, 41, 0.15f));
  vecf lnw = randn(C, 42, 0.1f), lnb = rounded<X>(randn(C, 43, 0.1f));
  for (auto& v : lnw) v += 1.0f;
  lnw = rounded<X>(lnw);
  auto targets = random_ints(N, 0, V, 44);
  targets[3] = targets[10] = -1;  // positions without a target count neither in the loss nor its gradient
  int count = 0;
  for (int tg : targets) count += tg >= 0;

  vecf xf(std::size_t(N) * C), mean(N), rstd(N), logits(std::size_t(N) * V), losses(N);
  const float loss = gpt::head_forward(xf.data(), mean.data(), rstd.data(), logits.data(),
                                       losses.data(), x.data(), targets.data(), wte.data(),
                                       lnw.data(), lnb.data(), N, C, V);
  vecf dx = rounded<X>(randn(std::size_t(N) * C, 45)), dlnw = randn(C, 46), dlnb = randn(C, 47);
  vecf dwte = randn(std::size_t(V) * C, 48), dlogits(std::size_t(N) * V), dxf(std::size_t(N) * C);

  auto d_x = to_device<X>(x), d_wte = to_device<X>(wte), d_lnw = to_device<X>(lnw), d_lnb = to_device<X>(lnb);
  auto d_targets = to_device(targets);
  gg::device_array<X> d_xf(std::size_t(N) * C, "xf"), d_logits(std::size_t(N) * ld, "logits"),
      d_dxf(std::size_t(N) * C, "dxf");
  gg::device_array<float> d_mean(N, "mean"), d_rstd(N, "rstd"), d_losses(N, "losses"), d_lse(N, "lse");
  auto d_dx = to_device<X>(dx);
  auto d_dlnw = to_device<float>(dlnw), d_dlnb = to_device<float>(dlnb), d_dwte = to_device<float>(dwte);
  gg::device_array<float> ws(gg::colsum_workspace_floats(N, C), "ws");

  gg::layernorm_forward(d_xf.data(), d_mean.data(), d_rstd.data(), d_x.data(), d_lnw.data(),
                        d_lnb.data(), N, C, nullptr);
  gg::matmul_forward(g, d_logits.data(), d_xf.data(), d_wte.data(), static_cast<const X*>(nullptr),
                     N, C, V, nullptr, ld);
  gg::crossentropy_forward(d_losses.data(), d_lse.data(), d_logits.data(), d_targets.data(), N, V,
                           ld, nullptr);
  expect_close("head logits " + t, unpad(to_host(d_logits.data(), std::size_t(N) * ld), N, V, ld),
               logits, tol);
  const vecf got_losses = to_host(d_losses.data(), N);
  expect_close("head losses " + t, got_losses, losses, tol);
  double total = 0;
  for (int n = 0; n < N; ++n)
    if (targets[n] >= 0) total += got_losses[n];
  expect_close("head mean loss " + t, {static_cast<float>(total / count)}, {loss}, tol);

  gg::crossentropy_backward(d_logits.data(), d_logits.data(), d_lse.data(), d_targets.data(),
                            1.0f / count, N, V, ld, nullptr);
  gg::matmul_backward_input(g, d_dxf.data(), d_logits.data(), d_wte.data(), N, C, V, false, nullptr, ld);
  gg::matmul_backward_weight(g, d_dwte.data(), d_logits.data(), d_xf.data(), N, C, V, true, nullptr, ld);
  gg::layernorm_backward(d_dx.data(), d_dlnw.data(), d_dlnb.data(), ws.data(), d_dxf.data(),
                         d_x.data(), d_lnw.data(), d_mean.data(), d_rstd.data(), N, C, true, nullptr);
  gpt::head_backward(dx.data(), dlnw.data(), dlnb.data(), dwte.data(), dlogits.data(), dxf.data(),
                     logits.data(), xf.data(), x.data(), mean.data(), rstd.data(), targets.data(),
                     wte.data(), lnw.data(), N, C, V);
  expect_close("head dlogits " + t, unpad(to_host(d_logits.data(), std::size_t(N) * ld), N, V, ld),
               dlogits, tol);
  expect_close("head dx (+=) " + t, to_host(d_dx.data(), dx.size()), dx, tol);
  expect_close("head dln_f weight (+=) " + t, to_host(d_dlnw.data(), C), dlnw, tol);
  expect_close("head dln_f bias (+=) " + t, to_host(d_dlnb.data(), C), dlnb, tol);
  expect_close("head dwte (+=) " + t, to_host(d_dwte.data(), dwte.size()), dwte, tol);
}

template <class X>
void test_attention() {
  struct shape { int B, T, C, NH; };
  // Head sizes 8 .. 128; T below, at and above the tile sizes, not a multiple of them.
  const shape shapes[] = {{2, 77, 64, 4}, {2, 33, 64, 8}, {1, 130, 128, 2}, {2, 64, 64, 2},
                          {1, 70, 256, 2}, {3, 5, 32, 1}};
  const double tol = kernel_tol<X>();
  const std::string t = type_name<X>();
  std::uint64_t seed = 50;
  for (const auto& s : shapes) {
    const int B = s.B, T = s.T, C = s.C, NH = s.NH;
    // bf16 with hs 32/64/128 runs on tensor cores (test_attention_tensor_cores has the details):
    // P and dS are rounded to bf16 there before their second product, hence its tolerance.
    // (nullptr for the tensors: device_array memory is aligned, only the shape matters here.)
    const bool tc = gg::attention_uses_tensor_cores<X>(T, C, NH, nullptr, nullptr, nullptr);
    const double tol_bwd = tc ? attention_tc_tol_bwd : tol;
    const std::string name = "(B " + std::to_string(B) + ", T " + std::to_string(T) + ", hs " +
                             std::to_string(C / NH) + ") " + t + (tc ? " tc" : "");
    const std::size_t n3 = std::size_t(B) * T * 3 * C, n1 = std::size_t(B) * T * C;
    const vecf qkv = rounded<X>(randn(n3, seed++));
    vecf out(n1), lse(std::size_t(B) * NH * T);
    gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
    auto d_qkv = to_device<X>(qkv);
    gg::device_array<X> d_out(n1, "out");
    gg::device_array<float> d_lse(lse.size(), "lse");
    gg::attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), B, T, C, NH, nullptr);
    expect_close("attention_forward out " + name, to_host(d_out.data(), n1), out, tol);
    expect_close("attention_forward lse " + name, to_host(d_lse.data(), lse.size()), lse, tol);

    // Backward from the host's out and lse: overwriting whatever dqkv held (what the model
    // does; the error is then measured against the gradient itself), and, for the first shape,
    // accumulating onto a random dqkv.
    const vecf out_x = rounded<X>(out);
    const vecf dout = rounded<X>(randn(n1, seed++));
    const vecf dqkv0 = rounded<X>(randn(n3, seed++));
    auto d_outx = to_device<X>(out_x), d_dout = to_device<X>(dout);
    auto d_lse_h = to_device<float>(lse);
    gg::device_array<float> ws(gg::attention_workspace_floats(B, T, NH), "ws");
    for (bool accumulate : {false, true}) {
      if (accumulate && &s != &shapes[0]) continue;
      auto d_dqkv = to_device<X>(dqkv0);
      gg::attention_backward(d_dqkv.data(), ws.data(), d_dout.data(), d_qkv.data(), d_outx.data(),
                             d_lse_h.data(), B, T, C, NH, accumulate, nullptr);
      vecf dqkv = accumulate ? dqkv0 : vecf(n3, 0.0f);
      gpt::attention_backward(dqkv.data(), dout.data(), qkv.data(), out_x.data(), lse.data(), B,
                              T, C, NH);
      expect_close(std::string("attention_backward dqkv ") + (accumulate ? "(+=) " : "(=) ") + name,
                   to_host(d_dqkv.data(), n3), dqkv, tol_bwd);
    }
  }
}

// The q, k or v third (part 0, 1, 2) of a (N, 3C) matrix, as (N, C).
vecf qkv_part(const vecf& v, int N, int C, int part) {
  vecf out(static_cast<std::size_t>(N) * C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      out[static_cast<std::size_t>(n) * C + c] =
          v[static_cast<std::size_t>(n) * 3 * C + static_cast<std::size_t>(part) * C + c];
  return out;
}

// The bf16 tensor-core attention (attention_tc.cuh) against the host on the host's rounded
// inputs. Tolerances: out within 1e-2 of its largest value (bf16 P in P V, then out rounded
// to bf16: a few 2^-9 ulps); lse within 1e-4 (its statistics never leave fp32); dqkv within
// 2e-2, as a whole and per third (dQ, dK, dV each against its own largest value, so a wrong
// small third cannot hide behind a large one): P and dS are rounded to bf16 before the second
// products and every output to bf16. T = 1 has dQ = dK = 0 exactly in theory and rounding
// noise in practice, so there only the whole dqkv is compared.
void test_attention_tensor_cores() {
  struct shape { int B, T, C, NH; };
  const shape shapes[] = {
      {1, 1, 64, 1},     // T = 1: a single key
      {2, 77, 256, 4},   // hs 64, T a multiple of neither 16 nor 64, B > 1
      {1, 64, 128, 2},   // hs 64, exactly one tile
      {3, 130, 128, 4},  // hs 32, three query tiles, the last of 2 rows
      {1, 17, 96, 3},    // hs 32, T not a multiple of 16
      {1, 1, 128, 1},    // hs 128, T = 1
      {2, 161, 256, 2},  // hs 128 (backward tiles of 32), T = 161
      {1, 200, 768, 12}  // GPT-2 124M's heads (12 x 64), a shorter sequence
  };
  std::uint64_t seed = 70;
  for (const auto& s : shapes) {
    const int B = s.B, T = s.T, C = s.C, NH = s.NH, N = B * T;
    const std::string name = "(B " + std::to_string(B) + ", T " + std::to_string(T) + ", NH " +
                             std::to_string(NH) + ", hs " + std::to_string(C / NH) + ") bf16 tc";
    const std::size_t n3 = std::size_t(N) * 3 * C, n1 = std::size_t(N) * C;
    const vecf qkv = rounded<bf16>(randn(n3, seed++));
    vecf out(n1), lse(std::size_t(B) * NH * T);
    gpt::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
    auto d_qkv = to_device<bf16>(qkv);
    gg::device_array<bf16> d_out(n1, "out");
    gg::device_array<float> d_lse(lse.size(), "lse");
    GPU_CHECK((gg::attention_uses_tensor_cores<bf16>(T, C, NH, d_qkv.data(), d_qkv.data(),
                                                     d_out.data())));
    gg::attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), B, T, C, NH, nullptr);
    expect_close("attention_forward out " + name, to_host(d_out.data(), n1), out, 1e-2);
    expect_close("attention_forward lse " + name, to_host(d_lse.data(), lse.size()), lse, 1e-4);

    const vecf out_x = rounded<bf16>(out);
    const vecf dout = rounded<bf16>(randn(n1, seed++));
    const vecf dqkv0 = rounded<bf16>(randn(n3, seed++));
    auto d_outx = to_device<bf16>(out_x), d_dout = to_device<bf16>(dout);
    auto d_lse_h = to_device<float>(lse);
    gg::device_array<float> ws(gg::attention_workspace_floats(B, T, NH), "ws");
    for (bool accumulate : {false, true}) {
      auto d_dqkv = to_device<bf16>(dqkv0);
      gg::attention_backward(d_dqkv.data(), ws.data(), d_dout.data(), d_qkv.data(), d_outx.data(),
                             d_lse_h.data(), B, T, C, NH, accumulate, nullptr);
      const vecf got = to_host(d_dqkv.data(), n3);
      vecf grad(n3, 0.0f);  // the gradient alone; += adds it to dqkv0
      gpt::attention_backward(grad.data(), dout.data(), qkv.data(), out_x.data(), lse.data(), B,
                              T, C, NH);
      vecf want = grad;
      if (accumulate)
        for (std::size_t i = 0; i < n3; ++i)
          want[i] = gg::to_f32(gg::from_f32<bf16>(dqkv0[i] + grad[i]));
      const std::string mode = accumulate ? "(+=) " : "(=) ";
      if (!accumulate) {
        expect_close("attention_backward dqkv " + mode + name, got, want, attention_tc_tol_bwd);
        if (T > 1) {
          const char* parts[] = {"dq ", "dk ", "dv "};
          for (int part = 0; part < 3; ++part)
            expect_close(std::string("attention_backward ") + parts[part] + mode + name,
                         qkv_part(got, N, C, part), qkv_part(want, N, C, part),
                         attention_tc_tol_bwd);
        }
      } else {
        // += : what was added, against the gradient (dqkv0 is O(1), the gradient may be
        // smaller; got - dqkv0 carries one bf16 rounding of the sum on top).
        vecf added(n3);
        for (std::size_t i = 0; i < n3; ++i) added[i] = got[i] - dqkv0[i];
        expect_close("attention_backward dqkv " + mode + name, got, want, attention_tc_tol_bwd);
        expect_close("attention_backward dqkv added " + mode + name, added, grad,
                     2 * attention_tc_tol_bwd);
      }
    }
  }
}

// The tensor-core attention twice on the same inputs: out, lse and dqkv bitwise equal (no
// atomics, fixed summation orders), for hs 64 and 128 at T spanning several tiles.
void test_attention_deterministic() {
  struct shape { int B, T, C, NH; };
  const shape shapes[] = {{2, 300, 256, 4}, {1, 257, 256, 2}};
  std::uint64_t seed = 90;
  for (const auto& s : shapes) {
    const int B = s.B, T = s.T, C = s.C, NH = s.NH;
    const std::string name = "(B " + std::to_string(B) + ", T " + std::to_string(T) + ", hs " +
                             std::to_string(C / NH) + ")";
    const std::size_t n3 = std::size_t(B) * T * 3 * C, n1 = std::size_t(B) * T * C;
    const std::size_t nl = std::size_t(B) * NH * T;
    auto d_qkv = to_device<bf16>(randn(n3, seed++));
    auto d_dout = to_device<bf16>(randn(n1, seed++));
    gg::device_array<float> ws(gg::attention_workspace_floats(B, T, NH), "ws");
    std::vector<bf16> outs[2], dqkvs[2];
    std::vector<float> lses[2];
    for (int run = 0; run < 2; ++run) {
      gg::device_array<bf16> d_out(n1, "out"), d_dqkv(n3, "dqkv");
      gg::device_array<float> d_lse(nl, "lse");
      gg::attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), B, T, C, NH, nullptr);
      gg::attention_backward(d_dqkv.data(), ws.data(), d_dout.data(), d_qkv.data(), d_out.data(),
                             d_lse.data(), B, T, C, NH, false, nullptr);
      strata::check_cuda(cudaDeviceSynchronize(), "test sync");
      outs[run] = gg::download(d_out.data(), n1, "out");
      lses[run] = gg::download(d_lse.data(), nl, "lse");
      dqkvs[run] = gg::download(d_dqkv.data(), n3, "dqkv");
    }
    const bool same_out = std::memcmp(outs[0].data(), outs[1].data(), n1 * sizeof(bf16)) == 0;
    const bool same_lse = std::memcmp(lses[0].data(), lses[1].data(), nl * sizeof(float)) == 0;
    const bool same_dqkv = std::memcmp(dqkvs[0].data(), dqkvs[1].data(), n3 * sizeof(bf16)) == 0;
    std::printf("  %-4s attention bf16 tc %s: out, lse, dqkv bitwise equal over two runs\n",
                same_out && same_lse && same_dqkv ? "ok" : "BAD", name.c_str());
    GPU_CHECK(same_out);
    GPU_CHECK(same_lse);
    GPU_CHECK(same_dqkv);
  }
}

// ---------------------------------------------------------------------------------------------
// The whole model
// ---------------------------------------------------------------------------------------------

gpt::gpt_config tiny_config() {
  gpt::gpt_config cfg;
  cfg.vocab = 97, cfg.context = 24, cfg.layers = 2, cfg.heads = 4, cfg.width = 64;
  return cfg;
}

struct tiny_batch {
  int B = 3, T = 21;  // T < context: the models must handle short sequences
  std::vector<int> tokens, targets;
  explicit tiny_batch(const gpt::gpt_config& cfg) {
    tokens = random_ints(std::size_t(B) * T, 0, cfg.vocab, 60);
    targets = random_ints(std::size_t(B) * T, 0, cfg.vocab, 61);
    targets[0] = targets[T + 4] = targets[2 * T + 20] = -1;
  }
};

template <class X>
void test_model_vs_host(bool checkpoint, const gpt::gpt_config& cfg = tiny_config(),
                        const std::string& label = "") {
  const tiny_batch batch(cfg);
  const int B = batch.B, T = batch.T, N = B * T;
  const bool f32 = std::is_same_v<X, float>;
  const std::string t = std::string(type_name<X>()) + (checkpoint ? " checkpointed" : "") + label;
  gpt::host_model host(cfg, 4);
  host.init_weights(7);
  gg::basic_gpt_cuda_model<X> gpu(cfg, 4, checkpoint);
  gpu.init_weights(7);
  GPU_CHECK(gpu.embed_params() == host.embed_params());  // the same init, bit for bit
  for (int l = 0; l < cfg.layers; ++l) GPU_CHECK(gpu.block_params(l) == host.block_params(l));

  // Logits only, then with targets.
  GPU_CHECK(gpu.forward(batch.tokens.data(), nullptr, B, T) == 0.0f);
  host.forward(batch.tokens.data(), nullptr, B, T);
  const vecf host_logits(host.logits(), host.logits() + std::size_t(N) * cfg.vocab);
  expect_close("model logits (no targets) " + t, gpu.logits(), host_logits, f32 ? 1e-4 : 2e-2);

  const float lh = host.forward(batch.tokens.data(), batch.targets.data(), B, T);
  const float lg = gpu.forward(batch.tokens.data(), batch.targets.data(), B, T);
  expect_close("model loss " + t, {lg}, {lh}, f32 ? 1e-5 : 5e-3);
  host.backward();
  gpu.backward();
  gpu.synchronize();

  const double gtol = f32 ? 1e-3 : 5e-2;
  const vecf ge = gpu.embed_grads();
  for (const auto& s : gpt::embed_slots(cfg))
    expect_close("grad " + s.name + " " + t, slice(ge, s.offset, s.numel),
                 slice(host.embed_grads(), s.offset, s.numel), gtol, !f32);
  for (int l = 0; l < cfg.layers; ++l) {
    const vecf gb = gpu.block_grads(l);
    for (const auto& s : gpt::block_slots(cfg))
      expect_close("grad " + gpt::block_tensor_name(l, s) + " " + t, slice(gb, s.offset, s.numel),
                   slice(host.block_grads(l), s.offset, s.numel), gtol, !f32);
  }
}

// The tiny model with 2 heads of 32 instead of 4 of 16: its bf16 attention runs on tensor
// cores (hs 16 stays on the CUDA-core kernels), inside the whole forward and backward.
void test_model_tc_attention() {
  auto cfg = tiny_config();
  cfg.heads = 2;
  GPU_CHECK(gg::attention_uses_tensor_cores<bf16>(21, cfg.width, cfg.heads, nullptr, nullptr,
                                                  nullptr));
  test_model_vs_host<bf16>(false, cfg, " hs 32");
}

template <class X>
void test_checkpoint_equivalence() {
  const auto cfg = tiny_config();
  const tiny_batch batch(cfg);
  const std::string t = type_name<X>();
  gg::basic_gpt_cuda_model<X> kept(cfg, 3, false), recomputed(cfg, 3, true);
  kept.init_weights(8);
  recomputed.init_weights(8);
  const float l1 = kept.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  const float l2 = recomputed.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  expect_close("checkpointed == kept: loss " + t, {l2}, {l1}, 1e-6);
  kept.backward();
  recomputed.backward();
  bool bitwise = kept.embed_grads() == recomputed.embed_grads();
  expect_close("checkpointed == kept: embed grads " + t, recomputed.embed_grads(), kept.embed_grads(), 1e-6);
  for (int l = 0; l < cfg.layers; ++l) {
    bitwise = bitwise && kept.block_grads(l) == recomputed.block_grads(l);
    expect_close("checkpointed == kept: block " + std::to_string(l) + " grads " + t,
                 recomputed.block_grads(l), kept.block_grads(l), 1e-6);
  }
  std::printf("  checkpointed and kept gradients are %s\n", bitwise ? "bitwise equal" : "close, not bitwise equal");
}

// Two AdamW steps on the device == strata's scalar host Adam on the same gradients, bit for
// bit; matrices decayed, the rest not; the X copy == the master weights rounded.
template <class X>
void test_adam() {
  namespace opt = strata::optim;
  const auto cfg = tiny_config();
  const tiny_batch batch(cfg);
  gg::basic_gpt_cuda_model<X> gpu(cfg, 3, false);
  gpu.init_weights(9);
  gpu.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  gpu.backward();

  const vecf initial_block0 = gpu.block_params(0);
  // The host's copy of everything, per array (embed, then blocks).
  std::vector<vecf> master{gpu.embed_params()}, grads{gpu.embed_grads()};
  std::vector<std::vector<gpt::tensor_slot>> slots{gpt::embed_slots(cfg)};
  for (int l = 0; l < cfg.layers; ++l) {
    master.push_back(gpu.block_params(l));
    grads.push_back(gpu.block_grads(l));
    slots.push_back(gpt::block_slots(cfg));
  }
  std::vector<vecf> m, v;
  for (const auto& a : master) m.emplace_back(a.size(), 0.0f), v.emplace_back(a.size(), 0.0f);

  opt::adam_params hp;
  hp.lr = 1e-2f, hp.weight_decay = 0.1f;
  opt::adam_params plain = hp;
  plain.weight_decay = 0.0f;
  for (std::uint64_t step = 1; step <= 2; ++step) {
    gpu.adam_step(hp, step);
    for (std::size_t a = 0; a < master.size(); ++a)
      for (const auto& s : slots[a]) {
        const auto k = opt::adam_step_scalars::make(s.shape.size() == 2 ? hp : plain, step);
        opt::adam_update<float>(k, std::span<float>(master[a].data() + s.offset, s.numel),
                                std::span<float>(m[a].data() + s.offset, s.numel),
                                std::span<float>(v[a].data() + s.offset, s.numel),
                                std::span<const float>(grads[a].data() + s.offset, s.numel),
                                nullptr, opt::simd_level::scalar, 1);
      }
  }
  gpu.synchronize();
  bool same = gpu.embed_params() == master[0];
  for (int l = 0; l < cfg.layers; ++l) same = same && gpu.block_params(l) == master[1 + l];
  std::printf("  device AdamW %s strata's host Adam bit for bit (%s)\n", same ? "==" : "!=", type_name<X>());
  GPU_CHECK(same);
  bool copy_ok = gpu.embed_params_copy() == rounded<X>(master[0]);
  for (int l = 0; l < cfg.layers; ++l)
    copy_ok = copy_ok && gpu.block_params_copy(l) == rounded<X>(master[1 + l]);
  GPU_CHECK(copy_ok);
  GPU_CHECK(gpu.block_params(0) != initial_block0);  // and the steps were not no-ops
}

}  // namespace

int main() {
  return cuda_test::run_all({
      {"encoder f32", test_encoder<float>},
      {"encoder bf16", test_encoder<bf16>},
      {"layernorm f32", test_layernorm<float>},
      {"layernorm bf16", test_layernorm<bf16>},
      {"matmul f32", test_matmul<float>},
      {"matmul bf16", test_matmul<bf16>},
      {"gelu + residual f32", test_gelu_residual<float>},
      {"gelu + residual bf16", test_gelu_residual<bf16>},
      {"head (ln_f, tied LM head, cross-entropy) f32", test_head<float>},
      {"head (ln_f, tied LM head, cross-entropy) bf16", test_head<bf16>},
      {"attention f32", test_attention<float>},
      {"attention bf16", test_attention<bf16>},
      {"attention bf16 tensor cores", test_attention_tensor_cores},
      {"attention bf16 tensor cores deterministic", test_attention_deterministic},
      {"model == host_model f32", [] { test_model_vs_host<float>(false); }},
      {"model == host_model f32, checkpointed", [] { test_model_vs_host<float>(true); }},
      {"model ~ host_model bf16", [] { test_model_vs_host<bf16>(false); }},
      {"model ~ host_model bf16, checkpointed", [] { test_model_vs_host<bf16>(true); }},
      {"model ~ host_model bf16, hs 32 (tensor-core attention)", [] { test_model_tc_attention(); }},
      {"checkpointed == kept f32", test_checkpoint_equivalence<float>},
      {"checkpointed == kept bf16", test_checkpoint_equivalence<bf16>},
      {"AdamW == host Adam f32", test_adam<float>},
      {"AdamW == host Adam bf16", test_adam<bf16>},
  });
}
