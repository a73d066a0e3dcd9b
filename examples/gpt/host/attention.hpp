// examples/gpt/host/attention.hpp — causal multi-head self-attention on the host, tiled.
//
// What this is: the FlashAttention idea on a CPU. Queries are taken a tile of rows at a time;
// keys and values stream past in tiles; a running max and running sum per row (the "online
// softmax") let each tile's scores be folded into the output and then forgotten. No (T, T)
// score matrix is ever stored: the forward keeps only the output and one log-sum-exp per row,
// and the backward recomputes each tile's scores from Q and K. Every product of tiles is a
// small GEMM (cblas), the softmax bits are vectorised loops, OpenMP spreads (batch, head,
// query tile) work items over the threads.
// What it is not: the QKV or output projections (matmuls in host/block.hpp), dropout, or a
// KV-cache decoder (sampler.hpp).
//
// Layout: qkv (B, T, 3C) is the c_attn output, [q | k | v] along the last axis, head h owning
// channels [h*hs, (h+1)*hs) of each third (hs = C / NH). out (B, T, C) has the heads side by
// side the same way, lse is (B, NH, T). Scores are scaled by 1/sqrt(hs); position t attends to
// positions 0..t.
#pragma once

#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace gpt {

/// Rows of queries and of keys per tile. 64 x 64 scores fit in L1 with room for the Q, K, V
/// tiles next to them (hs <= 128), and the tile GEMMs are still big enough for OpenBLAS.
inline constexpr int attention_tile = 64;

namespace detail {
// Per-thread working memory for the tiles: grown on the first call of a given size and then
// reused, so the kernels do not allocate in steady state.
template <class real>
real* attention_scratch(std::size_t n) {
  thread_local std::vector<real> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}
}  // namespace detail

/// out (B,T,C) = causal softmax(Q K^T / sqrt(hs)) V per head; lse (B,NH,T) = the log-sum-exp
/// of each row of scaled scores (what the backward needs to rebuild the probabilities).
/// `tile` is the tile edge (tests use small ones); T need not be a multiple of it.
template <class real>
void attention_forward(real* out, real* lse, const real* qkv, int B, int T, int C, int NH,
                       int tile = attention_tile) {
  const int hs = C / NH, C3 = 3 * C;
  const real scale = real(1) / std::sqrt(real(hs));
  const int ntiles = (T + tile - 1) / tile;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) \
    if (parallel : parallel_worth(static_cast<std::size_t>(B) * T * T * C / 16))
  for (int bh = 0; bh < B * NH; ++bh) {
    for (int qt = 0; qt < ntiles; ++qt) {
      const int b = bh / NH, h = bh % NH;
      const int i0 = qt * tile, nq = std::min(tile, T - i0);
      real* S = detail::attention_scratch<real>(static_cast<std::size_t>(tile) * (tile + hs + 2));
      real* O = S + static_cast<std::size_t>(tile) * tile;  // (nq, hs), unnormalised
      real* m = O + static_cast<std::size_t>(tile) * hs;    // running row max
      real* l = m + tile;                                   // running row sum of exp
      const real* seq = qkv + static_cast<std::size_t>(b) * T * C3;
      const real* Q = seq + static_cast<std::size_t>(i0) * C3 + h * hs;
      std::fill(O, O + static_cast<std::size_t>(nq) * hs, real(0));
      std::fill(l, l + nq, real(0));
      // Key tiles up to and including the diagonal one (query and key tiles share edges, so
      // the last key tile starts at i0 and every row sees at least one key of each tile).
      for (int j0 = 0; j0 < i0 + nq; j0 += tile) {
        const int nk = std::min(tile, i0 + nq - j0);
        const real* K = seq + static_cast<std::size_t>(j0) * C3 + C + h * hs;
        const real* V = seq + static_cast<std::size_t>(j0) * C3 + 2 * C + h * hs;
        gemm(false, true, nq, nk, hs, scale, Q, C3, K, C3, real(0), S, tile);  // (nq, nk)
        for (int r = 0; r < nq; ++r) {
          const int visible = std::min(nk, i0 + r - j0 + 1);  // keys j0 .. i0+r
          real* s = S + static_cast<std::size_t>(r) * tile;
          real mx = s[0];
#pragma omp simd reduction(max : mx)
          for (int c = 1; c < visible; ++c) mx = s[c] > mx ? s[c] : mx;
          const real m_new = j0 == 0 ? mx : std::max(m[r], mx);
          real sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int c = 0; c < visible; ++c) {
            s[c] = fast_exp(s[c] - m_new);
            sum += s[c];
          }
          std::fill(s + visible, s + nk, real(0));  // masked: the future
          if (j0 == 0) {
            l[r] = sum;
          } else {
            // Rescale what was accumulated under the old max.
            const real corr = fast_exp(m[r] - m_new);
            l[r] = l[r] * corr + sum;
            real* o = O + static_cast<std::size_t>(r) * hs;
#pragma omp simd
            for (int d = 0; d < hs; ++d) o[d] *= corr;
          }
          m[r] = m_new;
        }
        gemm(false, false, nq, hs, nk, real(1), S, tile, V, C3, real(1), O, hs);  // O += P V
      }
      real* lse_row = lse + (static_cast<std::size_t>(b) * NH + h) * T + i0;
      for (int r = 0; r < nq; ++r) {
        const real inv = real(1) / l[r];
        const real* o = O + static_cast<std::size_t>(r) * hs;
        real* dst = out + (static_cast<std::size_t>(b) * T + i0 + r) * C + h * hs;
#pragma omp simd
        for (int d = 0; d < hs; ++d) dst[d] = o[d] * inv;
        lse_row[r] = m[r] + std::log(l[r]);
      }
    }
  }
}

/// dqkv (B,T,3C) += the gradient through attention, given dout (B,T,C) and the forward's
/// qkv, out and lse. Scores and probabilities are rebuilt tile by tile (P = exp(S - lse)), so
/// this too never holds a (T, T) matrix. One work item per (batch, head): it owns that head's
/// slice of dqkv, so dQ, dK and dV tiles are accumulated in place without races.
template <class real>
void attention_backward(real* dqkv, const real* dout, const real* qkv, const real* out,
                        const real* lse, int B, int T, int C, int NH, int tile = attention_tile) {
  const int hs = C / NH, C3 = 3 * C;
  const real scale = real(1) / std::sqrt(real(hs));
#pragma omp parallel for schedule(dynamic, 1) \
    if (parallel : parallel_worth(static_cast<std::size_t>(B) * T * T * C / 16))
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    real* P = detail::attention_scratch<real>(2 * static_cast<std::size_t>(tile) * tile + T);
    real* dP = P + static_cast<std::size_t>(tile) * tile;  // then dS, in place
    real* D = dP + static_cast<std::size_t>(tile) * tile;  // (T): rowsum(dout * out)
    const real* seq = qkv + static_cast<std::size_t>(b) * T * C3;
    real* dseq = dqkv + static_cast<std::size_t>(b) * T * C3;
    const real* lse_bh = lse + (static_cast<std::size_t>(b) * NH + h) * T;
    for (int t = 0; t < T; ++t) {
      const real* o = out + (static_cast<std::size_t>(b) * T + t) * C + h * hs;
      const real* d = dout + (static_cast<std::size_t>(b) * T + t) * C + h * hs;
      real sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int k = 0; k < hs; ++k) sum += o[k] * d[k];
      D[t] = sum;
    }
    for (int i0 = 0; i0 < T; i0 += tile) {
      const int nq = std::min(tile, T - i0);
      const real* Q = seq + static_cast<std::size_t>(i0) * C3 + h * hs;
      real* dQ = dseq + static_cast<std::size_t>(i0) * C3 + h * hs;
      const real* dO = dout + (static_cast<std::size_t>(b) * T + i0) * C + h * hs;
      for (int j0 = 0; j0 < i0 + nq; j0 += tile) {
        const int nk = std::min(tile, i0 + nq - j0);
        const std::size_t krow = static_cast<std::size_t>(j0) * C3;
        const real* K = seq + krow + C + h * hs;
        const real* V = seq + krow + 2 * C + h * hs;
        real* dK = dseq + krow + C + h * hs;
        real* dV = dseq + krow + 2 * C + h * hs;
        gemm(false, true, nq, nk, hs, scale, Q, C3, K, C3, real(0), P, tile);     // S
        gemm(false, true, nq, nk, hs, real(1), dO, C, V, C3, real(0), dP, tile);  // dP = dO V^T
        for (int r = 0; r < nq; ++r) {
          const int visible = std::min(nk, i0 + r - j0 + 1);
          real* p = P + static_cast<std::size_t>(r) * tile;
          real* ds = dP + static_cast<std::size_t>(r) * tile;
          const real l = lse_bh[i0 + r], Dr = D[i0 + r];
#pragma omp simd
          for (int c = 0; c < visible; ++c) {
            p[c] = fast_exp(p[c] - l);
            ds[c] = p[c] * (ds[c] - Dr) * scale;  // dS, with the score scale folded in
          }
          std::fill(p + visible, p + nk, real(0));
          std::fill(ds + visible, ds + nk, real(0));
        }
        gemm(true, false, nk, hs, nq, real(1), P, tile, dO, C, real(1), dV, C3);   // dV += P^T dO
        gemm(false, false, nq, hs, nk, real(1), dP, tile, K, C3, real(1), dQ, C3);  // dQ += dS K
        gemm(true, false, nk, hs, nq, real(1), dP, tile, Q, C3, real(1), dK, C3);   // dK += dS^T Q
      }
    }
  }
}

}  // namespace gpt
