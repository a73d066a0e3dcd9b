// examples/gpt/host/block.hpp — one GPT-2 transformer block on the host, forward and backward.
//
// What this is: x -> x + attn(ln_1(x)) -> (that) + mlp(ln_2(that)), over one block's flat
// parameter array (layout: block_slots in gpt_config.hpp), with all of the block's activations
// in a block_scratch that the caller owns and reuses from block to block. block_backward
// starts by recomputing the block's forward from its input x (activation checkpointing): a
// training step keeps only each block's input (B, T, C) between forward and backward, and the
// one scratch serves every layer. That is what lets train.cpp stream blocks through strata one
// at a time, in both directions.
// What it is not: the embeddings or the head (host/kernels.hpp), or parameter storage.
#pragma once

#include "../gpt_config.hpp"
#include "attention.hpp"
#include "kernels.hpp"

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpt {

/// One block's tensors inside its flat array (the order of block_slots). P is `const real*`
/// for parameters, `real*` for their gradients.
template <class P>
struct block_tensors {
  P ln1_w, ln1_b;          // (C), (C)
  P qkv_w, qkv_b;          // (3C, C), (3C)
  P attproj_w, attproj_b;  // (C, C), (C)
  P ln2_w, ln2_b;          // (C), (C)
  P fc_w, fc_b;            // (4C, C), (4C)
  P fcproj_w, fcproj_b;    // (C, 4C), (C)

  static block_tensors carve(P base, int C) {
    const std::size_t c = static_cast<std::size_t>(C);
    block_tensors t;
    P p = base;
    auto take = [&p](std::size_t n) { P q = p; p += n; return q; };
    t.ln1_w = take(c), t.ln1_b = take(c);
    t.qkv_w = take(3 * c * c), t.qkv_b = take(3 * c);
    t.attproj_w = take(c * c), t.attproj_b = take(c);
    t.ln2_w = take(c), t.ln2_b = take(c);
    t.fc_w = take(4 * c * c), t.fc_b = take(4 * c);
    t.fcproj_w = take(4 * c * c), t.fcproj_b = take(c);
    return t;
  }
};

/// All activations of ONE block for up to B sequences of up to cfg.context positions, plus
/// the backward's gradient buffers. Reused across layers and steps.
template <class real>
struct basic_block_scratch {
  basic_block_scratch(const gpt_config& cfg, int B) : max_batch(B), context(cfg.context) {
    cfg.validate();
    if (B <= 0)
      throw std::invalid_argument("block_scratch: batch must be > 0, got " + std::to_string(B));
    const std::size_t N = static_cast<std::size_t>(B) * cfg.context;
    const std::size_t C = static_cast<std::size_t>(cfg.width);
    ln1.resize(N * C), ln1_mean.resize(N), ln1_rstd.resize(N);
    qkv.resize(N * 3 * C);
    atty.resize(N * C), att_lse.resize(N * cfg.heads);
    res2.resize(N * C);
    ln2.resize(N * C), ln2_mean.resize(N), ln2_rstd.resize(N);
    fch.resize(N * 4 * C), fch_gelu.resize(N * 4 * C);
    dres.resize(N * C), dln.resize(N * C), datty.resize(N * C), dqkv.resize(N * 3 * C);
    dfch.resize(N * 4 * C), dfch_gelu.resize(N * 4 * C);
  }

  int max_batch, context;
  // forward, (B, T, ...) with N = B*T rows
  std::vector<real> ln1, ln1_mean, ln1_rstd;  // (N, C), (N), (N)
  std::vector<real> qkv;                      // (N, 3C)
  std::vector<real> atty, att_lse;            // (N, C), (B, NH, T)
  std::vector<real> res2;                     // (N, C): x + attention branch
  std::vector<real> ln2, ln2_mean, ln2_rstd;  // (N, C), (N), (N)
  std::vector<real> fch, fch_gelu;            // (N, 4C), (N, 4C)
  // backward
  std::vector<real> dres, dln, datty, dqkv;   // (N, C) x3, (N, 3C)
  std::vector<real> dfch, dfch_gelu;          // (N, 4C), (N, 4C)
};
using block_scratch = basic_block_scratch<float>;

namespace detail {

template <class real>
void check_block_shape(const gpt_config& cfg, int B, int T, const basic_block_scratch<real>& s) {
  if (B <= 0 || B > s.max_batch || T <= 0 || T > s.context || T > cfg.context)
    throw std::invalid_argument("gpt block: batch " + std::to_string(B) + " x sequence " +
                                std::to_string(T) + " does not fit the scratch (batch <= " +
                                std::to_string(s.max_batch) + ", sequence <= " +
                                std::to_string(s.context) + ")");
}

// Everything up to the MLP's GELU: the activations the backward needs.
template <class real>
void block_forward_activations(const gpt_config& cfg, int B, int T, const real* params,
                               const real* x, basic_block_scratch<real>& s) {
  const int C = cfg.width, N = B * T;
  const auto w = block_tensors<const real*>::carve(params, C);
  layernorm_forward(s.ln1.data(), s.ln1_mean.data(), s.ln1_rstd.data(), x, w.ln1_w, w.ln1_b, N, C);
  matmul_forward(s.qkv.data(), s.ln1.data(), w.qkv_w, w.qkv_b, N, C, 3 * C);
  attention_forward(s.atty.data(), s.att_lse.data(), s.qkv.data(), B, T, C, cfg.heads);
  matmul_forward(s.res2.data(), s.atty.data(), w.attproj_w, w.attproj_b, N, C, C);
  residual_forward(s.res2.data(), x, s.res2.data(), static_cast<std::size_t>(N) * C);
  layernorm_forward(s.ln2.data(), s.ln2_mean.data(), s.ln2_rstd.data(), s.res2.data(), w.ln2_w,
                    w.ln2_b, N, C);
  matmul_forward(s.fch.data(), s.ln2.data(), w.fc_w, w.fc_b, N, C, 4 * C);
  gelu_forward(s.fch_gelu.data(), s.fch.data(), static_cast<std::size_t>(N) * 4 * C);
}

}  // namespace detail

/// y (B,T,C) = block(x (B,T,C)) for sequences of length T (<= cfg.context). y must not alias x.
template <class real>
void block_forward(const gpt_config& cfg, int B, int T, const real* params, const real* x, real* y,
                   basic_block_scratch<real>& s) {
  detail::check_block_shape(cfg, B, T, s);
  const int C = cfg.width, N = B * T;
  const auto w = block_tensors<const real*>::carve(params, C);
  detail::block_forward_activations(cfg, B, T, params, x, s);
  matmul_forward(y, s.fch_gelu.data(), w.fcproj_w, w.fcproj_b, N, 4 * C, C);
  residual_forward(y, s.res2.data(), y, static_cast<std::size_t>(N) * C);
}

/// The same at full length, T = cfg.context.
template <class real>
void block_forward(const gpt_config& cfg, int B, const real* params, const real* x, real* y,
                   basic_block_scratch<real>& s) {
  block_forward(cfg, B, cfg.context, params, x, y, s);
}

/// Gradients of one block: given its input x and dy = dL/dy, writes dx = dL/dx (overwritten;
/// dx may alias dy) and dparams = dL/dparams (block_numel values, overwritten). Recomputes the
/// forward from x first, so the scratch need not hold anything from an earlier forward.
template <class real>
void block_backward(const gpt_config& cfg, int B, int T, const real* params, const real* x,
                    const real* dy, real* dx, real* dparams, basic_block_scratch<real>& s) {
  detail::check_block_shape(cfg, B, T, s);
  const int C = cfg.width, N = B * T;
  const std::size_t NC = static_cast<std::size_t>(N) * C;
  const auto w = block_tensors<const real*>::carve(params, C);
  const auto d = block_tensors<real*>::carve(dparams, C);
  auto zero = [](std::vector<real>& v, std::size_t n) {
    std::memset(v.data(), 0, n * sizeof(real));
  };

  detail::block_forward_activations(cfg, B, T, params, x, s);  // the recompute
  std::memset(dparams, 0, block_numel(cfg) * sizeof(real));

  // y = res2 + mlp(ln_2(res2)): dy reaches res2 directly and through the MLP.
  std::memcpy(s.dres.data(), dy, NC * sizeof(real));
  zero(s.dfch_gelu, 4 * NC);
  matmul_backward(s.dfch_gelu.data(), d.fcproj_w, d.fcproj_b, dy, s.fch_gelu.data(), w.fcproj_w,
                  N, 4 * C, C);
  zero(s.dfch, 4 * NC);
  gelu_backward(s.dfch.data(), s.fch.data(), s.dfch_gelu.data(), 4 * NC);
  zero(s.dln, NC);
  matmul_backward(s.dln.data(), d.fc_w, d.fc_b, s.dfch.data(), s.ln2.data(), w.fc_w, N, C, 4 * C);
  layernorm_backward(s.dres.data(), d.ln2_w, d.ln2_b, s.dln.data(), s.res2.data(), w.ln2_w,
                     s.ln2_mean.data(), s.ln2_rstd.data(), N, C);

  // res2 = x + attn(ln_1(x)): dres reaches x directly and through attention.
  zero(s.datty, NC);
  matmul_backward(s.datty.data(), d.attproj_w, d.attproj_b, s.dres.data(), s.atty.data(),
                  w.attproj_w, N, C, C);
  zero(s.dqkv, 3 * NC);
  attention_backward(s.dqkv.data(), s.datty.data(), s.qkv.data(), s.atty.data(),
                     s.att_lse.data(), B, T, C, cfg.heads);
  zero(s.dln, NC);
  matmul_backward(s.dln.data(), d.qkv_w, d.qkv_b, s.dqkv.data(), s.ln1.data(), w.qkv_w, N, C,
                  3 * C);
  std::memcpy(dx, s.dres.data(), NC * sizeof(real));
  layernorm_backward(dx, d.ln1_w, d.ln1_b, s.dln.data(), x, w.ln1_w, s.ln1_mean.data(),
                     s.ln1_rstd.data(), N, C);
}

/// The same at full length, T = cfg.context.
template <class real>
void block_backward(const gpt_config& cfg, int B, const real* params, const real* x,
                    const real* dy, real* dx, real* dparams, basic_block_scratch<real>& s) {
  block_backward(cfg, B, cfg.context, params, x, dy, dx, dparams, s);
}

}  // namespace gpt
