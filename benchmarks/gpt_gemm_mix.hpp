// benchmarks/gpt_gemm_mix.hpp — the GEMMs of one mini-GPT training step, and cblas_sgemm's
// FLOP/s over that mix: the compute peer of bench_gpt and bench_train_capacity.
//
// What lives here: sgemm_mix_flops() (total FLOPs ÷ total time of a step's GEMM shapes through
// the example's gemm_parallel, best of `rounds`). What does not: the shapes themselves
// (examples/gpt/gpt_flops.hpp), the model (examples/gpt/), the ratio lines.
#pragma once

#include "bench_common.hpp"  // seconds_since

#include "gpt_flops.hpp"  // gemm_shape, step_gemms, mix_flops
#include "host/kernels.hpp"  // gemm_parallel

#include <algorithm>
#include <chrono>
#include <vector>

namespace gpt_bench {

using gpt::gemm_shape;
using gpt::mix_flops;
using gpt::step_gemms;

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
