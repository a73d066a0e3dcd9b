// examples/gpt/host/stored_matmul.hpp — the inference matmul: out = inp · W^T + bias with W
// read from a stored block in any weight format, dequantised a tile of rows at a time.
//
// What this is: the Linear layer of the decoder (decoder.hpp). W (OC, C) stays in its stored
// format (f32, bf16, f16, 4-bit groups: stored_block.hpp); each thread turns `tile` of its rows
// into floats in a small buffer of its own, which stays in cache while every input row is
// multiplied with it — the dequantisation fused with the GEMM's input, so a layer is never
// widened to f32 as a whole. f32 rows are read in place.
// Why not cblas_sgemm: every output here is one dot product in a fixed order, whatever N, the
// thread count or the tile a row falls in, so a row's result does not depend on which other
// rows share the call. That is what makes a batch block (a few micro-batches through a layer)
// and a streamed model give bitwise the tokens of the resident, unblocked run.
// What it is not: the training matmul (host/kernels.hpp, on the BLAS): that one is faster for
// big N and its rounding depends on N.
#pragma once

#include "../stored_block.hpp"

#include <algorithm>
#include <cstddef>
#include <vector>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace gpt {

/// sum_k a[k] * b[k], in one fixed order. Not inlined: every caller runs the same instructions,
/// so the order of the (vectorised) sum is the same everywhere in a program.
[[gnu::noinline]] inline float dot_fixed(const float* a, const float* b, int n) noexcept {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

/// out (N, OC) = inp (N, C) · W^T + bias (bias may be null). W is (OC, C) as stored.
[[gnu::noinline]] inline void matmul_stored_forward(float* out, const float* inp,
                                                    const weight_view& w, const float* bias,
                                                    int N, int C, int OC) {
  constexpr int tile = 16;  // rows of W dequantised at once: 16 x C floats per thread
  const int tiles = (OC + tile - 1) / tile;
  const bool in_place = w.format == weight_format::f32;
#pragma omp parallel if (double(N) * C * OC > 1e6)
  {
    // Each thread's tile buffer, kept across calls: a decode step calls this 4 times per layer.
    thread_local std::vector<float> scratch;
    if (!in_place && scratch.size() < std::size_t(tile) * std::size_t(C))
      scratch.resize(std::size_t(tile) * std::size_t(C));
#pragma omp for schedule(static)
    for (int t = 0; t < tiles; ++t) {
      const int o0 = t * tile, no = std::min(tile, OC - o0);
      const float* rows = nullptr;
      if (in_place) {
        rows = w.f32_rows(o0);
      } else {
        w.rows_to_f32(o0, no, scratch.data());
        rows = scratch.data();
      }
      for (int n = 0; n < N; ++n) {
        const float* x = inp + std::size_t(n) * C;
        float* o = out + std::size_t(n) * OC + o0;
        for (int j = 0; j < no; ++j)
          o[j] = dot_fixed(x, rows + std::size_t(j) * C, C) + (bias ? bias[o0 + j] : 0.0f);
      }
    }
  }
}

}  // namespace gpt
