// examples/gpt/cuda/block.cuh — one GPT-2 transformer block on the GPU, forward and backward.
//
// What this is: the twin of host/block.hpp over device memory:
//   x -> res2 = x + attn_proj(attention(c_attn(ln_1(x)))) -> y = res2 + mlp(ln_2(res2)),
// the block's parameters being one flat X array in block_slots order (the same block_tensors
// carving as the host), its parameter gradients one flat fp32 array. The activations the
// backward needs live in a block_activations the caller owns: one per layer when the model
// keeps them all, or a single one reused by every layer when it checkpoints (then the caller
// runs block_forward_activations again just before block_backward, as host/block.hpp does).
// What it is not: the embeddings or the head (model.cuh), parameter storage or an optimizer.
#pragma once

#include "../gpt_config.hpp"
#include "../host/block.hpp"  // block_tensors: the one definition of the block layout
#include "attention.cuh"
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.cuh"

#include <cstddef>
#include <stdexcept>
#include <string>

namespace gpt::gpu {

/// All activations of ONE block for up to max_batch sequences of up to cfg.context positions.
template <class X>
struct block_activations {
  block_activations(const gpt_config& cfg, int max_batch)
      : ln1(rows(cfg, max_batch) * cfg.width, "ln1"),
        ln1_mean(rows(cfg, max_batch), "ln1_mean"),
        ln1_rstd(rows(cfg, max_batch), "ln1_rstd"),
        qkv(rows(cfg, max_batch) * 3 * cfg.width, "qkv"),
        atty(rows(cfg, max_batch) * cfg.width, "atty"),
        att_lse(rows(cfg, max_batch) * cfg.heads, "att_lse"),
        res2(rows(cfg, max_batch) * cfg.width, "res2"),
        ln2(rows(cfg, max_batch) * cfg.width, "ln2"),
        ln2_mean(rows(cfg, max_batch), "ln2_mean"),
        ln2_rstd(rows(cfg, max_batch), "ln2_rstd"),
        fch(rows(cfg, max_batch) * 4 * cfg.width, "fch"),
        fch_gelu(rows(cfg, max_batch) * 4 * cfg.width, "fch_gelu") {}

  static std::size_t rows(const gpt_config& cfg, int max_batch) {
    return static_cast<std::size_t>(max_batch) * static_cast<std::size_t>(cfg.context);
  }

  device_array<X> ln1;                   // (N, C)
  device_array<float> ln1_mean, ln1_rstd;  // (N), (N)
  device_array<X> qkv;                   // (N, 3C)
  device_array<X> atty;                  // (N, C)
  device_array<float> att_lse;           // (B, NH, T)
  device_array<X> res2;                  // (N, C): x + the attention branch
  device_array<X> ln2;                   // (N, C)
  device_array<float> ln2_mean, ln2_rstd;  // (N), (N)
  device_array<X> fch, fch_gelu;         // (N, 4C), (N, 4C)
};

/// The backward's buffers for one block, shared by all layers.
template <class X>
struct block_grad_scratch {
  block_grad_scratch(const gpt_config& cfg, int max_batch)
      : dln(n(cfg, max_batch) * cfg.width, "dln"),
        datty(n(cfg, max_batch) * cfg.width, "datty"),
        dqkv(n(cfg, max_batch) * 3 * cfg.width, "dqkv"),
        dfch(n(cfg, max_batch) * 4 * cfg.width, "dfch"),
        dfch_gelu(n(cfg, max_batch) * 4 * cfg.width, "dfch_gelu"),
        attention_ws(attention_workspace_floats(max_batch, cfg.context, cfg.heads), "attention ws"),
        colsum_ws(colsum_workspace_floats(max_batch * cfg.context, 4 * cfg.width), "colsum ws") {}

  static std::size_t n(const gpt_config& cfg, int max_batch) {
    return static_cast<std::size_t>(max_batch) * static_cast<std::size_t>(cfg.context);
  }

  device_array<X> dln, datty, dqkv;  // (N, C), (N, C), (N, 3C)
  device_array<X> dfch, dfch_gelu;   // (N, 4C), (N, 4C)
  device_array<float> attention_ws;  // (B, NH, T)
  device_array<float> colsum_ws;     // column-sum partials, up to 4C columns
};

/// Everything up to the MLP's GELU (what the backward needs), for x (B,T,C).
template <class X>
void block_forward_activations(gemm_engine& g, const gpt_config& cfg, int B, int T,
                               const X* params, const X* x, block_activations<X>& a,
                               cudaStream_t stream) {
  const int C = cfg.width, N = B * T;
  const std::size_t NC = static_cast<std::size_t>(N) * C;
  const auto w = block_tensors<const X*>::carve(params, C);
  layernorm_forward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, w.ln1_w, w.ln1_b, N, C,
                    stream);
  matmul_forward(g, a.qkv.data(), a.ln1.data(), w.qkv_w, w.qkv_b, N, C, 3 * C, stream);
  attention_forward(a.atty.data(), a.att_lse.data(), a.qkv.data(), B, T, C, cfg.heads, stream);
  matmul_forward(g, a.res2.data(), a.atty.data(), w.attproj_w, w.attproj_b, N, C, C, stream);
  residual_forward(a.res2.data(), x, a.res2.data(), NC, stream);
  layernorm_forward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.res2.data(), w.ln2_w,
                    w.ln2_b, N, C, stream);
  matmul_forward(g, a.fch.data(), a.ln2.data(), w.fc_w, w.fc_b, N, C, 4 * C, stream);
  gelu_forward(a.fch_gelu.data(), a.fch.data(), 4 * NC, stream);
}

/// y (B,T,C) = block(x); y must not alias x.
template <class X>
void block_forward(gemm_engine& g, const gpt_config& cfg, int B, int T, const X* params,
                   const X* x, X* y, block_activations<X>& a, cudaStream_t stream) {
  const int C = cfg.width, N = B * T;
  const auto w = block_tensors<const X*>::carve(params, C);
  block_forward_activations(g, cfg, B, T, params, x, a, stream);
  matmul_forward(g, y, a.fch_gelu.data(), w.fcproj_w, w.fcproj_b, N, 4 * C, C, stream);
  residual_forward(y, a.res2.data(), y, static_cast<std::size_t>(N) * C, stream);
}

/// The block's backward. `a` must hold the activations of this block's forward of x.
/// dres (B,T,C) comes in as dL/dy and leaves as dL/dx (the residual stream's gradient flows
/// through in place); dparams (block_numel fp32) is overwritten.
template <class X>
void block_backward(gemm_engine& g, const gpt_config& cfg, int B, int T, const X* params,
                    const X* x, X* dres, float* dparams, const block_activations<X>& a,
                    block_grad_scratch<X>& s, cudaStream_t stream) {
  const int C = cfg.width, N = B * T;
  const std::size_t NC = static_cast<std::size_t>(N) * C;
  const auto w = block_tensors<const X*>::carve(params, C);
  const auto d = block_tensors<float*>::carve(dparams, C);
  float* ws = s.colsum_ws.data();
  constexpr bool accumulate = false;  // every gradient below has exactly one writer

  // y = res2 + mlp(ln_2(res2)): dres reaches res2 directly, and through the MLP (added by
  // ln_2's backward, which accumulates into its input gradient).
  matmul_backward(g, s.dfch_gelu.data(), d.fcproj_w, d.fcproj_b, ws, dres, a.fch_gelu.data(),
                  w.fcproj_w, N, 4 * C, C, accumulate, accumulate, stream);
  gelu_backward(s.dfch.data(), a.fch.data(), s.dfch_gelu.data(), 4 * NC, accumulate, stream);
  matmul_backward(g, s.dln.data(), d.fc_w, d.fc_b, ws, s.dfch.data(), a.ln2.data(), w.fc_w, N, C,
                  4 * C, accumulate, accumulate, stream);
  layernorm_backward(dres, d.ln2_w, d.ln2_b, ws, s.dln.data(), a.res2.data(), w.ln2_w,
                     a.ln2_mean.data(), a.ln2_rstd.data(), N, C, accumulate, stream);

  // res2 = x + attn(ln_1(x)): the same again one level down.
  matmul_backward(g, s.datty.data(), d.attproj_w, d.attproj_b, ws, dres, a.atty.data(),
                  w.attproj_w, N, C, C, accumulate, accumulate, stream);
  attention_backward(s.dqkv.data(), s.attention_ws.data(), s.datty.data(), a.qkv.data(),
                     a.atty.data(), a.att_lse.data(), B, T, C, cfg.heads, accumulate, stream);
  matmul_backward(g, s.dln.data(), d.qkv_w, d.qkv_b, ws, s.dqkv.data(), a.ln1.data(), w.qkv_w, N,
                  C, 3 * C, accumulate, accumulate, stream);
  layernorm_backward(dres, d.ln1_w, d.ln1_b, ws, s.dln.data(), x, w.ln1_w, a.ln1_mean.data(),
                     a.ln1_rstd.data(), N, C, accumulate, stream);
}

}  // namespace gpt::gpu
