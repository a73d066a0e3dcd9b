// benchmarks/bench_gpt.cpp — the mini-GPT's host training speed, as two ratios measured in one
// run (built by examples/gpt/CMakeLists.txt: it needs the example's kernels and a CBLAS).
//
//   gpt ratio=X          X = model FLOP/s of a training step (6N + 12LCT per token, the
//                        standard count: recompute and the optimizer are not counted) ÷ the
//                        FLOP/s of cblas_sgemm over the same GEMM shapes in the same mix, on
//                        the same threads (gemm_parallel, as the model calls it). Goal >= 0.5.
//                        Per-block activation checkpointing runs the forward twice, which
//                        caps X at about 0.75.
//   gpt-offload ratio=Y  Y = step time with ZeRO-3 + NVMe (zero3_infinity: shards and Adam
//                        state in an NVMe file) ÷ step time with everything resident (zero0),
//                        one rank each, steps interleaved. Goal <= 1.10.
//
//   scripts/bench gpt [--steps N] [--layers L --width C --heads H --seq T --batch B]
// Defaults: the README demo's model (6 layers, width 192, T = 128) at B = 32 sequences per step,
// 12 measured steps. The optimizer step of an NVMe home moves every layer's shard, gradient and
// Adam moments through NVMe; clipping needs the global norm first, so that IO cannot overlap the
// backward. The trainer defers it to the next forward (train_config::overlap_step), where layer
// i is updated while the forward computes the layers before it. A third trainer, interleaved
// with the other two, runs the step at once (overlap off), to show what the overlap gains:
// before it, 1.43 at B = 8 and 1.07 at B = 32 on the development machine.
#include "trainer.hpp"

#include "bench_common.hpp"   // median, seconds_since
#include "gpt_gemm_mix.hpp"  // step_gemms, sgemm_mix_flops

#include "example_support.hpp"  // examples/common/: option_reader

#include <strata/comm/solo.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace {

using clock_type = std::chrono::steady_clock;
using bench_support::median;
using bench_support::seconds_since;
using gpt_bench::sgemm_mix_flops;
using gpt_bench::step_gemms;

gpt::text_split corpus() {
  const gpt::corpus c = gpt::load_corpus(gpt::default_corpus_path());
  return gpt::split_corpus(c);
}

}  // namespace

int main(int argc, char** argv) {
  gpt::train_config tc;
  tc.model.layers = 6;
  tc.model.width = 192;
  tc.model.heads = 6;
  tc.model.context = 128;
  tc.seq = 128;
  tc.batch = 32;
  int steps = 12;
  tc.steps = 1000;  // the schedule's length; only `steps` (+ warm-up) of it run
  tc.warmup = 10;
  try {
    example::option_reader r(argc, argv);  // `--steps 4` or `--steps=4`
    while (r.next()) {
      if (r.is("--steps")) steps = r.integer(1);
      else if (r.is("--layers")) tc.model.layers = r.integer(1);
      else if (r.is("--width")) tc.model.width = r.integer(1);
      else if (r.is("--heads")) tc.model.heads = r.integer(1);
      else if (r.is("--seq")) tc.seq = tc.model.context = r.integer(1);
      else if (r.is("--batch")) tc.batch = r.integer(1);
      else r.unknown();
    }
    tc.validate();
  } catch (const std::exception& e) {  // example::bad_argument, or a model train_config refuses
    std::fprintf(stderr, "bench_gpt: %s\n", e.what());
    return 2;
  }
  gpt::use_one_thread_pool();
  const auto data = corpus();
  const gpt::gpt_config& cfg = tc.model;
  const double params = static_cast<double>(gpt::parameter_count(cfg));
  const double tokens = double(tc.batch) * tc.seq;
  const double flops_per_token = gpt::flops_per_token(cfg, tc.seq);
  std::printf("gpt bench: %d layers, width %d, %d heads, T %d, B %d: %.2f M params, %.0f tokens "
              "per step, %u threads\n",
              cfg.layers, cfg.width, cfg.heads, tc.seq, tc.batch, params / 1e6, tokens,
              std::max(1u, std::thread::hardware_concurrency()));

  strata::comm::solo solo_a, solo_b;
  strata::context_config resident_cfg;
  strata::context resident_ctx(resident_cfg);
  const std::filesystem::path nvme_dir = std::filesystem::current_path() / "bench_gpt.nvme";
  std::filesystem::create_directories(nvme_dir);
  strata::context_config nvme_cfg;
  nvme_cfg.nvme_directory = nvme_dir.string();
  nvme_cfg.pinned_bytes = std::size_t{128} << 20;
  nvme_cfg.staging_slot_bytes = std::size_t{1} << 20;
  strata::context nvme_ctx(nvme_cfg);
  gpt::trainer<strata::comm::solo, strata::zero0> resident(resident_ctx, solo_a, tc, data);
  gpt::trainer<strata::comm::solo, strata::zero3_infinity> offload(nvme_ctx, solo_b, tc, data);
  const std::filesystem::path at_once_dir = nvme_dir / "at-once";
  std::filesystem::create_directories(at_once_dir);
  strata::context_config at_once_cfg = nvme_cfg;
  at_once_cfg.nvme_directory = at_once_dir.string();
  strata::context at_once_ctx(at_once_cfg);
  strata::comm::solo solo_c;
  gpt::train_config at_once_tc = tc;
  at_once_tc.overlap_step = false;
  gpt::trainer<strata::comm::solo, strata::zero3_infinity> at_once(at_once_ctx, solo_c,
                                                                    at_once_tc, data);

  // Interleaved: resident step s, then the offloaded ones (the same data and work).
  std::vector<double> t_res, t_nvme, t_once;
  auto timed = [](auto& tr, int s) {
    const auto t0 = clock_type::now();
    tr.train_step(s);
    return seconds_since(t0);
  };
  for (int s = 0; s < steps + 2; ++s) {
    const double r = timed(resident, s), n = timed(offload, s), o = timed(at_once, s);
    if (s >= 2) t_res.push_back(r), t_nvme.push_back(n), t_once.push_back(o);  // 2 warm-up
  }
  const double res = median(t_res), inf = median(t_nvme), once = median(t_once);
  const double model_flops = tokens * flops_per_token / res;
  const double sgemm = sgemm_mix_flops(step_gemms(cfg, tc.batch * tc.seq));
  std::printf("resident step %.1f ms: %.0f tokens/s, %.1f GFLOP/s (model FLOPs)\n", res * 1e3,
              tokens / res, model_flops / 1e9);
  std::printf("zero3_infinity step %.1f ms: %.0f tokens/s (the step at once: %.1f ms, %.2f x "
              "resident)\n",
              inf * 1e3, tokens / inf, once * 1e3, once / res);
  std::printf("cblas_sgemm over the step's GEMM shapes: %.1f GFLOP/s\n", sgemm / 1e9);
  std::printf("gpt ratio=%.2f\n", model_flops / sgemm);
  std::printf("gpt-offload ratio=%.2f\n", inf / res);
  std::filesystem::remove_all(nvme_dir);
  return 0;
}
