// benchmarks/gpt_gemm_mix.hpp — the GEMMs of one mini-GPT training step, and cblas_sgemm's
// FLOP/s over that mix: the compute peer of bench_gpt and bench_train_capacity.
//
// What lives here: gemm_shape, step_gemms() (every GEMM of a training step with per-block
// activation checkpointing: the forward twice, then dinp and dweight; and the head's three) and
// sgemm_mix_flops() (total FLOPs ÷ total time of those shapes through the example's
// gemm_parallel, best of `rounds`). What does not: the model (examples/gpt/), the ratio lines.
#pragma once

#include "bench_common.hpp"  // seconds_since

#include "gpt_config.hpp"
#include "host/kernels.hpp"  // gemm_parallel

#include <algorithm>
#include <chrono>
#include <vector>

namespace gpt_bench {

// One GEMM shape of the training step: C (M,N) = A (M,K) B (K,N), with A/B transposed as the
// model calls it, `count` times per step.
struct gemm_shape {
  bool ta, tb;
  int m, n, k;
  int count;
};

// Every GEMM of one training step of one block (forward twice: forward + recompute; backward:
// dinp and dweight) and of the head, N = B*T rows.
inline std::vector<gemm_shape> step_gemms(const gpt::gpt_config& c, int N) {
  const int C = c.width, L = c.layers, V = c.vocab;
  std::vector<gemm_shape> s;
  for (int oc_in : {0, 1, 2, 3}) {
    const int oc = oc_in == 0 ? 3 * C : oc_in == 1 ? C : oc_in == 2 ? 4 * C : C;
    const int in = oc_in == 3 ? 4 * C : C;
    s.push_back({false, true, N, oc, in, 2 * L});   // forward (+ recompute): inp · W^T
    s.push_back({false, false, N, in, oc, L});      // dinp = dout · W
    s.push_back({true, false, oc, in, N, L});       // dW = dout^T · inp
  }
  s.push_back({false, true, N, V, C, 1});  // head: logits
  s.push_back({false, false, N, C, V, 1});
  s.push_back({true, false, V, C, N, 1});
  return s;
}

/// FLOPs of the mix: 2mnk per GEMM, `count` times each.
inline double mix_flops(const std::vector<gemm_shape>& shapes) {
  double flops = 0;
  for (auto& g : shapes) flops += 2.0 * g.m * g.n * g.k * g.count;
  return flops;
}

// sgemm's FLOP/s over the step's GEMM mix: total flops ÷ total time, best of `rounds`.
inline double sgemm_mix_flops(const std::vector<gemm_shape>& shapes, int rounds = 5) {
  const double flops = mix_flops(shapes);
  std::vector<double> times;
  for (int round = 0; round < rounds; ++round) {
    double t = 0;
    for (auto& g : shapes) {
      std::vector<float> a(std::size_t(g.m) * g.k, 0.01f), b(std::size_t(g.k) * g.n, 0.02f),
          c(std::size_t(g.m) * g.n);
      const int lda = g.ta ? g.m : g.k, ldb = g.tb ? g.k : g.n;
      gpt::gemm_parallel(g.ta, g.tb, g.m, g.n, g.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f,
                         c.data(), g.n);  // warm
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < g.count; ++r)
        gpt::gemm_parallel(g.ta, g.tb, g.m, g.n, g.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f,
                           c.data(), g.n);
      t += bench_support::seconds_since(t0);
    }
    times.push_back(t);
  }
  return flops / *std::min_element(times.begin(), times.end());
}

}  // namespace gpt_bench
