// examples/gpt/gpt_plan.hpp — the planner (strata/plan/) applied to the mini-GPT.
//
// What this is: the GPT's side of a prediction. layer_costs() turns a shape, a batch and a
// calibration into the executor's layers with their compute seconds (GEMMs at the calibrated
// rate of their shape, the tiled attention at the rate of its tile GEMMs, the elementwise
// passes at the triad bandwidth); train_policy names gpt_train's policies and schedule_for()
// the executor's schedule each one runs; memory_plan_for() is the trainer's own plan for a
// policy (trainer::plan_for with a comm::planned rank: the bytes the run will check, exactly);
// gemm_probe_seconds() times one GEMM shape through the example's kernel, for calibrate().
// What it is not: the time model (strata/plan/train_time.hpp), the command line (plan.cpp).
//
// The compute model, per block of N = B*T rows (C width, T tokens, NH heads, hs = C / NH):
//   forward   the four GEMMs of gpt_flops.hpp's block_gemms; causal attention, 2*B*T^2*C FLOP
//             (QK^T and PV over the lower triangle) at the rate of a (64, 64, hs) tile GEMM;
//             elementwise passes (layernorms, GELU, residuals, biases, softmax) of about
//             elementwise_bytes_per_value x N x C bytes at the triad rate.
//   backward  with the block's activations recomputed (the trainer checkpoints per block,
//             unless train_config::recompute is off): the forward once more; then dinp
//             (N, in, out) and dW (out, in, N) of each GEMM at the rates of those shapes,
//             attention x 2.5, elementwise x 2.
//   head      logits (N, V) = x (N, C) wte^T forward, its two backward GEMMs and the softmax
//             with cross-entropy, after the last block (forward) and before it (backward).
// Ranks of one process (gpt_train --ranks R on thread ranks) share the machine's cores: each
// rank's GEMMs run at the calibrated rate / local_ranks.
#pragma once

#include "gpt_flops.hpp"
#include "host/kernels.hpp"
#include "decoder.hpp"  // kv_floats_per_layer
#include "host/stored_matmul.hpp"
#include "stored_block.hpp"
#include "streamed_model.hpp"  // weight_home, kv_home
#include "trainer.hpp"

#include <strata/comm/planned.hpp>
#include <strata/plan/calibration.hpp>
#include <strata/plan/infer_time.hpp>
#include <strata/plan/train_time.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <tuple>
#include <string>
#include <vector>

namespace gpt {

/// Bytes of elementwise traffic per activation value of a block's forward (see the top): two
/// layernorms (read x, write y: 2 x 2 x 4), GELU over 4C (2 x 4 x 4), two residual adds
/// (3 x 4 each), the biases and the attention's softmax bookkeeping (about 8).
inline constexpr double elementwise_bytes_per_value = 16 + 32 + 24 + 8;

/// The executor's layers (embed, h.0 .. h.L-1) with one micro-batch's compute seconds.
inline std::vector<strata::plan::layer_cost> layer_costs(const gpt_config& cfg, int B, int T,
                                                         const strata::plan::calibration& c,
                                                         int local_ranks = 1,
                                                         bool recompute = true) {
  const int N = B * T, C = cfg.width, V = cfg.vocab, hs = cfg.head_size();
  const double share = std::max(local_ranks, 1);
  auto gemm_s = [&](int m, int n, int k) { return 2.0 * m * n * k / (c.gemm_rate(m, n, k) / share); };
  auto bytes_s = [&](double bytes) { return bytes / (c.triad_bytes_s / share); };
  double gemm_fwd = 0, gemm_bwd = 0;
  for (const gemm_shape& g : block_gemms(cfg, N)) {
    gemm_fwd += gemm_s(g.m, g.n, g.k);
    gemm_bwd += gemm_s(g.m, g.k, g.n) + gemm_s(g.n, g.k, g.m);  // dinp = dout W, dW = dout^T inp
  }
  const double attn_fwd = 2.0 * B * double(T) * T * C / (c.gemm_rate(64, 64, hs) / share);
  const double elem_fwd = bytes_s(elementwise_bytes_per_value * N * C);
  const double block_fwd = gemm_fwd + attn_fwd + elem_fwd;
  const double block_bwd =
      (recompute ? block_fwd : 0.0) + gemm_bwd + 2.5 * attn_fwd + 2 * elem_fwd;
  const double head_fwd = gemm_s(N, V, C) + bytes_s(16.0 * N * V);
  const double head_bwd = gemm_s(N, C, V) + gemm_s(V, C, N) + bytes_s(12.0 * N * V);
  const double embed = bytes_s(12.0 * N * C);  // the encoder: token + position rows
  std::vector<strata::plan::layer_cost> out;
  out.push_back({embed_numel(cfg), embed, embed});
  for (int l = 0; l < cfg.layers; ++l) out.push_back({block_numel(cfg), block_fwd, block_bwd});
  out.back().forward_s += head_fwd;   // the head runs after the last block ...
  out.back().backward_s += head_bwd;  // ... and its backward before that block's
  return out;
}

/// gpt_train's --policy values (nvme_bf16: --policy nvme --bf16).
enum class train_policy { resident, host, nvme, nvme_bf16 };
inline const char* policy_name(train_policy p) {
  switch (p) {
  case train_policy::resident: return "resident";
  case train_policy::host: return "host";
  case train_policy::nvme: return "nvme";
  case train_policy::nvme_bf16: return "nvme-bf16";
  }
  return "?";
}
inline train_policy parse_policy(const std::string& s) {
  for (train_policy p : {train_policy::resident, train_policy::host, train_policy::nvme,
                         train_policy::nvme_bf16})
    if (s == policy_name(p)) return p;
  throw std::invalid_argument("policy is resident, host, nvme or nvme-bf16, got '" + s + "'");
}

/// The executor's schedule under policy p (the trainer's lookahead<2>, its deferred step and
/// watched norm); with the run's context, an NVMe policy's requests as its store makes them.
inline strata::plan::train_schedule schedule_for(train_policy p, const train_config& tc,
                                                 int ranks, strata::context* ctx = nullptr) {
  strata::plan::train_schedule s;
  s.stage = p == train_policy::resident ? 0 : 3;
  s.home = p == train_policy::resident ? strata::plan::state_home::compute
           : p == train_policy::host   ? strata::plan::state_home::host
                                       : strata::plan::state_home::nvme;
  s.world = ranks;
  s.depth = 2;
  s.working_bytes = p == train_policy::nvme_bf16 ? 2 : 4;
  s.deferred = tc.overlap_step;
  s.watched = true;
  s.accum = tc.accum;
  s.gpu = strata::cuda_enabled;
  s.sub_group = tc.adam_sub_group;
  if (ctx && s.home == strata::plan::state_home::nvme) {
    s.nvme_align = ctx->nvme().transfer_alignment();
    s.checksum_block = ctx->nvme().checksum_block();
  }
  return s;
}

/// The context gpt_train makes for rank `rank` (one place, so that a plan made here is the
/// plan the run checks).
inline strata::context_config train_context_config(double device_mib, double pinned_mib,
                                                   const std::string& nvme_dir, int rank) {
  strata::context_config cc;
  cc.device_bytes = device_mib > 0 ? static_cast<std::size_t>(device_mib * 1024 * 1024)
                                   : std::size_t{1} << 40;
  cc.pinned_bytes = static_cast<std::size_t>(pinned_mib * 1024 * 1024);
  cc.staging_slot_bytes = std::size_t{1} << 20;
  cc.staging_slots = 4;
  cc.rank = rank;
  cc.nvme_directory = nvme_dir;
  return cc;
}

/// Rank `rank` of `ranks`: the memory plan trainer(ctx, comm, tc, ...) checks under policy p,
/// made by the trainer itself without allocating (the planner never estimates memory twice).
inline strata::memory_plan memory_plan_for(train_policy p, strata::context& ctx,
                                           const train_config& tc, int ranks, int rank = 0) {
  strata::comm::planned comm(rank, ranks);
  switch (p) {
  case train_policy::resident:
    return trainer<strata::comm::planned, strata::zero0>::plan_for(ctx, comm, tc);
  case train_policy::host:
    return trainer<strata::comm::planned, strata::zero3_offload>::plan_for(ctx, comm, tc);
  case train_policy::nvme:
    return trainer<strata::comm::planned, strata::zero3_infinity>::plan_for(ctx, comm, tc);
  case train_policy::nvme_bf16:
    return trainer<strata::comm::planned, strata::zero3_infinity_bf16>::plan_for(ctx, comm, tc);
  }
  throw std::invalid_argument("memory_plan_for: unknown policy");
}

/// FLOP/s of one GEMM shape through the example's kernel (gemm_parallel): the calibration's
/// probe. One untimed call, then repetitions until `min_seconds` have passed (at least one);
/// the median.
inline double gemm_probe_flops(int m, int n, int k, double min_seconds = 0.05) {
  std::vector<float> a(std::size_t(m) * k, 0.01f), b(std::size_t(k) * n, 0.02f),
      out(std::size_t(m) * n);
  auto once = [&] {
    gemm_parallel(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, out.data(), n);
  };
  once();
  std::vector<double> t;
  const auto t0 = std::chrono::steady_clock::now();
  do {
    const auto s = std::chrono::steady_clock::now();
    once();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < min_seconds);
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return 2.0 * m * n * k / t[t.size() / 2];
}

/// The GEMM shapes a calibration measures for the GPT: every block GEMM and the head's, for
/// rows N in {64 .. 4096} and widths C in {64 .. 2048} (doublings), plus attention tiles.
inline std::vector<std::array<int, 3>> calibration_shapes(bool quick) {
  std::vector<std::array<int, 3>> s;
  const std::vector<int> rows =
      quick ? std::vector<int>{64, 512} : std::vector<int>{64, 128, 256, 512, 1024, 2048, 4096};
  const std::vector<int> widths = quick ? std::vector<int>{64, 256} : std::vector<int>{64, 128, 256, 512, 1024, 2048};
  for (int N : rows)
    for (int C : widths) {
      // Each forward GEMM (N, out, in) and its backward ones, dinp (N, in, out) and
      // dW (out, in, N); and the byte-vocabulary head's.
      // (Products above 4e10 FLOP, a second or more each here, are left to the nearest.)
      for (const auto& [out, in] : {std::pair{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}, {256, C}})
        for (const std::array<int, 3>& g : {std::array<int, 3>{N, out, in}, {N, in, out}, {out, in, N}})
          if (2.0 * g[0] * g[1] * g[2] <= 4e10) s.push_back(g);
    }
  for (int hs : {16, 32, 64, 128}) s.push_back({64, 64, hs});  // attention tiles
  return s;
}

// ---- Inference: the decoder's stored matmuls and a streamed pass ----------------------------

/// The inference schedule for weights on `w` and the KV cache on `kv` (streamed_model.hpp's
/// words as the planner's tiers); with the run's context, an NVMe home's requests as its
/// store makes them.
inline strata::plan::infer_schedule infer_schedule_for(weight_home w, kv_home kv, int depth,
                                                       strata::context* ctx = nullptr) {
  using strata::plan::state_home;
  strata::plan::infer_schedule s;
  s.home = w == weight_home::resident ? state_home::compute
           : w == weight_home::nvme   ? state_home::nvme
                                      : state_home::host;
  s.kv_home = kv == kv_home::device ? state_home::compute
              : kv == kv_home::nvme ? state_home::nvme
                                    : state_home::host;
  s.depth = depth;
  s.gpu = strata::cuda_enabled;
  if (ctx && (s.home == state_home::nvme || s.kv_home == state_home::nvme)) {
    s.nvme_align = ctx->nvme().transfer_alignment();
    s.checksum_block = ctx->nvme().checksum_block();
  }
  return s;
}

/// The four stored matmuls of one block (width C, format f) for `rows` rows, in seconds: the
/// median of repetitions until `min_seconds` have passed (one untimed first).
inline double stored_block_seconds(weight_format f, int C, int rows, double min_seconds) {
  gpt_config cfg;
  cfg.width = C, cfg.heads = 1;
  const block_layout layout = make_block_layout(cfg, f);
  std::vector<float> flat(block_numel(cfg));
  for (std::size_t i = 0; i < flat.size(); ++i) flat[i] = 0.01f * float(int(i % 17) - 8);
  std::vector<std::byte> block(layout.bytes);
  pack_block(layout, flat, block);
  std::vector<float> inp(std::size_t(rows) * 4 * C, 0.5f), out(std::size_t(rows) * 4 * C);
  auto once = [&] {
    for (const auto& [w, in, oc] : {std::tuple{"attn.c_attn.weight", C, 3 * C},
                                    {"attn.c_proj.weight", C, C}, {"mlp.c_fc.weight", C, 4 * C},
                                    {"mlp.c_proj.weight", 4 * C, C}})
      matmul_stored_forward(out.data(), inp.data(), view_of(layout.find(w), block.data()), nullptr,
                            rows, in, oc);
  };
  once();
  std::vector<double> t;
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [](auto a) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count(); };
  do {
    const auto a = std::chrono::steady_clock::now();
    once();
    t.push_back(since(a));
  } while (since(t0) < min_seconds || t.size() < 3);
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

/// The calibration's probes of the decoder's matmul, per weight format: a call costs
/// weights x (1 / dequant_weights_per_s + rows x 2 / flops_per_s) — the tile's dequantisation
/// once per call, then a dot product per row — fitted from 8 and 32 rows at width 512.
inline std::vector<std::pair<std::string, std::function<double()>>> inference_probes(bool quick) {
  std::vector<std::pair<std::string, std::function<double()>>> probes;
  for (weight_format f : {weight_format::f32, weight_format::bf16, weight_format::f16, weight_format::q4}) {
    const std::string base = std::string("gpt.matmul.") + format_name(f);
    // Both numbers from one pair of measurements, shared by the two probes.
    auto fit = std::make_shared<std::pair<double, double>>(0.0, 0.0);
    auto measure = [f, quick, fit] {
      if (fit->first > 0) return;
      // 8 and 32 rows: both above the kernel's threshold for spreading a call over threads.
      const int C = quick ? 128 : 512, R0 = 8, R1 = 32;
      const double w = 12.0 * C * C, min_s = quick ? 0.01 : 0.2;
      const double t0 = stored_block_seconds(f, C, R0, min_s), t1 = stored_block_seconds(f, C, R1, min_s);
      const double per_row = std::max((t1 - t0) / (R1 - R0), 1e-12) / w;  // s per weight-row
      const double per_call = std::max(t0 / w - R0 * per_row, per_row * 1e-3);
      *fit = {1.0 / per_call, 2.0 / per_row};
    };
    probes.push_back({base + ".dequant_weights_per_s", [measure, fit] { measure(); return fit->first; }});
    probes.push_back({base + ".flops_per_s", [measure, fit] { measure(); return fit->second; }});
  }
  return probes;
}

/// The blocks of a streamed decode pass (one new token for each of rows = micro_batch x
/// micro_batches rows, at an average cached length of `position`): stored bytes, and the
/// compute of the block's micro-batches (four matmuls each, attention over the cache at the
/// f32 dot rate, elementwise passes at the triad rate). The head (logits against the f32 wte)
/// is the last block's.
inline std::vector<strata::plan::infer_layer> infer_costs(const gpt_config& cfg, weight_format f,
                                                          int micro_batch, int micro_batches,
                                                          double position,
                                                          const strata::plan::calibration& c) {
  const std::string base = std::string("gpt.matmul.") + format_name(f);
  const double dequant = c.kernel(base + ".dequant_weights_per_s"), flops = c.kernel(base + ".flops_per_s");
  const double dot = c.kernel("gpt.matmul.f32.flops_per_s");
  const double C = cfg.width, w = 12.0 * C * C, rows = double(micro_batch) * micro_batches;
  const double matmuls = micro_batches * w / dequant + rows * 2.0 * w / flops;
  const double attention = rows * 4.0 * C * position / dot;
  const double elementwise = rows * elementwise_bytes_per_value * C / c.triad_bytes_s;
  const std::size_t bytes = make_block_layout(cfg, f).bytes;
  // A layer's cache: keys and values of every row for the whole context (the decoder's size).
  const std::size_t kv = kv_floats_per_layer(cfg, int(rows)) * sizeof(float);
  std::vector<strata::plan::infer_layer> out(std::size_t(cfg.layers),
                                             {bytes, matmuls + attention + elementwise, kv});
  out.back().compute_s += rows * 2.0 * C * cfg.vocab / dot;
  return out;
}

/// Calibrates this machine for the GPT (strata-plan calibrate and bench_plan): the GEMMs as
/// gpt_train runs them (one thread pool), the step's GEMM shapes, the decoder's matmul probes;
/// `quick`: tiny sizes, for CI (the numbers mean nothing).
inline strata::plan::calibration calibrate_machine(const std::string& nvme_dir, bool quick,
                                                   int threads = 0) {
  use_one_thread_pool();
  strata::plan::calibrate_options co;
  co.threads = threads;
  co.nvme_dir = nvme_dir;
  if (quick) {
    co.triad_bytes = std::size_t{24} << 20, co.nvme_bytes = std::size_t{16} << 20;
    co.allgather_bytes = std::size_t{4} << 20, co.h2d_bytes = std::size_t{16} << 20;
    co.repetitions = 2;
  }
  co.progress = [](const std::string& line) { std::printf("calibrate: %s\n", line.c_str()); };
  co.kernels = inference_probes(quick);
  const double probe_s = quick ? 0.002 : 0.05;
  return strata::plan::calibrate(co, calibration_shapes(quick), [probe_s](int m, int n, int k) {
    return gemm_probe_flops(m, n, k, probe_s);
  });
}

}  // namespace gpt
