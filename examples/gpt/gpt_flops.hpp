// examples/gpt/gpt_flops.hpp — the GEMMs of one mini-GPT training step, counted once.
//
// What this is: gemm_shape and step_gemms(), every GEMM of a training step (with per-block
// activation checkpointing the forward twice, else once; then dinp and dweight; and the head's
// three),
// block_gemms() the forward GEMMs of one block, and mix_flops(). The benchmarks (bench_gpt,
// bench_train_capacity: sgemm over the same mix) and the planner (gpt_plan.hpp: each layer's
// compute time from the calibrated GEMM rates) read the step from here.
// What it is not: a GEMM (host/kernels.hpp), the timing of one (benchmarks/gpt_gemm_mix.hpp).
#pragma once

#include "gpt_config.hpp"

#include <vector>

namespace gpt {

// One GEMM shape of the training step: C (M,N) = A (M,K) B (K,N), with A/B transposed as the
// model calls it, `count` times per step.
struct gemm_shape {
  bool ta, tb;
  int m, n, k;
  int count;
};

// The forward GEMMs of one block over N = B*T rows: qkv, the attention's output projection,
// the MLP's two (inp (N, in) · W^T, W (out, in)).
inline std::vector<gemm_shape> block_gemms(const gpt_config& c, int N) {
  const int C = c.width;
  return {{false, true, N, 3 * C, C, 1},
          {false, true, N, C, C, 1},
          {false, true, N, 4 * C, C, 1},
          {false, true, N, C, 4 * C, 1}};
}

// Every GEMM of one training step of the model (forward, and with `recompute` — activation
// checkpointing, train_config::recompute — the forward again in the backward; backward:
// dinp = dout · W and dW = dout^T · inp), and of the head.
inline std::vector<gemm_shape> step_gemms(const gpt_config& c, int N, bool recompute = true) {
  const int L = c.layers, V = c.vocab, C = c.width;
  std::vector<gemm_shape> s;
  for (const gemm_shape& f : block_gemms(c, N)) {
    const int out = f.n, in = f.k;
    s.push_back({false, true, N, out, in, (recompute ? 2 : 1) * L});  // forward: inp · W^T
    s.push_back({false, false, N, in, out, L});     // dinp = dout · W
    s.push_back({true, false, out, in, N, L});      // dW = dout^T · inp
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

}  // namespace gpt
