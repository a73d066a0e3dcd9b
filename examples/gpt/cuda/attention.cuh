// examples/gpt/cuda/attention.cuh — causal multi-head self-attention on the GPU, tiled.
//
// What this is: the public entry points (attention_forward, attention_backward,
// attention_workspace_floats) and the FlashAttention idea in its simplest CUDA form, the twin of
// host/attention.hpp. No (T, T) matrix is ever stored, in either direction. Two
// implementations sit behind the same calls:
//   tensor cores  attention_tc.cuh: X = bf16 with head size 32, 64 or 128 (and 16-byte aligned
//                 qkv / dout, which every device_array is). mma.sync bf16 tiles with fp32
//                 accumulation, longest-tile-first scheduling over the causal triangle,
//                 deterministic. The path of a bf16 training step (GPT-2: hs 64).
//   CUDA cores    this file: everything else, i.e. X = float (the exact path the tests compare
//                 with the host model, kept in fp32 on purpose: tensor cores would round the
//                 inputs to bf16/tf32), the head sizes 8 and 16 (too narrow to keep the
//                 16-wide MMA busy, not worth kernels of their own), misaligned pointers.
// The CUDA-core kernels:
//   forward   one thread (or a few, see below) per query row; key/value tiles of att_tile rows
//             are staged in shared memory as fp32; scores are folded into the output with an
//             online softmax (running max m and sum l per row, rescaled once per chunk of
//             att_chunk keys). Keeps out and one log-sum-exp per row (lse) for the backward.
//   backward  rebuilds P = exp(S - lse) tile by tile, in two kernels so that every gradient
//             element has exactly one writer (no atomics, deterministic): one walks the keys of
//             a query row and writes dQ; the other walks the queries of a key row and writes
//             dK and dV. D = rowsum(dout * out) is computed first, once per row (both paths).
// Everything accumulates in fp32; inputs and outputs are X (float or bf16).
// What it is not: fast on the fallback. The CUDA-core products are for correctness and
// readability; a bf16 model with hs 32/64/128 never runs them (see bench_gpt_cuda).
//
// Threads per row: a row's head vector (hs values) is split over S = max(1, hs / 32) adjacent
// lanes, each holding D = hs / S values in registers, so a thread never keeps more than
// 4 x 32 floats of vectors; partial dot products are summed over the S lanes with
// cub::WarpReduce (a logical warp of S threads) and broadcast with cub::ShuffleIndex.
// Head sizes 8, 16, 32, 64 and 128 are instantiated; others are an invalid_argument.
//
// Layout as host/attention.hpp: qkv (B, T, 3C) is [q | k | v] on the last axis, head h owning
// channels [h*hs, (h+1)*hs) of each third; out (B, T, C); lse (B, NH, T); scores scaled by
// 1/sqrt(hs); position t attends to 0..t.
#pragma once

#include "attention_tc.cuh"
#include "common.cuh"

#include <cub/util_ptx.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace gpt::gpu {

namespace detail {

inline constexpr int att_rows = 64;   // query rows (forward, dQ) or key rows (dK/dV) per block
inline constexpr int att_tile = 32;   // rows of the other side staged in shared memory at once
inline constexpr int att_chunk = 16;  // keys per online-softmax rescale in the forward

__host__ __device__ constexpr int att_split(int hs) { return hs > 32 ? hs / 32 : 1; }

// The sum of v over the S lanes that share a row, returned to all of them. With S = 1 it is
// v itself. (cub's shuffle reduction keeps nothing in temp, so back-to-back calls on the same
// temp need no barrier.)
template <int S>
__device__ __forceinline__ float split_sum(float v,
                                           typename cub::WarpReduce<float, S>::TempStorage& temp) {
  if constexpr (S == 1) {
    return v;
  } else {
    const float total = cub::WarpReduce<float, S>(temp).Sum(v);
    return cub::ShuffleIndex<S>(total, 0, 0xffffffffu);
  }
}

// Rows r0 .. r0 + att_tile - 1 of a (rows, stride) matrix's hs-wide slice `src`, as fp32, into
// dst; rows at or past `rend` become zeros (never read as data, but never garbage either).
template <int HS, class X>
__device__ __forceinline__ void stage_rows(float (*dst)[HS], const X* src, int r0, int rend,
                                           std::size_t stride) {
  for (int i = threadIdx.x; i < att_tile * HS; i += blockDim.x) {
    const int r = i / HS, d = i % HS;
    dst[r][d] = r0 + r < rend ? to_f32(src[static_cast<std::size_t>(r0 + r) * stride + d]) : 0.0f;
  }
}

// grid (ceil(T / att_rows), B*NH), block att_rows * S threads.
template <class X, int HS>
__global__ void __launch_bounds__(att_rows * att_split(HS))
    attention_forward_kernel(X* out, float* lse, const X* qkv, int T, int C, int NH) {
  constexpr int S = att_split(HS), D = HS / S;
  __shared__ typename cub::WarpReduce<float, S>::TempStorage temp[att_rows];
  __shared__ float Ks[att_tile][HS];
  __shared__ float Vs[att_tile][HS];

  const int row = threadIdx.x / S, part = threadIdx.x % S;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int i0 = blockIdx.x * att_rows;
  const bool valid = i0 + row < T;
  const int t = valid ? i0 + row : T - 1;  // rows past T compute a copy of row T-1, unstored
  const std::size_t C3 = 3 * static_cast<std::size_t>(C);
  const X* seq = qkv + static_cast<std::size_t>(b) * T * C3;
  const int hoff = h * HS;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));

  float q[D], o[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = to_f32(seq[static_cast<std::size_t>(t) * C3 + hoff + part * D + d]);
    o[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;

  const int kend = min(T, i0 + att_rows);  // the block's last row sees keys 0 .. kend-1
  for (int j0 = 0; j0 < kend; j0 += att_tile) {
    __syncthreads();  // everyone is done with the previous tile
    stage_rows<HS>(Ks, seq + C + hoff, j0, kend, C3);
    stage_rows<HS>(Vs, seq + 2 * C + hoff, j0, kend, C3);
    __syncthreads();
    for (int c0 = 0; c0 < att_tile && j0 + c0 < kend; c0 += att_chunk) {  // uniform in the block
      float s[att_chunk];
      float mx = m;
#pragma unroll
      for (int c = 0; c < att_chunk; ++c) {
        const float* k = &Ks[c0 + c][part * D];
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < D; ++d) dot += q[d] * k[d];
        dot = split_sum<S>(dot, temp[row]);
        s[c] = j0 + c0 + c <= t ? dot * scale : -INFINITY;  // causal mask (and rows past kend)
        mx = fmaxf(mx, s[c]);
      }
      // mx is finite: key 0 is in the first chunk and every row sees it. On the first chunk
      // m = -inf and corr = exp(-inf) = 0, which clears nothing that was not already 0.
      const float corr = expf(m - mx);
      l *= corr;
#pragma unroll
      for (int d = 0; d < D; ++d) o[d] *= corr;
#pragma unroll
      for (int c = 0; c < att_chunk; ++c) {
        const float p = expf(s[c] - mx);  // 0 for masked keys
        l += p;
        const float* v = &Vs[c0 + c][part * D];
#pragma unroll
        for (int d = 0; d < D; ++d) o[d] += p * v[d];
      }
      m = mx;
    }
  }
  if (!valid) return;
  const float inv = 1.0f / l;
  X* dst = out + (static_cast<std::size_t>(b) * T + t) * C + hoff + part * D;
#pragma unroll
  for (int d = 0; d < D; ++d) dst[d] = from_f32<X>(o[d] * inv);
  if (part == 0) lse[static_cast<std::size_t>(bh) * T + t] = m + logf(l);
}

// Drow (B, NH, T) = sum over the head's channels of dout * out: one thread per row.
template <class X>
__global__ void attention_row_dot_kernel(float* Drow, const X* dout, const X* out, int B, int T,
                                         int C, int NH) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<std::size_t>(B) * NH * T) return;
  const int t = static_cast<int>(i % T);
  const int bh = static_cast<int>(i / T), b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const std::size_t base = (static_cast<std::size_t>(b) * T + t) * C + static_cast<std::size_t>(h) * hs;
  float s = 0.0f;
  for (int d = 0; d < hs; ++d) s += to_f32(dout[base + d]) * to_f32(out[base + d]);
  Drow[i] = s;
}

// dQ of one query row per S threads: dq = scale * sum_j P_tj (dP_tj - D_t) k_j, dP = dout . v.
template <class X, int HS>
__global__ void __launch_bounds__(att_rows * att_split(HS))
    attention_backward_dq_kernel(X* dqkv, const X* dout, const X* qkv, const float* lse,
                                 const float* Drow, int T, int C, int NH, bool accumulate) {
  constexpr int S = att_split(HS), D = HS / S;
  __shared__ typename cub::WarpReduce<float, S>::TempStorage temp[att_rows];
  __shared__ float Ks[att_tile][HS];
  __shared__ float Vs[att_tile][HS];

  const int row = threadIdx.x / S, part = threadIdx.x % S;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int i0 = blockIdx.x * att_rows;
  const bool valid = i0 + row < T;
  const int t = valid ? i0 + row : T - 1;
  const std::size_t C3 = 3 * static_cast<std::size_t>(C);
  const X* seq = qkv + static_cast<std::size_t>(b) * T * C3;
  const int hoff = h * HS;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));

  float q[D], g[D], dq[D];
  const X* g_src = dout + (static_cast<std::size_t>(b) * T + t) * C + hoff + part * D;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = to_f32(seq[static_cast<std::size_t>(t) * C3 + hoff + part * D + d]);
    g[d] = to_f32(g_src[d]);
    dq[d] = 0.0f;
  }
  const float lse_t = lse[static_cast<std::size_t>(bh) * T + t];
  const float D_t = Drow[static_cast<std::size_t>(bh) * T + t];

  const int kend = min(T, i0 + att_rows);
  for (int j0 = 0; j0 < kend; j0 += att_tile) {
    __syncthreads();
    stage_rows<HS>(Ks, seq + C + hoff, j0, kend, C3);
    stage_rows<HS>(Vs, seq + 2 * C + hoff, j0, kend, C3);
    __syncthreads();
    for (int c = 0; c < att_tile && j0 + c < kend; ++c) {  // uniform in the block
      const float* k = &Ks[c][part * D];
      const float* v = &Vs[c][part * D];
      float sdot = 0.0f, pdot = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        sdot += q[d] * k[d];
        pdot += g[d] * v[d];
      }
      sdot = split_sum<S>(sdot, temp[row]);
      pdot = split_sum<S>(pdot, temp[row]);
      // A select, not a product with a mask: exp of a masked score may overflow to inf.
      const float ds = j0 + c <= t ? expf(sdot * scale - lse_t) * (pdot - D_t) : 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) dq[d] += ds * k[d];
    }
  }
  if (!valid) return;
  X* dst = dqkv + (static_cast<std::size_t>(b) * T + t) * C3 + hoff + part * D;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const float val = dq[d] * scale;
    dst[d] = from_f32<X>(accumulate ? to_f32(dst[d]) + val : val);
  }
}

// dK and dV of one key row per S threads: over the queries t >= j,
// dv = sum_t P_tj dout_t, dk = scale * sum_t P_tj (dP_tj - D_t) q_t.
template <class X, int HS>
__global__ void __launch_bounds__(att_rows * att_split(HS))
    attention_backward_dkv_kernel(X* dqkv, const X* dout, const X* qkv, const float* lse,
                                  const float* Drow, int T, int C, int NH, bool accumulate) {
  constexpr int S = att_split(HS), D = HS / S;
  __shared__ typename cub::WarpReduce<float, S>::TempStorage temp[att_rows];
  __shared__ float Qs[att_tile][HS];
  __shared__ float Gs[att_tile][HS];  // dout rows
  __shared__ float Ls[att_tile], Ds[att_tile];

  const int row = threadIdx.x / S, part = threadIdx.x % S;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int j0 = blockIdx.x * att_rows;
  const bool valid = j0 + row < T;
  const int j = valid ? j0 + row : T - 1;
  const std::size_t C3 = 3 * static_cast<std::size_t>(C);
  const X* seq = qkv + static_cast<std::size_t>(b) * T * C3;
  const X* dseq = dout + static_cast<std::size_t>(b) * T * C;
  const int hoff = h * HS;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));

  float k[D], v[D], dk[D], dv[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    k[d] = to_f32(seq[static_cast<std::size_t>(j) * C3 + C + hoff + part * D + d]);
    v[d] = to_f32(seq[static_cast<std::size_t>(j) * C3 + 2 * C + hoff + part * D + d]);
    dk[d] = 0.0f;
    dv[d] = 0.0f;
  }

  // Queries before j0 see none of this block's keys.
  for (int i0 = j0; i0 < T; i0 += att_tile) {
    __syncthreads();
    stage_rows<HS>(Qs, seq + hoff, i0, T, C3);
    stage_rows<HS>(Gs, dseq + hoff, i0, T, static_cast<std::size_t>(C));
    for (int r = threadIdx.x; r < att_tile; r += blockDim.x) {
      const bool in = i0 + r < T;
      Ls[r] = in ? lse[static_cast<std::size_t>(bh) * T + i0 + r] : 0.0f;
      Ds[r] = in ? Drow[static_cast<std::size_t>(bh) * T + i0 + r] : 0.0f;
    }
    __syncthreads();
    for (int r = 0; r < att_tile && i0 + r < T; ++r) {  // uniform in the block
      const float* qr = &Qs[r][part * D];
      const float* gr = &Gs[r][part * D];
      float sdot = 0.0f, pdot = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        sdot += k[d] * qr[d];
        pdot += v[d] * gr[d];
      }
      sdot = split_sum<S>(sdot, temp[row]);
      pdot = split_sum<S>(pdot, temp[row]);
      float p = 0.0f, ds = 0.0f;
      if (i0 + r >= j) {  // query i0+r sees key j
        p = expf(sdot * scale - Ls[r]);
        ds = p * (pdot - Ds[r]);
      }
#pragma unroll
      for (int d = 0; d < D; ++d) {
        dv[d] += p * gr[d];
        dk[d] += ds * qr[d];
      }
    }
  }
  if (!valid) return;
  X* dst = dqkv + (static_cast<std::size_t>(b) * T + j) * C3 + hoff + part * D;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const float kval = dk[d] * scale, vval = dv[d];
    X* dk_dst = dst + C;
    X* dv_dst = dst + 2 * C;
    dk_dst[d] = from_f32<X>(accumulate ? to_f32(dk_dst[d]) + kval : kval);
    dv_dst[d] = from_f32<X>(accumulate ? to_f32(dv_dst[d]) + vval : vval);
  }
}

// Calls f(std::integral_constant<int, hs>{}) for the instantiated head sizes.
template <class F>
void with_head_size(int hs, const char* who, F&& f) {
  switch (hs) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default:
      throw std::invalid_argument(std::string(who) + ": head size " + std::to_string(hs) +
                                  " is not instantiated (8, 16, 32, 64 or 128)");
  }
}

inline void check_attention_shape(int B, int T, int C, int NH, const char* who) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C % NH != 0)
    throw std::invalid_argument(std::string(who) + ": B " + std::to_string(B) + ", T " +
                                std::to_string(T) + ", C " + std::to_string(C) + ", NH " +
                                std::to_string(NH) + " (all > 0, C a multiple of NH)");
  if (static_cast<long long>(B) * NH > 65535)
    throw std::invalid_argument(std::string(who) + ": B * NH = " +
                                std::to_string(static_cast<long long>(B) * NH) +
                                " exceeds the grid's y limit (65535)");
}

// Whether attention_forward / attention_backward of X take the tensor-core path for head size
// hs with these tensors: bf16, a head size attention_tc.cuh has, 16-byte aligned rows to stage
// (qkv, and dout in the backward) and 4-byte aligned bf16 pairs to store (out, dqkv), and a
// grid that fits (T / 64 query tiles on grid.y).
template <class X>
bool use_tensor_cores(int T, int hs, const void* staged, const void* staged2, const void* stored) {
  if constexpr (!std::is_same_v<X, bf16>) {
    return false;
  } else {
    const auto aligned = [](const void* p, std::uintptr_t a) {
      return reinterpret_cast<std::uintptr_t>(p) % a == 0;
    };
    return tc::supports_head_size(hs) && aligned(staged, 16) && aligned(staged2, 16) &&
           aligned(stored, 4) && (T + tc::block_rows - 1) / tc::block_rows <= 65535;
  }
}

// Calls f(std::integral_constant<int, hs>{}) for the tensor-core head sizes.
template <class F>
void with_tc_head_size(int hs, F&& f) {
  switch (hs) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default:
      throw std::logic_error("attention: no tensor-core kernel for head size " +
                             std::to_string(hs));
  }
}

}  // namespace detail

/// Whether attention_forward/_backward<X> run on tensor cores for this shape and these tensors
/// (bf16, head size 32, 64 or 128, aligned pointers); otherwise on the CUDA-core kernels.
template <class X>
bool attention_uses_tensor_cores(int T, int C, int NH, const void* qkv, const void* dout_or_qkv,
                                 const void* out_or_dqkv) {
  return NH > 0 && C % NH == 0 &&
         detail::use_tensor_cores<X>(T, C / NH, qkv, dout_or_qkv, out_or_dqkv);
}

/// out (B,T,C) = causal softmax(Q K^T / sqrt(hs)) V per head, lse (B,NH,T) fp32.
template <class X>
void attention_forward(X* out, float* lse, const X* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream) {
  detail::check_attention_shape(B, T, C, NH, "attention_forward");
  if constexpr (std::is_same_v<X, bf16>) {
    if (attention_uses_tensor_cores<X>(T, C, NH, qkv, qkv, out)) {
      detail::with_tc_head_size(C / NH, [&](auto hs) {
        detail::tc::forward<decltype(hs)::value>(out, lse, qkv, B, T, C, NH, stream);
      });
      return;
    }
  }
  detail::with_head_size(C / NH, "attention_forward", [&](auto hs) {
    constexpr int HS = decltype(hs)::value;
    const dim3 grid((T + detail::att_rows - 1) / detail::att_rows, B * NH);
    detail::attention_forward_kernel<X, HS>
        <<<grid, detail::att_rows * detail::att_split(HS), 0, stream>>>(out, lse, qkv, T, C, NH);
    check_launch("attention_forward");
  });
}

/// Floats of workspace attention_backward needs: (B, NH, T).
inline std::size_t attention_workspace_floats(int B, int T, int NH) {
  return static_cast<std::size_t>(B) * NH * T;
}

/// dqkv (B,T,3C) = (or +=) the gradient through attention, from dout (B,T,C) and the
/// forward's qkv, out and lse. workspace: attention_workspace_floats(B, T, NH) floats.
template <class X>
void attention_backward(X* dqkv, float* workspace, const X* dout, const X* qkv, const X* out,
                        const float* lse, int B, int T, int C, int NH, bool accumulate,
                        cudaStream_t stream) {
  detail::check_attention_shape(B, T, C, NH, "attention_backward");
  const std::size_t rows = attention_workspace_floats(B, T, NH);
  detail::attention_row_dot_kernel<<<blocks_for(rows, 256), 256, 0, stream>>>(workspace, dout, out,
                                                                              B, T, C, NH);
  check_launch("attention_row_dot");
  if constexpr (std::is_same_v<X, bf16>) {
    if (attention_uses_tensor_cores<X>(T, C, NH, qkv, dout, dqkv)) {
      detail::with_tc_head_size(C / NH, [&](auto hs) {
        detail::tc::backward<decltype(hs)::value>(dqkv, workspace, dout, qkv, lse, B, T, C, NH,
                                                  accumulate, stream);
      });
      return;
    }
  }
  detail::with_head_size(C / NH, "attention_backward", [&](auto hs) {
    constexpr int HS = decltype(hs)::value;
    const dim3 grid((T + detail::att_rows - 1) / detail::att_rows, B * NH);
    const unsigned threads = detail::att_rows * detail::att_split(HS);
    detail::attention_backward_dq_kernel<X, HS><<<grid, threads, 0, stream>>>(
        dqkv, dout, qkv, lse, workspace, T, C, NH, accumulate);
    check_launch("attention_backward_dq");
    detail::attention_backward_dkv_kernel<X, HS><<<grid, threads, 0, stream>>>(
        dqkv, dout, qkv, lse, workspace, T, C, NH, accumulate);
    check_launch("attention_backward_dkv");
  });
}

}  // namespace gpt::gpu
