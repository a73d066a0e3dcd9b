// examples/gpt/cuda/kernels.cuh — the mini-GPT's CUDA kernels (all but attention and GEMMs).
//
// What this is: the GPU twins of host/kernels.hpp, one forward/backward pair each — encoder
// (token + position embedding), layernorm (one warp per row, cub::WarpReduce), GELU (GPT-2's
// tanh form), residual add, softmax cross-entropy over the vocab (one block per row,
// cub::BlockReduce), bias and layernorm parameter gradients (column sums), casts. Each kernel
// comes with a launcher that takes a stream; every launcher is asynchronous.
// What it is not: attention (attention.cuh), matmuls (gemm.cuh, cuBLASLt), a block or a model
// (block.cuh, model.cuh).
//
// Precision: X, the activation type, is float or bf16 (common.cuh). Every kernel loads X,
// computes in fp32 and rounds once when it stores X. Statistics — layernorm mean/rstd, the
// loss, the log-sum-exp of each row — are fp32, and so are parameter gradients.
//
// Conventions (as host/kernels.hpp): B batch, T sequence length, C channels, OC output
// channels, V vocab, N = B*T rows, row-major. Backward launchers take `accumulate`: false
// overwrites the gradient, true adds to it (+=, what the host kernels always do). Every
// reduction runs in a fixed order (no atomics), so a result does not change from run to run.
#pragma once

#include "common.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/util_ptx.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpt::gpu {

inline constexpr float layernorm_eps = 1e-5f;  // GPT-2's
inline constexpr float gelu_scale = 0.7978845608028654f;  // sqrt(2/pi)

namespace detail {

inline constexpr int elementwise_threads = 256;
inline constexpr int ln_warps = 8;            // rows per layernorm block, one warp each
inline constexpr int ce_threads = 512;        // one block per cross-entropy row
inline constexpr int colsum_rows = 64;        // rows summed by one thread into one partial
inline constexpr int colsum_threads = 128;    // columns per column-sum block

inline int colsum_chunks(int rows) { return (rows + colsum_rows - 1) / colsum_rows; }

// The max operator of a block reduction. Our own: ::cuda::maximum needs CCCL 2.8 (CUDA 12.9),
// and cub::Max is gone from CCCL 3 (CUDA 13); the GPU path builds with CUDA 12.4 .. 13.x.
struct max_op {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Sum over the warp, returned to every lane (cub reduces into lane 0; ShuffleIndex broadcasts).
__device__ __forceinline__ float warp_sum_all(float v, cub::WarpReduce<float>::TempStorage& temp) {
  const float total = cub::WarpReduce<float>(temp).Sum(v);
  __syncwarp();  // temp may be reused by the caller's next reduction
  return cub::ShuffleIndex<32>(total, 0, 0xffffffffu);
}

// ---- casts ----------------------------------------------------------------------------------
template <class Out, class In>
__global__ void convert_kernel(Out* out, const In* in, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = from_f32<Out>(to_f32(in[i]));
}

// ---- encoder --------------------------------------------------------------------------------
template <class X>
__global__ void encoder_forward_kernel(X* out, const int* tokens, const X* wte, const X* wpe,
                                       int N, int T, int C) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<std::size_t>(N) * C) return;
  const int n = static_cast<int>(i / C), c = static_cast<int>(i % C), t = n % T;
  out[i] = from_f32<X>(to_f32(wte[static_cast<std::size_t>(tokens[n]) * C + c]) +
                       to_f32(wpe[static_cast<std::size_t>(t) * C + c]));
}

// dwpe (T,C) += dout summed over the batch, b in order.
template <class X>
__global__ void wpe_backward_kernel(float* dwpe, const X* dout, int B, int T, int C) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<std::size_t>(T) * C) return;
  float s = 0.0f;
  for (int b = 0; b < B; ++b) s += to_f32(dout[static_cast<std::size_t>(b) * T * C + i]);
  dwpe[i] += s;
}

// One block per distinct token: dwte[token] += the dout rows of its positions, in row order.
// No two blocks share a row of dwte, so no atomics are needed and the sum order is fixed.
template <class X>
__global__ void wte_backward_kernel(float* dwte, const X* dout, const int* distinct,
                                    const int* start, const int* positions, int C) {
  const int u = blockIdx.x;
  const int p0 = start[u], p1 = start[u + 1];
  float* row = dwte + static_cast<std::size_t>(distinct[u]) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float s = 0.0f;
    for (int p = p0; p < p1; ++p) s += to_f32(dout[static_cast<std::size_t>(positions[p]) * C + c]);
    row[c] += s;
  }
}

// ---- layernorm ------------------------------------------------------------------------------
// One warp per row: mean, then the variance in a second pass over the row (no cancellation).
template <class X>
__global__ void __launch_bounds__(ln_warps * 32)
    layernorm_forward_kernel(X* out, float* mean, float* rstd, const X* inp, const X* weight,
                             const X* bias, int N, int C) {
  __shared__ cub::WarpReduce<float>::TempStorage temp[ln_warps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n = blockIdx.x * ln_warps + warp;
  if (n >= N) return;  // the whole warp leaves together
  const X* x = inp + static_cast<std::size_t>(n) * C;
  X* o = out + static_cast<std::size_t>(n) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += 32) sum += to_f32(x[c]);
  const float m = warp_sum_all(sum, temp[warp]) / C;
  float var = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_f32(x[c]) - m;
    var += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum_all(var, temp[warp]) / C + layernorm_eps);
  for (int c = lane; c < C; c += 32)
    o[c] = from_f32<X>((to_f32(x[c]) - m) * s * to_f32(weight[c]) + to_f32(bias[c]));
  if (lane == 0) {
    mean[n] = m;
    rstd[n] = s;
  }
}

// dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight; one warp per row.
template <class X>
__global__ void __launch_bounds__(ln_warps * 32)
    layernorm_backward_input_kernel(X* dinp, const X* dout, const X* inp, const X* weight,
                                    const float* mean, const float* rstd, int N, int C) {
  __shared__ cub::WarpReduce<float>::TempStorage temp[ln_warps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n = blockIdx.x * ln_warps + warp;
  if (n >= N) return;
  const std::size_t row = static_cast<std::size_t>(n) * C;
  const float m = mean[n], s = rstd[n];
  float g_sum = 0.0f, gx_sum = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float g = to_f32(dout[row + c]) * to_f32(weight[c]);
    g_sum += g;
    gx_sum += g * (to_f32(inp[row + c]) - m) * s;
  }
  const float g_mean = warp_sum_all(g_sum, temp[warp]) / C;
  const float gx_mean = warp_sum_all(gx_sum, temp[warp]) / C;
  for (int c = lane; c < C; c += 32) {
    const float xhat = (to_f32(inp[row + c]) - m) * s;
    const float g = to_f32(dout[row + c]) * to_f32(weight[c]);
    dinp[row + c] = from_f32<X>(to_f32(dinp[row + c]) + (g - g_mean - xhat * gx_mean) * s);
  }
}

// Column sums in two deterministic stages: chunk k of colsum_rows rows -> partial[k][c] (one
// thread per column walks its rows in order), then partials summed over k in order.
template <class X>
__global__ void layernorm_backward_params_partial_kernel(float* partial_w, float* partial_b,
                                                         const X* dout, const X* inp,
                                                         const float* mean, const float* rstd,
                                                         int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (c >= C) return;
  const int r0 = k * colsum_rows, r1 = min(N, r0 + colsum_rows);
  float sw = 0.0f, sb = 0.0f;
  for (int r = r0; r < r1; ++r) {
    const std::size_t i = static_cast<std::size_t>(r) * C + c;
    const float d = to_f32(dout[i]);
    sw += d * (to_f32(inp[i]) - mean[r]) * rstd[r];
    sb += d;
  }
  partial_w[static_cast<std::size_t>(k) * C + c] = sw;
  partial_b[static_cast<std::size_t>(k) * C + c] = sb;
}

template <class X>
__global__ void bias_backward_partial_kernel(float* partial, const X* dout, int N, int OC, int ld) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (c >= OC) return;
  const int r0 = k * colsum_rows, r1 = min(N, r0 + colsum_rows);
  float s = 0.0f;
  for (int r = r0; r < r1; ++r) s += to_f32(dout[static_cast<std::size_t>(r) * ld + c]);
  partial[static_cast<std::size_t>(k) * OC + c] = s;
}

// (A template only so that it is not defined again in every translation unit.)
template <class F>
__global__ void colsum_finalize_kernel(F* out, const F* partial, int chunks, int n, bool accumulate) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n) return;
  F s = 0.0f;
  for (int k = 0; k < chunks; ++k) s += partial[static_cast<std::size_t>(k) * n + c];
  out[c] = accumulate ? out[c] + s : s;
}

// ---- GELU, residual -------------------------------------------------------------------------
template <class X>
__global__ void gelu_forward_kernel(X* out, const X* inp, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float x = to_f32(inp[i]);
  out[i] = from_f32<X>(0.5f * x * (1.0f + tanhf(gelu_scale * (x + 0.044715f * x * x * x))));
}

template <class X>
__global__ void gelu_backward_kernel(X* dinp, const X* inp, const X* dout, std::size_t n,
                                     bool accumulate) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float x = to_f32(inp[i]);
  const float th = tanhf(gelu_scale * (x + 0.044715f * x * x * x));
  const float local = 0.5f * (1.0f + th) +
                      0.5f * x * (1.0f - th * th) * gelu_scale * (1.0f + 3.0f * 0.044715f * x * x);
  const float g = local * to_f32(dout[i]);  // dout is read before dinp is written: may alias
  dinp[i] = from_f32<X>(accumulate ? to_f32(dinp[i]) + g : g);
}

template <class X>
__global__ void residual_forward_kernel(X* out, const X* a, const X* b, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = from_f32<X>(to_f32(a[i]) + to_f32(b[i]));
}

// ---- softmax cross-entropy, one block per row -----------------------------------------------
// losses[n] = logsumexp(z) - z[target] (0 when target < 0); row_lse[n] = logsumexp(z), which
// is all the backward needs to rebuild the probabilities.
template <class X>
__global__ void __launch_bounds__(ce_threads)
    crossentropy_forward_kernel(float* losses, float* row_lse, const X* logits,
                                const int* targets, int V, int ld) {
  using block_reduce = cub::BlockReduce<float, ce_threads>;
  __shared__ typename block_reduce::TempStorage temp;
  __shared__ float row_max;
  const int n = blockIdx.x;
  const X* z = logits + static_cast<std::size_t>(n) * ld;
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += ce_threads) mx = fmaxf(mx, to_f32(z[v]));
  const float block_max = block_reduce(temp).Reduce(mx, max_op{});
  if (threadIdx.x == 0) row_max = block_max;
  __syncthreads();  // row_max is visible, and temp may be reused
  mx = row_max;
  float sum = 0.0f;
  for (int v = threadIdx.x; v < V; v += ce_threads) sum += expf(to_f32(z[v]) - mx);
  const float block_sum = block_reduce(temp).Sum(sum);
  if (threadIdx.x == 0) {
    const float lse = mx + logf(block_sum);
    const int target = targets[n];
    row_lse[n] = lse;
    losses[n] = target >= 0 ? lse - to_f32(z[target]) : 0.0f;
  }
}

// dlogits = scale * (softmax(z) - onehot(target)) on rows with a target, 0 on the others.
// Each element is read before it is written by the same thread: dlogits may alias logits.
template <class X>
__global__ void crossentropy_backward_kernel(X* dlogits, const X* logits, const float* row_lse,
                                             const int* targets, float scale, int V, int ld) {
  const int n = blockIdx.x;
  const int target = targets[n];
  const float lse = row_lse[n];
  const std::size_t row = static_cast<std::size_t>(n) * ld;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    float d = 0.0f;
    if (target >= 0) d = scale * (expf(to_f32(logits[row + v]) - lse) - (v == target ? 1.0f : 0.0f));
    dlogits[row + v] = from_f32<X>(d);
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------

/// out (n) = in (n) converted (fp32 <-> bf16, or a copy), round to nearest even.
template <class Out, class In>
void convert(Out* out, const In* in, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  detail::convert_kernel<<<blocks_for(n, detail::elementwise_threads), detail::elementwise_threads,
                           0, stream>>>(out, in, n);
  check_launch("convert");
}

/// out (B,T,C) = wte[tokens] + wpe[t]; tokens (B,T) in device memory, in [0, V).
template <class X>
void encoder_forward(X* out, const int* tokens, const X* wte, const X* wpe, int B, int T, int C,
                     cudaStream_t stream) {
  const std::size_t n = static_cast<std::size_t>(B) * T * C;
  detail::encoder_forward_kernel<<<blocks_for(n, detail::elementwise_threads),
                                   detail::elementwise_threads, 0, stream>>>(out, tokens, wte, wpe,
                                                                             B * T, T, C);
  check_launch("encoder_forward");
}

/// The positions of a batch grouped by token (host side, O(N + V) counting sort), so the
/// embedding backward can give each row of dwte to one thread block: deterministic, no atomics.
struct token_index {
  std::vector<int> distinct;   // (U) the tokens that occur, ascending
  std::vector<int> start;      // (U + 1) where each one's positions begin in `positions`
  std::vector<int> positions;  // (N) rows n = b*T + t, grouped by token, ascending in a group
};

/// tokens (N) in [0, V) (checked by the caller).
inline token_index build_token_index(const int* tokens, int N, int V) {
  std::vector<int> count(static_cast<std::size_t>(V) + 1, 0);
  for (int n = 0; n < N; ++n) ++count[static_cast<std::size_t>(tokens[n]) + 1];
  token_index ix;
  for (int v = 0; v < V; ++v)
    if (count[static_cast<std::size_t>(v) + 1] > 0) ix.distinct.push_back(v);
  for (int v = 0; v < V; ++v) count[static_cast<std::size_t>(v) + 1] += count[v];  // exclusive scan
  ix.positions.resize(static_cast<std::size_t>(N));
  std::vector<int> next(count.begin(), count.end() - 1);
  for (int n = 0; n < N; ++n) ix.positions[static_cast<std::size_t>(next[tokens[n]]++)] = n;
  ix.start.reserve(ix.distinct.size() + 1);
  for (int v : ix.distinct) ix.start.push_back(count[v]);
  ix.start.push_back(N);
  return ix;
}

/// A token_index in device memory, with room for batches of up to max_rows positions.
struct device_token_index {
  explicit device_token_index(int max_rows)
      : distinct(static_cast<std::size_t>(max_rows), "token index"),
        start(static_cast<std::size_t>(max_rows) + 1, "token index"),
        positions(static_cast<std::size_t>(max_rows), "token index") {}

  /// Copies ix in, ordered on `stream`: after the kernels already queued there, which may still
  /// read the previous batch's index. ix may be dropped on return (a copy from pageable memory
  /// is staged before cudaMemcpyAsync returns).
  void assign(const token_index& ix, cudaStream_t stream) {
    if (ix.positions.size() > positions.size())
      throw std::invalid_argument("device_token_index: " + std::to_string(ix.positions.size()) +
                                  " positions, room for " + std::to_string(positions.size()));
    count = static_cast<int>(ix.distinct.size());
    copy(distinct.data(), ix.distinct, stream);
    copy(start.data(), ix.start, stream);
    copy(positions.data(), ix.positions, stream);
  }

  device_array<int> distinct, start, positions;
  int count = 0;

private:
  static void copy(int* dst, const std::vector<int>& src, cudaStream_t stream) {
    strata::check_cuda(cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(int),
                                       cudaMemcpyHostToDevice, stream),
                       "device_token_index: upload");
  }
};

/// dwte (V,C) += dout scattered by token, dwpe (T,C) += dout summed over the batch (both
/// always accumulate: the tied wte also receives the head's gradient). ix indexes this batch.
template <class X>
void encoder_backward(float* dwte, float* dwpe, const X* dout, const device_token_index& ix, int B,
                      int T, int C, cudaStream_t stream) {
  const std::size_t tc = static_cast<std::size_t>(T) * C;
  detail::wpe_backward_kernel<<<blocks_for(tc, detail::elementwise_threads),
                                detail::elementwise_threads, 0, stream>>>(dwpe, dout, B, T, C);
  check_launch("wpe_backward");
  if (ix.count == 0) return;
  detail::wte_backward_kernel<<<static_cast<unsigned>(ix.count), 128, 0, stream>>>(
      dwte, dout, ix.distinct.data(), ix.start.data(), ix.positions.data(), C);
  check_launch("wte_backward");
}

/// out (N,C) = (inp - mean) * rstd * weight + bias; mean (N), rstd (N) fp32 for the backward.
template <class X>
void layernorm_forward(X* out, float* mean, float* rstd, const X* inp, const X* weight,
                       const X* bias, int N, int C, cudaStream_t stream) {
  detail::layernorm_forward_kernel<<<blocks_for(static_cast<std::size_t>(N), detail::ln_warps),
                                     detail::ln_warps * 32, 0, stream>>>(out, mean, rstd, inp,
                                                                         weight, bias, N, C);
  check_launch("layernorm_forward");
}

/// Floats of workspace that the column sums (layernorm parameter and bias gradients) need for
/// `rows` rows of up to `max_cols` columns.
inline std::size_t colsum_workspace_floats(int rows, int max_cols) {
  return 2 * static_cast<std::size_t>(detail::colsum_chunks(rows)) * static_cast<std::size_t>(max_cols);
}

/// dinp (N,C) += the gradient through the normalisation (always accumulates: it is the
/// residual stream's gradient); dweight, dbias (C) fp32, overwritten or accumulated.
/// workspace: colsum_workspace_floats(N, C) floats.
template <class X>
void layernorm_backward(X* dinp, float* dweight, float* dbias, float* workspace, const X* dout,
                        const X* inp, const X* weight, const float* mean, const float* rstd, int N,
                        int C, bool accumulate, cudaStream_t stream) {
  detail::layernorm_backward_input_kernel<<<blocks_for(static_cast<std::size_t>(N), detail::ln_warps),
                                            detail::ln_warps * 32, 0, stream>>>(
      dinp, dout, inp, weight, mean, rstd, N, C);
  check_launch("layernorm_backward_input");
  const int chunks = detail::colsum_chunks(N);
  float* partial_w = workspace;
  float* partial_b = workspace + static_cast<std::size_t>(chunks) * C;
  const dim3 grid(blocks_for(static_cast<std::size_t>(C), detail::colsum_threads),
                  static_cast<unsigned>(chunks));
  detail::layernorm_backward_params_partial_kernel<<<grid, detail::colsum_threads, 0, stream>>>(
      partial_w, partial_b, dout, inp, mean, rstd, N, C);
  check_launch("layernorm_backward_params");
  const unsigned fin = blocks_for(static_cast<std::size_t>(C), detail::colsum_threads);
  detail::colsum_finalize_kernel<<<fin, detail::colsum_threads, 0, stream>>>(dweight, partial_w,
                                                                             chunks, C, accumulate);
  detail::colsum_finalize_kernel<<<fin, detail::colsum_threads, 0, stream>>>(dbias, partial_b,
                                                                             chunks, C, accumulate);
  check_launch("layernorm_backward_finalize");
}

/// dbias (OC) fp32 = column sums of dout (N,OC) (row stride ld >= OC), overwritten or
/// accumulated. workspace: colsum_workspace_floats(N, OC) floats.
template <class X>
void bias_backward(float* dbias, float* workspace, const X* dout, int N, int OC, int ld,
                   bool accumulate, cudaStream_t stream) {
  const int chunks = detail::colsum_chunks(N);
  const dim3 grid(blocks_for(static_cast<std::size_t>(OC), detail::colsum_threads),
                  static_cast<unsigned>(chunks));
  detail::bias_backward_partial_kernel<<<grid, detail::colsum_threads, 0, stream>>>(workspace, dout,
                                                                                    N, OC, ld);
  check_launch("bias_backward_partial");
  detail::colsum_finalize_kernel<<<blocks_for(static_cast<std::size_t>(OC), detail::colsum_threads),
                                   detail::colsum_threads, 0, stream>>>(dbias, workspace, chunks,
                                                                        OC, accumulate);
  check_launch("bias_backward_finalize");
}

/// out (n) = gelu(inp), GPT-2's tanh approximation; out may alias inp.
template <class X>
void gelu_forward(X* out, const X* inp, std::size_t n, cudaStream_t stream) {
  detail::gelu_forward_kernel<<<blocks_for(n, detail::elementwise_threads),
                                detail::elementwise_threads, 0, stream>>>(out, inp, n);
  check_launch("gelu_forward");
}

/// dinp (n) = (or +=) gelu'(inp) * dout; dinp may alias dout.
template <class X>
void gelu_backward(X* dinp, const X* inp, const X* dout, std::size_t n, bool accumulate,
                   cudaStream_t stream) {
  detail::gelu_backward_kernel<<<blocks_for(n, detail::elementwise_threads),
                                 detail::elementwise_threads, 0, stream>>>(dinp, inp, dout, n,
                                                                           accumulate);
  check_launch("gelu_backward");
}

/// out (n) = a + b; out may alias a or b.
template <class X>
void residual_forward(X* out, const X* a, const X* b, std::size_t n, cudaStream_t stream) {
  detail::residual_forward_kernel<<<blocks_for(n, detail::elementwise_threads),
                                    detail::elementwise_threads, 0, stream>>>(out, a, b, n);
  check_launch("residual_forward");
}

/// Per-row softmax cross-entropy of logits (N,V) with row stride ld >= V: losses (N) (0 where
/// targets[n] < 0) and row_lse (N), the log-sum-exp of each row. targets (N) in [-1, V).
template <class X>
void crossentropy_forward(float* losses, float* row_lse, const X* logits, const int* targets,
                          int N, int V, int ld, cudaStream_t stream) {
  if (N == 0) return;
  detail::crossentropy_forward_kernel<<<static_cast<unsigned>(N), detail::ce_threads, 0, stream>>>(
      losses, row_lse, logits, targets, V, ld);
  check_launch("crossentropy_forward");
}

/// dlogits (N,V) = scale * (softmax - onehot(target)) (scale = dloss / rows with a target), 0
/// on rows without a target; overwritten, and may alias logits (in place, as the model does).
template <class X>
void crossentropy_backward(X* dlogits, const X* logits, const float* row_lse, const int* targets,
                           float scale, int N, int V, int ld, cudaStream_t stream) {
  if (N == 0) return;
  detail::crossentropy_backward_kernel<<<static_cast<unsigned>(N), 256, 0, stream>>>(
      dlogits, logits, row_lse, targets, scale, V, ld);
  check_launch("crossentropy_backward");
}

}  // namespace gpt::gpu
