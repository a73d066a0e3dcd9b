// examples/gpt/cuda/attention_tc.cuh — causal attention on tensor cores: bf16 in, fp32 sums.
//
// What this is: a FlashAttention-2 style forward and a deterministic two-kernel backward for
// bf16 activations and head sizes 32, 64 and 128, written with the warp-level tensor-core MMA
// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` (sm_80+, runs on sm_90) and `ldmatrix`
// to load its operands from shared memory. attention.cuh's attention_forward/_backward call it
// for X = bf16 when the head size and pointer alignment allow; everything else (fp32, head sizes
// 8 and 16, misaligned pointers) stays on attention.cuh's CUDA-core kernels.
// What it is not: a Hopper wgmma/TMA kernel (no async copies, no warp specialisation: it is the
// portable sm_80 design), dropout, non-causal masks, or a KV-cache decoder.
//
// The shapes are attention.cuh's: qkv (B, T, 3C) = [q | k | v], head h owning channels
// [h*HS, (h+1)*HS) of each third; out (B, T, C); lse (B, NH, T) natural-log log-sum-exp of the
// scaled scores; Drow (B, NH, T) = rowsum(dout * out); scale 1/sqrt(HS); t attends to 0..t.
//
// Work split (every kernel): a block of 4 warps owns 64 rows of "its" side (queries for the
// forward and dQ, keys for dK/dV), 16 rows per warp, and streams tiles of the other side
// through shared memory. Inside a warp, each 16-row slab times an 8-column slice is one m16n8
// accumulator: lane l holds rows g = l/4 and g+8, columns 2*(l%4) and 2*(l%4)+1 (PTX ISA,
// "Matrix Fragments for mma.m16n8k16"). That layout is also, pairwise, the A-operand layout of
// a 16x16 tile, so a score tile turns into the left operand of the next product in registers
// (P V in the forward, dS K / P^T dO / dS^T Q in the backward) with no trip through memory.
//
// Tiles and resources (sm_90, ptxas): 128 threads, 64 rows x 64 columns per tile (64 x 32 for
// dQ at HS 128 and for dK/dV at HS 64 and 128, see dq_cols / dkv_cols). Shared memory holds
// bf16 tiles only (Q, K, V, dO; no fp32 scores): at HS 64 the forward 18 KiB, dQ 36 KiB, dK/dV
// 27 KiB; at HS 128 the backward needs 51 KiB, above the default 48 KiB (set_smem opts in).
// Registers at HS 64: forward 162, dQ 166, dK/dV 164, no spills, so 3 blocks (12 warps) per
// SM (min_blocks); at HS 128 up to 255, 2 blocks. Loads are synchronous (stage, barrier,
// compute): the overlap comes from the other blocks on the SM, not from cp.async.
//
// Precision: Q K^T, dO V^T and every accumulation are fp32 from exact bf16 products; P and dS
// are rounded to bf16 before their second product (as in every FlashAttention), a relative
// 2^-9 per term; the softmax statistics (running max, sum, lse) stay fp32 throughout.
//
// Causal balance: query tile i sees i+1 key tiles, key tile j is seen by n-j query tiles.
// Blocks are launched longest first (grid.y walks the tiles from the longest down, grid.x the
// (batch, head) pairs), so the short tiles fill in behind the long ones at the tail of the grid
// instead of one long tile starting last (this leans on the block scheduler handing out blocks
// roughly in index order, which it does in practice but does not promise). Inside a tile, a
// warp whose 16 rows are all masked against the staged tile skips its products (it still
// helps stage and meets the barriers), and only tiles that cross the diagonal (or T) pay for
// the mask's compares.
//
// Determinism: no atomics. dQ is written by the block that owns the query rows (walking keys),
// dK and dV by the block that owns the key rows (walking queries): P and dP are rebuilt in
// both (7 tile products per tile pair instead of FlashAttention-2's 5 with atomic dQ), and every
// sum runs in a fixed order, so two runs are bitwise equal.
#pragma once

#include "common.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace gpt::gpu::detail::tc {

inline constexpr int warps = 4;
inline constexpr int threads = 32 * warps;
inline constexpr int block_rows = 16 * warps;  // rows of the block's own side
inline constexpr int pad = 8;                  // bf16 after each shared row (see smem_ld)
inline constexpr float log2e = 1.4426950408889634f;
inline constexpr float ln2 = 0.6931471805599453f;

/// Head sizes with a tensor-core kernel: a multiple of the 16-wide MMA k step, and small
/// enough that a warp's fp32 accumulators (16 x HS per lane group) stay in registers.
constexpr bool supports_head_size(int hs) { return hs == 32 || hs == 64 || hs == 128; }

/// Rows of the other side per shared-memory tile: 64 for the forward. The backward kernels keep
/// two 16 x HS fp32 accumulators per warp (dQ and the operands staged for it, or dK and dV)
/// next to two score tiles (S and dP), so their tiles are narrower where that keeps the
/// registers within 3 blocks per SM without spills: dQ halves at HS 128, dK/dV already at 64.
template <int HS>
inline constexpr int forward_cols = 64;
template <int HS>
inline constexpr int dq_cols = HS >= 128 ? 32 : 64;
template <int HS>
inline constexpr int dkv_cols = HS >= 64 ? 32 : 64;

/// Blocks per SM the register allocation must leave room for: 3 (12 warps, 170 registers a
/// thread) up to HS 64, where it costs no spills; at HS 128 the accumulators need more.
template <int HS>
inline constexpr int min_blocks = HS <= 64 ? 3 : 1;

/// Shared rows are HS + 8 bf16 long: 16-byte aligned (ldmatrix rows, uint4 stores) and an odd
/// multiple of 16 bytes, so the 8 row addresses of one ldmatrix phase hit 8 different 16-byte
/// bank groups (no bank conflicts).
template <int HS>
inline constexpr int smem_ld = HS + pad;

// ---------------------------------------------------------------------------------------------
// Warp-level primitives
// ---------------------------------------------------------------------------------------------

// Four 8x8 bf16 matrices from shared memory: lane l gives the address of row l%8 of matrix
// l/8; register i receives, of matrix i, row l/4, columns 2*(l%4) and +1 (low half first).
// `volatile`: the same address is read again after the tile under it has been restaged.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const bf16* row_address) {
  const auto a = static_cast<unsigned>(__cvta_generic_to_shared(row_address));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// The same, each 8x8 matrix transposed: register i receives, of matrix i, column l/4, rows
// 2*(l%4) and +1.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const bf16* row_address) {
  const auto a = static_cast<unsigned>(__cvta_generic_to_shared(row_address));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// d (16x8 fp32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column fragment).
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const std::uint32_t (&a)[4],
                                            std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  (void)d, (void)a, (void)b0, (void)b1;
  __trap();  // bf16 mma.sync needs sm_80; the build targets sm_90
#endif
}

// Two floats as one bf16x2 register, `lo` in the low half (the lower column of a fragment).
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}

// Operand fragments, for a warp, out of a row-major shared array with leading dimension LD.
// A (16x16) at rows r0.., columns c0..: matrices (r0, c0), (r0+8, c0), (r0, c0+8), (r0+8, c0+8)
// are exactly a0..a3.
template <int LD>
__device__ __forceinline__ void load_a(std::uint32_t (&a)[4], const bf16* s, int r0, int c0,
                                       int lane) {
  ldmatrix_x4(a, s + (r0 + (lane & 15)) * LD + c0 + (lane >> 4) * 8);
}

// B = M^T for two adjacent 8-column slices, where M is stored row-major with the B columns as
// its rows (K for Q K^T, V for dO V^T, Q and dO for the transposed scores): rows n0.. of M,
// columns k0... Registers: {b0, b1} of columns n0..n0+7, then {b0, b1} of n0+8..n0+15.
template <int LD>
__device__ __forceinline__ void load_b_rows(std::uint32_t (&b)[4], const bf16* s, int n0, int k0,
                                            int lane) {
  ldmatrix_x4(b, s + (n0 + (lane & 7) + ((lane >> 4) << 3)) * LD + k0 + ((lane >> 3) & 1) * 8);
}

// B = M itself for two adjacent 8-column slices, M row-major with the k index as its rows
// (V for P V, K for dS K, dO for P^T dO, Q for dS^T Q): rows k0..k0+15, columns n0..n0+15,
// through the transposing load. Registers as load_b_rows.
template <int LD>
__device__ __forceinline__ void load_b_cols(std::uint32_t (&b)[4], const bf16* s, int k0, int n0,
                                            int lane) {
  ldmatrix_x4_trans(b, s + (k0 + (lane & 15)) * LD + n0 + (lane >> 4) * 8);
}

// acc (16 x 8*N fp32) += A (16 x 16*KS, rows r0.. of `as`) * M^T (M = rows n0.. of `ms`, 8*N of
// them): the score-shaped products Q K^T, dO V^T, K Q^T, V dO^T.
template <int KS, int N, int LD>
__device__ __forceinline__ void mma_a_bt(float (&acc)[N][4], const bf16* as, int r0,
                                         const bf16* ms, int lane) {
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    std::uint32_t a[4];
    load_a<LD>(a, as, r0, ks * 16, lane);
#pragma unroll
    for (int n2 = 0; n2 < N / 2; ++n2) {
      std::uint32_t b[4];
      load_b_rows<LD>(b, ms, n2 * 16, ks * 16, lane);
      mma_16x8x16(acc[2 * n2], a, b[0], b[1]);
      mma_16x8x16(acc[2 * n2 + 1], a, b[2], b[3]);
    }
  }
}

// acc (16 x HS fp32) += P (16 x 8*N, in accumulator layout, rounded to bf16 here) * M (rows of
// `ms` = the 8*N columns of P, HS columns): P V, dS K, P^T dO, dS^T Q. Accumulator slices 2kk
// and 2kk+1 of P are, register for register, the A fragment of its 16-column slice kk.
template <int N, int HS, int LD>
__device__ __forceinline__ void mma_p_m(float (&acc)[HS / 8][4], const float (&p)[N][4],
                                        const bf16* ms, int lane) {
#pragma unroll
  for (int kk = 0; kk < N / 2; ++kk) {
    const std::uint32_t a[4] = {
        pack_bf16x2(p[2 * kk][0], p[2 * kk][1]), pack_bf16x2(p[2 * kk][2], p[2 * kk][3]),
        pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
        pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int n2 = 0; n2 < HS / 16; ++n2) {
      std::uint32_t b[4];
      load_b_cols<LD>(b, ms, kk * 16, n2 * 16, lane);
      mma_16x8x16(acc[2 * n2], a, b[0], b[1]);
      mma_16x8x16(acc[2 * n2 + 1], a, b[2], b[3]);
    }
  }
}

// The max (or sum) of v over the 4 lanes that share an accumulator row.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// The causal mask on a warp's (16 x 8N) tile: elements whose (query, key) pair is not visible
// (key after query, or query at or past query_end) become `fill`. Called only on the tiles that
// cross the diagonal or T (`edge` at the call sites, warp-uniform): the others skip the compares.
// RowsAreQueries: rows are queries (the lane's first at row_a) and columns keys (from col0);
// otherwise rows are keys and columns queries.
template <bool RowsAreQueries, int N>
__device__ __forceinline__ void mask_invisible(float (&x)[N][4], int row_a, int col0,
                                               int query_end, int lane, float fill) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row_a + 8 * (e >> 1), col = col0 + n * 8 + 2 * (lane & 3) + (e & 1);
      const int query = RowsAreQueries ? row : col, key = RowsAreQueries ? col : row;
      if (key > query || query >= query_end) x[n][e] = fill;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Block-level staging
// ---------------------------------------------------------------------------------------------

// Rows r0 .. r0+ROWS-1 of an (rows, stride) bf16 matrix's HS-wide slice `src` into dst
// (ROWS, smem_ld<HS>), 16 bytes per load; rows at or past `rend` become zeros, so a partial
// tile multiplies as if padded and never reads past the tensor.
template <int HS, int ROWS>
__device__ __forceinline__ void stage_rows(bf16* dst, const bf16* src, int r0, int rend,
                                           std::size_t stride) {
  constexpr int chunks = HS / 8;  // uint4 per row
  for (int i = threadIdx.x; i < ROWS * chunks; i += threads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r0 + r < rend)
      v = *reinterpret_cast<const uint4*>(src + static_cast<std::size_t>(r0 + r) * stride + c);
    *reinterpret_cast<uint4*>(dst + r * smem_ld<HS> + c) = v;
  }
}

// ROWS per-row floats (lse or Drow of rows r0..) into shared memory, times `mul`, 0 past rend.
template <int ROWS>
__device__ __forceinline__ void stage_row_stats(float* dst, const float* src, int r0, int rend,
                                                float mul) {
  for (int r = threadIdx.x; r < ROWS; r += threads)
    dst[r] = r0 + r < rend ? src[r0 + r] * mul : 0.0f;
}

// Rows row_a = r0 + g and row_b = r0 + g + 8 of a 16 x HS accumulator, times `mul`, as bf16
// pairs into dst rows (row stride `stride`), = or += what is there; rows at or past T skipped.
template <int HS>
__device__ __forceinline__ void store_rows(bf16* dst, std::size_t stride,
                                           const float (&acc)[HS / 8][4], int row_a, int T,
                                           int lane, const float (&mul)[2], bool accumulate) {
  const int c = 2 * (lane & 3);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_a + 8 * half;
    if (row >= T) continue;
    bf16* d = dst + static_cast<std::size_t>(row) * stride + c;
#pragma unroll
    for (int n = 0; n < HS / 8; ++n) {
      float x = acc[n][2 * half] * mul[half], y = acc[n][2 * half + 1] * mul[half];
      auto* p = reinterpret_cast<__nv_bfloat162*>(d + n * 8);
      if (accumulate) {
        const float2 old = __bfloat1622float2(*p);
        x += old.x, y += old.y;
      }
      *p = __floats2bfloat162_rn(x, y);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels. Grid (B*NH, tiles): blockIdx.x the (batch, head) pair, blockIdx.y the tile, longest
// first. Block `threads`; dynamic shared memory as each kernel's *_smem_bytes says.
// ---------------------------------------------------------------------------------------------

template <int HS>
constexpr std::size_t forward_smem_bytes() {  // Ks and Vs (64, LD); Q passes through Ks
  static_assert(forward_cols<HS> == block_rows, "Q is staged through the K tile");
  return 2 * sizeof(bf16) * forward_cols<HS> * smem_ld<HS>;
}

// out (B, T, C), lse (B, NH, T) from qkv (B, T, 3C). Per warp: 16 query rows, the online softmax
// state of each row in the 4 lanes of its quad (m and l per lane-row, l partial per lane until
// the end), the output as HS/8 accumulators.
template <int HS>
__global__ void __launch_bounds__(threads, min_blocks<HS>)
    forward_kernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH) {
  constexpr int BC = forward_cols<HS>, LD = smem_ld<HS>, KS = HS / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);  // (BC, LD)
  bf16* Vs = Ks + BC * LD;                    // (BC, LD)

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int i0 = (gridDim.y - 1 - blockIdx.y) * block_rows;  // longest (last) query tile first
  const int w0 = i0 + 16 * warp;                              // the warp's first query row
  const int row_a = w0 + lane / 4;                            // and the lane's two: row_a, +8
  const std::size_t C3 = 3 * static_cast<std::size_t>(C);
  const bf16* seq = qkv + static_cast<std::size_t>(b) * T * C3 + h * HS;  // q; k at +C, v +2C
  // Scores in log2 units: exp2(s * scale * log2e - m) = exp(s * scale - m ln 2).
  const float scale_log2 = (1.0f / sqrtf(static_cast<float>(HS))) * log2e;

  // Q (64, HS) through the K buffer into registers: KS A fragments per warp, kept all along.
  stage_rows<HS, block_rows>(Ks, seq, i0, T, C3);
  __syncthreads();
  std::uint32_t q[KS][4];
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) load_a<LD>(q[ks], Ks, 16 * warp, ks * 16, lane);

  float o[HS / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int kend = min(T, i0 + block_rows);  // the block's last row sees keys 0 .. kend-1
  for (int j0 = 0; j0 < kend; j0 += BC) {
    __syncthreads();  // the Q fragments (first pass) or the previous tile have been read
    stage_rows<HS, BC>(Ks, seq + C, j0, kend, C3);
    stage_rows<HS, BC>(Vs, seq + 2 * C, j0, kend, C3);
    __syncthreads();
    if (j0 > w0 + 15) continue;  // warp-uniform: every key of the tile is after every row

    float s[BC / 8][4] = {};  // (16, BC) scores of the warp's rows
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
      for (int n2 = 0; n2 < BC / 16; ++n2) {
        std::uint32_t kb[4];
        load_b_rows<LD>(kb, Ks, n2 * 16, ks * 16, lane);
        mma_16x8x16(s[2 * n2], q[ks], kb[0], kb[1]);
        mma_16x8x16(s[2 * n2 + 1], q[ks], kb[2], kb[3]);
      }
    }
    // Scores in log2 units, -inf for keys after the row where the tile crosses the diagonal
    // (which also covers keys at or past T for rows below T). Rows at or past T are not masked
    // (query_end INT_MAX): computed on zero Q rows and never stored, and so never a row of
    // -inf only, whose max would be -inf and its exponentials NaN.
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] *= scale_log2;
    }
    if (j0 + BC - 1 > w0) mask_invisible<true>(s, row_a, j0, INT_MAX, lane, -INFINITY);
    // The online softmax. The new max is finite: key 0 is in the first tile every warp runs,
    // and the diagonal tile gives each row its own key; on the first tile m = -inf and the
    // correction exp2(-inf) = 0 rescales the zeros o and l already are.
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      corr[r] = exp2f(m[r] - mx[r]);
      m[r] = mx[r];
      l[r] *= corr[r];  // l stays a per-lane partial sum: the quad shares corr, summed at the end
    }
#pragma unroll
    for (int n = 0; n < HS / 8; ++n) {
      o[n][0] *= corr[0], o[n][1] *= corr[0];
      o[n][2] *= corr[1], o[n][3] *= corr[1];
    }
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m[e >> 1]);  // 0 where masked
        l[e >> 1] += s[n][e];
      }
    }
    mma_p_m<BC / 8, HS, LD>(o, s, Vs, lane);  // o += P V
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.0f / l[r];
  }
  store_rows<HS>(out + static_cast<std::size_t>(b) * T * C + h * HS, static_cast<std::size_t>(C), o,
                 row_a, T, lane, inv, false);
  if ((lane & 3) == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row_a + 8 * r;
      if (row < T) lse[static_cast<std::size_t>(bh) * T + row] = (m[r] + log2f(l[r])) * ln2;
    }
  }
}

template <int HS>
constexpr std::size_t backward_dq_smem_bytes() {  // Qs, Gs (64, LD); Ks, Vs (BK, LD)
  return sizeof(bf16) * (2 * block_rows + 2 * dq_cols<HS>) * smem_ld<HS>;
}

// dQ rows (the first third of dqkv (B, T, 3C)) of the block's 64 queries, walking keys 0 ..
// the diagonal: dS = P o (dP - D), P = exp(S - lse), dP = dO V^T; dQ = scale * dS K.
template <int HS>
__global__ void __launch_bounds__(threads, min_blocks<HS>)
    backward_dq_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                       const float* Drow, int T, int C, int NH, bool accumulate) {
  constexpr int BK = dq_cols<HS>, LD = smem_ld<HS>, KS = HS / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // (64, LD) the block's queries
  bf16* Gs = Qs + block_rows * LD;            // (64, LD) their dout rows
  bf16* Ks = Gs + block_rows * LD;            // (BK, LD)
  bf16* Vs = Ks + BK * LD;                    // (BK, LD)

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int i0 = (gridDim.y - 1 - blockIdx.y) * block_rows;  // longest first
  const int w0 = i0 + 16 * warp, row_a = w0 + lane / 4;
  const std::size_t C3 = 3 * static_cast<std::size_t>(C);
  const bf16* seq = qkv + static_cast<std::size_t>(b) * T * C3 + h * HS;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS)), scale_log2 = scale * log2e;

  stage_rows<HS, block_rows>(Qs, seq, i0, T, C3);
  stage_rows<HS, block_rows>(Gs, dout + static_cast<std::size_t>(b) * T * C + h * HS, i0, T,
                             static_cast<std::size_t>(C));
  float lse2[2], Dr[2];  // the lane's two rows: lse in log2 units, D
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    lse2[r] = row < T ? lse[static_cast<std::size_t>(bh) * T + row] * log2e : 0.0f;
    Dr[r] = row < T ? Drow[static_cast<std::size_t>(bh) * T + row] : 0.0f;
  }

  float dq[HS / 8][4] = {};
  const int kend = min(T, i0 + block_rows);
  for (int j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads();  // the previous K, V tile has been read
    stage_rows<HS, BK>(Ks, seq + C, j0, kend, C3);
    stage_rows<HS, BK>(Vs, seq + 2 * C, j0, kend, C3);
    __syncthreads();  // (the first pass: Qs and Gs too)
    if (j0 > w0 + 15) continue;  // warp-uniform: all keys after all of the warp's rows

    float s[BK / 8][4] = {}, dp[BK / 8][4] = {};  // (16, BK) each
    mma_a_bt<KS, BK / 8, LD>(s, Qs, 16 * warp, Ks, lane);   // S = Q K^T
    mma_a_bt<KS, BK / 8, LD>(dp, Gs, 16 * warp, Vs, lane);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = exp2f(s[n][e] * scale_log2 - lse2[e >> 1]);  // P
    }
    // Masked by a select, not a product: exp2 of a masked score may have overflowed to inf.
    if (j0 + BK - 1 > w0 || w0 + 15 >= T) mask_invisible<true>(s, row_a, j0, T, lane, 0.0f);
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] *= dp[n][e] - Dr[e >> 1];  // dS
    }
    mma_p_m<BK / 8, HS, LD>(dq, s, Ks, lane);  // dQ += dS K
  }
  const float mul[2] = {scale, scale};
  store_rows<HS>(dqkv + static_cast<std::size_t>(b) * T * C3 + h * HS, C3, dq, row_a, T, lane, mul,
                 accumulate);
}

template <int HS>
constexpr std::size_t backward_dkv_smem_bytes() {  // Ks, Vs (64, LD); Qs, Gs (BQ, LD); 2 x BQ
  return sizeof(bf16) * (2 * block_rows + 2 * dkv_cols<HS>) * smem_ld<HS> +
         sizeof(float) * 2 * dkv_cols<HS>;
}

// dK and dV rows (second and third thirds of dqkv) of the block's 64 keys, walking the queries
// from the diagonal to T in the transposed orientation (rows = keys): S^T = K Q^T,
// dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T o (dP^T - D); dV = P^T dO, dK = scale dS^T Q.
template <int HS>
__global__ void __launch_bounds__(threads, min_blocks<HS>)
    backward_dkv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                        const float* Drow, int T, int C, int NH, bool accumulate) {
  constexpr int BQ = dkv_cols<HS>, LD = smem_ld<HS>, KS = HS / 16;
  static_assert(block_rows % BQ == 0, "query tiles start on the key block's first row");
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);  // (64, LD) the block's keys
  bf16* Vs = Ks + block_rows * LD;            // (64, LD) their values
  bf16* Qs = Vs + block_rows * LD;            // (BQ, LD)
  bf16* Gs = Qs + BQ * LD;                    // (BQ, LD) dout rows
  float* Ls = reinterpret_cast<float*>(Gs + BQ * LD);  // (BQ) lse, log2 units
  float* Ds = Ls + BQ;                                  // (BQ) Drow

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int j0 = blockIdx.y * block_rows;  // longest first: key tile 0 is seen by every query
  const int w0 = j0 + 16 * warp, key_a = w0 + lane / 4;  // the warp's keys, the lane's two
  const std::size_t C3 = 3 * static_cast<std::size_t>(C);
  const bf16* seq = qkv + static_cast<std::size_t>(b) * T * C3 + h * HS;
  const bf16* dseq = dout + static_cast<std::size_t>(b) * T * C + h * HS;
  const float* lse_bh = lse + static_cast<std::size_t>(bh) * T;
  const float* D_bh = Drow + static_cast<std::size_t>(bh) * T;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS)), scale_log2 = scale * log2e;

  stage_rows<HS, block_rows>(Ks, seq + C, j0, T, C3);
  stage_rows<HS, block_rows>(Vs, seq + 2 * C, j0, T, C3);

  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  for (int i0 = j0; i0 < T; i0 += BQ) {  // queries before j0 see none of the block's keys
    __syncthreads();  // the previous Q, dO tile has been read
    stage_rows<HS, BQ>(Qs, seq, i0, T, C3);
    stage_rows<HS, BQ>(Gs, dseq, i0, T, static_cast<std::size_t>(C));
    stage_row_stats<BQ>(Ls, lse_bh, i0, T, log2e);
    stage_row_stats<BQ>(Ds, D_bh, i0, T, 1.0f);
    __syncthreads();  // (the first pass: Ks and Vs too)
    if (i0 + BQ - 1 < w0) continue;  // warp-uniform: all queries before all of the warp's keys

    float st[BQ / 8][4] = {}, dpt[BQ / 8][4] = {};  // (16 keys, BQ queries) each
    mma_a_bt<KS, BQ / 8, LD>(st, Ks, 16 * warp, Qs, lane);   // S^T = K Q^T
    mma_a_bt<KS, BQ / 8, LD>(dpt, Vs, 16 * warp, Gs, lane);  // dP^T = V dO^T
    // The mask only where some query is before some key of the warp, or at or past T (zero
    // rows in Qs, but their P would be exp(0 - 0) = 1); by a select, not a product: a masked
    // exp2 may have overflowed to inf.
    const bool edge = i0 < w0 + 15 || i0 + BQ > T;  // warp-uniform
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + 2 * (lane & 3) + (e & 1);  // query i0 + c
        const int key = key_a + 8 * (e >> 1);
        float p = exp2f(st[n][e] * scale_log2 - Ls[c]);
        if (edge && (key > i0 + c || i0 + c >= T)) p = 0.0f;
        st[n][e] = p;                         // P^T
        dpt[n][e] = p * (dpt[n][e] - Ds[c]);  // dS^T
      }
    }
    mma_p_m<BQ / 8, HS, LD>(dv, st, Gs, lane);   // dV += P^T dO
    mma_p_m<BQ / 8, HS, LD>(dk, dpt, Qs, lane);  // dK += dS^T Q
  }
  bf16* dst = dqkv + static_cast<std::size_t>(b) * T * C3 + h * HS;
  const float kmul[2] = {scale, scale}, vmul[2] = {1.0f, 1.0f};
  store_rows<HS>(dst + C, C3, dk, key_a, T, lane, kmul, accumulate);
  store_rows<HS>(dst + 2 * C, C3, dv, key_a, T, lane, vmul, accumulate);
}

// ---------------------------------------------------------------------------------------------
// Launchers (attention.cuh validates the shapes and picks this path)
// ---------------------------------------------------------------------------------------------

// Opts a kernel into more than the default 48 KiB of dynamic shared memory where it needs it.
template <class Kernel>
void set_smem(Kernel kernel, std::size_t bytes, const char* who) {
  if (bytes > 48 * 1024)
    strata::check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)),
                       std::string(who) + ": dynamic shared memory of " + std::to_string(bytes) +
                           " bytes");
}

inline dim3 grid_of(int B, int T, int NH) {
  return dim3(static_cast<unsigned>(B) * static_cast<unsigned>(NH),
              static_cast<unsigned>((T + block_rows - 1) / block_rows));
}

template <int HS>
void forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
             cudaStream_t stream) {
  constexpr std::size_t smem = forward_smem_bytes<HS>();
  set_smem(forward_kernel<HS>, smem, "attention_forward (tensor cores)");
  forward_kernel<HS><<<grid_of(B, T, NH), threads, smem, stream>>>(out, lse, qkv, T, C, NH);
  check_launch("attention_forward (tensor cores)");
}

// Drow must already hold rowsum(dout * out) (attention.cuh's row-dot kernel).
template <int HS>
void backward(bf16* dqkv, const float* Drow, const bf16* dout, const bf16* qkv, const float* lse,
              int B, int T, int C, int NH, bool accumulate, cudaStream_t stream) {
  constexpr std::size_t dq_smem = backward_dq_smem_bytes<HS>();
  constexpr std::size_t dkv_smem = backward_dkv_smem_bytes<HS>();
  set_smem(backward_dq_kernel<HS>, dq_smem, "attention_backward dQ (tensor cores)");
  set_smem(backward_dkv_kernel<HS>, dkv_smem, "attention_backward dK/dV (tensor cores)");
  const dim3 grid = grid_of(B, T, NH);
  backward_dq_kernel<HS><<<grid, threads, dq_smem, stream>>>(dqkv, dout, qkv, lse, Drow, T, C,
                                                             NH, accumulate);
  check_launch("attention_backward dQ (tensor cores)");
  backward_dkv_kernel<HS><<<grid, threads, dkv_smem, stream>>>(dqkv, dout, qkv, lse, Drow, T, C,
                                                               NH, accumulate);
  check_launch("attention_backward dK/dV (tensor cores)");
}

}  // namespace gpt::gpu::detail::tc
