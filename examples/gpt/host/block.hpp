// examples/gpt/host/block.hpp — one GPT-2 transformer block on the host, forward and backward.
//
// What this is: x -> x + attn(ln_1(x)) -> (that) + mlp(ln_2(that)), over one block's flat
// parameter array (layout: block_slots in gpt_config.hpp), with all of the block's activations
// in a block_scratch that the caller owns and reuses from block to block. block_backward
// starts by recomputing the block's forward from its input x (activation checkpointing): a
// training step keeps only each block's input (B, T, C) between forward and backward, and the
// one scratch serves every layer. That is what lets train.cpp stream blocks through strata one
// at a time, in both directions. Where memory allows, a caller may instead keep each block's
// activations (block_activations, in memory of its own: the forward writes them, the backward
// reads them and recomputes nothing) — the same bits, one forward's compute less per step.
// What it is not: the embeddings or the head (host/kernels.hpp), or parameter storage.
#pragma once

#include "../gpt_config.hpp"
#include "attention.hpp"
#include "kernels.hpp"

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
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

/// One block's forward activations for B sequences of T positions (N = B*T rows): what its
/// backward reads. A view of `floats(cfg, B, T)` floats that its owner gives (a block_scratch's
/// own, or one set per block that a caller keeps from forward to backward).
template <class real>
struct block_activations {
  real *ln1, *ln1_mean, *ln1_rstd;  // (N, C), (N), (N)
  real* qkv;                        // (N, 3C)
  real *atty, *att_lse;             // (N, C), (B, NH, T)
  real* res2;                       // (N, C): x + attention branch
  real *ln2, *ln2_mean, *ln2_rstd;  // (N, C), (N), (N)
  real *fch, *fch_gelu;             // (N, 4C), (N, 4C)

  static std::size_t floats(const gpt_config& cfg, int B, int T) {
    return carve_at(nullptr, cfg, B, T).second;
  }
  /// The pieces laid out from `base` (64-byte aligned each when base is).
  static block_activations carve(real* base, const gpt_config& cfg, int B, int T) {
    return carve_at(base, cfg, B, T).first;
  }

private:
  static std::pair<block_activations, std::size_t> carve_at(real* base, const gpt_config& cfg,
                                                            int B, int T) {
    const std::size_t N = static_cast<std::size_t>(B) * T, C = cfg.width;
    std::size_t used = 0;
    auto take = [&](std::size_t n) {
      real* p = base ? base + used : nullptr;
      used += (n + 15) / 16 * 16;
      return p;
    };
    block_activations a;
    a.ln1 = take(N * C), a.ln1_mean = take(N), a.ln1_rstd = take(N);
    a.qkv = take(N * 3 * C);
    a.atty = take(N * C), a.att_lse = take(N * cfg.heads);
    a.res2 = take(N * C);
    a.ln2 = take(N * C), a.ln2_mean = take(N), a.ln2_rstd = take(N);
    a.fch = take(N * 4 * C), a.fch_gelu = take(N * 4 * C);
    return {a, used};
  }
};

/// One block's activations for up to B sequences of up to cfg.context positions, plus the
/// backward's gradient buffers. Reused across layers and steps.
template <class real>
struct basic_block_scratch {
  basic_block_scratch(const gpt_config& cfg, int B) : max_batch(B), context(cfg.context) {
    cfg.validate();
    if (B <= 0)
      throw std::invalid_argument("block_scratch: batch must be > 0, got " + std::to_string(B));
    model = cfg;
    const std::size_t N = static_cast<std::size_t>(B) * cfg.context;
    const std::size_t C = static_cast<std::size_t>(cfg.width);
    forward_store.resize(block_activations<real>::floats(cfg, B, cfg.context));
    dres.resize(N * C), dln.resize(N * C), datty.resize(N * C), dqkv.resize(N * 3 * C);
    dfch.resize(N * 4 * C), dfch_gelu.resize(N * 4 * C);
  }

  /// The scratch's own activations (laid out for max_batch x context; a smaller B x T uses the
  /// start of each piece).
  block_activations<real> activations() {
    return block_activations<real>::carve(forward_store.data(), model, max_batch, context);
  }

  int max_batch, context;
  gpt_config model;
  std::vector<real> forward_store;            // activations()
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

// Everything up to the MLP's GELU: the activations the backward needs, into `a`.
template <class real>
void block_forward_activations(const gpt_config& cfg, int B, int T, const real* params,
                               const real* x, const block_activations<real>& a) {
  const int C = cfg.width, N = B * T;
  const auto w = block_tensors<const real*>::carve(params, C);
  layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b, N, C);
  matmul_forward(a.qkv, a.ln1, w.qkv_w, w.qkv_b, N, C, 3 * C);
  attention_forward(a.atty, a.att_lse, a.qkv, B, T, C, cfg.heads);
  matmul_forward(a.res2, a.atty, w.attproj_w, w.attproj_b, N, C, C);
  residual_forward(a.res2, x, a.res2, static_cast<std::size_t>(N) * C);
  layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, w.ln2_w, w.ln2_b, N, C);
  matmul_forward(a.fch, a.ln2, w.fc_w, w.fc_b, N, C, 4 * C);
  gelu_forward(a.fch_gelu, a.fch, static_cast<std::size_t>(N) * 4 * C);
}

// The backward from the block's forward activations `a` (of this x and these params).
template <class real>
void block_backward_from(const gpt_config& cfg, int B, int T, const real* params, const real* x,
                         const real* dy, real* dx, real* dparams,
                         const block_activations<real>& a, basic_block_scratch<real>& s) {
  const int C = cfg.width, N = B * T;
  const std::size_t NC = static_cast<std::size_t>(N) * C;
  const auto w = block_tensors<const real*>::carve(params, C);
  const auto d = block_tensors<real*>::carve(dparams, C);
  auto zero = [](std::vector<real>& v, std::size_t n) {
    std::memset(v.data(), 0, n * sizeof(real));
  };
  std::memset(dparams, 0, block_numel(cfg) * sizeof(real));

  // y = res2 + mlp(ln_2(res2)): dy reaches res2 directly and through the MLP.
  std::memcpy(s.dres.data(), dy, NC * sizeof(real));
  zero(s.dfch_gelu, 4 * NC);
  matmul_backward(s.dfch_gelu.data(), d.fcproj_w, d.fcproj_b, dy, a.fch_gelu, w.fcproj_w, N,
                  4 * C, C);
  zero(s.dfch, 4 * NC);
  gelu_backward(s.dfch.data(), a.fch, s.dfch_gelu.data(), 4 * NC);
  zero(s.dln, NC);
  matmul_backward(s.dln.data(), d.fc_w, d.fc_b, s.dfch.data(), a.ln2, w.fc_w, N, C, 4 * C);
  layernorm_backward(s.dres.data(), d.ln2_w, d.ln2_b, s.dln.data(), a.res2, w.ln2_w, a.ln2_mean,
                     a.ln2_rstd, N, C);

  // res2 = x + attn(ln_1(x)): dres reaches x directly and through attention.
  zero(s.datty, NC);
  matmul_backward(s.datty.data(), d.attproj_w, d.attproj_b, s.dres.data(), a.atty, w.attproj_w,
                  N, C, C);
  zero(s.dqkv, 3 * NC);
  attention_backward(s.dqkv.data(), s.datty.data(), a.qkv, a.atty, a.att_lse, B, T, C,
                     cfg.heads);
  zero(s.dln, NC);
  matmul_backward(s.dln.data(), d.qkv_w, d.qkv_b, s.dqkv.data(), a.ln1, w.qkv_w, N, C, 3 * C);
  std::memcpy(dx, s.dres.data(), NC * sizeof(real));
  layernorm_backward(dx, d.ln1_w, d.ln1_b, s.dln.data(), x, w.ln1_w, a.ln1_mean, a.ln1_rstd, N,
                     C);
}

}  // namespace detail

/// y (B,T,C) = block(x (B,T,C)) for sequences of length T (<= cfg.context). y must not alias x.
/// `keep`: where the forward's activations go — the scratch's own (the default: the backward
/// will recompute them) or a set the caller keeps for block_backward(..., kept).
template <class real>
void block_forward(const gpt_config& cfg, int B, int T, const real* params, const real* x, real* y,
                   basic_block_scratch<real>& s, const block_activations<real>& keep) {
  detail::check_block_shape(cfg, B, T, s);
  const int C = cfg.width, N = B * T;
  const auto w = block_tensors<const real*>::carve(params, C);
  detail::block_forward_activations(cfg, B, T, params, x, keep);
  matmul_forward(y, keep.fch_gelu, w.fcproj_w, w.fcproj_b, N, 4 * C, C);
  residual_forward(y, keep.res2, y, static_cast<std::size_t>(N) * C);
}

template <class real>
void block_forward(const gpt_config& cfg, int B, int T, const real* params, const real* x, real* y,
                   basic_block_scratch<real>& s) {
  block_forward(cfg, B, T, params, x, y, s, s.activations());
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
  const block_activations<real> a = s.activations();
  detail::block_forward_activations(cfg, B, T, params, x, a);  // the recompute
  detail::block_backward_from(cfg, B, T, params, x, dy, dx, dparams, a, s);
}

/// The same from the activations block_forward(..., kept) left for this x and params: nothing
/// is recomputed, and the results are the same bits.
template <class real>
void block_backward(const gpt_config& cfg, int B, int T, const real* params, const real* x,
                    const real* dy, real* dx, real* dparams, basic_block_scratch<real>& s,
                    const block_activations<real>& kept) {
  detail::check_block_shape(cfg, B, T, s);
  detail::block_backward_from(cfg, B, T, params, x, dy, dx, dparams, kept, s);
}

/// The same at full length, T = cfg.context.
template <class real>
void block_backward(const gpt_config& cfg, int B, const real* params, const real* x,
                    const real* dy, real* dx, real* dparams, basic_block_scratch<real>& s) {
  block_backward(cfg, B, cfg.context, params, x, dy, dx, dparams, s);
}

}  // namespace gpt
