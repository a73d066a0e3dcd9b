// benchmarks/bench_plan.cpp — the planner against the runs it predicts: predicted ÷ measured
// step time for the mini-GPT's training policies at two batch sizes and for two streamed
// generations, all in one run on this machine (built by examples/gpt/CMakeLists.txt: it needs
// the example's trainer and decoder).
//
// What it does: calibrates this machine (strata-plan calibrate's measurements; --calibration
// FILE reuses a file that is not stale), then for each configuration builds the real thing on a
// fresh context, runs it, and sets the planner's prediction beside the median of its measured
// steps:
//   train   --policy resident (ZeRO-0 on the compute tier), host (ZeRO-3, shards in host
//           memory), nvme (ZeRO-3, shards and Adam state on NVMe) x --batches (1, 8): --steps
//           steps, the first two not measured (the first has no deferred update before it)
//   infer   the blocks on NVMe: 4-bit groups, 2 micro-batches of 4 rows; f32, 1 row; 4-bit
//           again with the KV cache on host memory and on NVMe: --tokens decode steps after
//           a prefill of --prompt tokens
// A table row per run (predicted, measured, error), then the last line:
//   plan ratio=X worst=W within_15=K runs=N
//     X: the median over the runs of predicted ÷ measured; W: the run furthest from 1 (as
//     predicted ÷ measured); K of N runs within 15%.
//
//   scripts/bench plan [--calibration FILE] [--quick] [--layers L --width C --heads H --seq T]
//                      [--batches 1,8] [--steps N] [--infer-layers L --infer-width C]
//                      [--tokens N] [--dir DIR]
// DIR: default $STRATA_BENCH_DIR, else nvme-scratch/ beside this program. --quick: the CI smoke
// run (a tiny calibration, tiny models; the numbers mean nothing).
#include "data.hpp"
#include "gpt_plan.hpp"
#include "infer_session.hpp"
#include "random.hpp"
#include "sampler.hpp"  // argmax
#include "trainer.hpp"

#include "bench_common.hpp"
#include "example_support.hpp"

#include <strata/comm/solo.hpp>
#include <strata/plan/calibration_json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using bench_support::median;
using bench_support::seconds_since;
using clock_type = std::chrono::steady_clock;

struct options {
  std::string calibration, dir;
  bool quick = false;
  int layers = 4, width = 1024, heads = 8, seq = 64, steps = 7;
  std::vector<int> batches{1, 8};
  int infer_layers = 8, infer_width = 512, tokens = 24, prompt = 8;
};

void parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  while (r.next()) {
    if (r.flag("--quick")) o.quick = true;
    else if (r.is("--calibration")) o.calibration = r.path();
    else if (r.is("--dir")) o.dir = r.path();
    else if (r.is("--layers")) o.layers = r.integer(1, 4096);
    else if (r.is("--width")) o.width = r.integer(8, 1 << 14);
    else if (r.is("--heads")) o.heads = r.integer(1, 256);
    else if (r.is("--seq")) o.seq = r.integer(1, 1 << 14);
    else if (r.is("--steps")) o.steps = r.integer(3, 1000);
    else if (r.is("--batches")) {
      o.batches.clear();
      const std::string v = r.value();
      for (std::size_t at = 0; at <= v.size();) {
        const std::size_t comma = std::min(v.find(',', at), v.size());
        o.batches.push_back(example::parse_integer<int>("--batches", v.substr(at, comma - at), 1, 4096));
        at = comma + 1;
      }
    } else if (r.is("--infer-layers")) o.infer_layers = r.integer(1, 4096);
    else if (r.is("--infer-width")) o.infer_width = r.integer(8, 1 << 14);
    else if (r.is("--tokens")) o.tokens = r.integer(3, 10000);
    else r.unknown();
  }
}

struct row {
  std::string what;
  double predicted = 0, measured = 0;
  std::string bound;
};

// Train `tc` under Bundle on a fresh context; the predicted and the measured step (median).
template <class Bundle>
row train_run(gpt::train_policy p, const gpt::train_config& tc, const std::string& dir,
              const gpt::text_split& data, const strata::plan::calibration& c) {
  const bool nvme = p == gpt::train_policy::nvme || p == gpt::train_policy::nvme_bf16;
  strata::context ctx(gpt::train_context_config(0, 256, nvme ? dir : std::string(), 0));
  strata::comm::solo solo;
  gpt::trainer<strata::comm::solo, Bundle> tr(ctx, solo, tc, data);
  const auto pred =
      strata::plan::predict_step(gpt::layer_costs(tc.model, tc.batch, tc.seq, c, 1, tc.recompute),
                                 gpt::schedule_for(p, tc, 1, &ctx), c);
  std::vector<double> t;
  for (int s = 0; s < tc.steps; ++s) {
    const auto t0 = clock_type::now();
    tr.train_step(s);
    if (s >= 2) t.push_back(seconds_since(t0));
  }
  char what[96];
  std::snprintf(what, sizeof what, "train %s, batch %d", gpt::policy_name(p), tc.batch);
  return {what, pred.seconds, median(t), pred.bound};
}

row infer_run(const gpt::gpt_config& cfg, gpt::weight_format f, int micro, int block,
              gpt::kv_home kv, const options& o, const std::string& dir,
              const strata::plan::calibration& c) {
  gpt::infer_options io;
  io.home = gpt::weight_home::nvme;
  io.format = f;
  io.depth = 1;
  io.kv = kv;
  io.micro_batch = micro;
  io.nvme_dir = dir;
  const int B = micro * block;
  gpt::infer_session session(cfg, io, B, o.prompt);
  std::vector<float> w(gpt::block_numel(cfg));
  gpt::rng gen(2024, 0);
  for (float& x : w) x = 0.02f * float(gen.uniform() - 0.5);
  for (int l = 0; l < cfg.layers; ++l) session.set_block(std::size_t(l), w);
  session.ctx().synchronize();
  std::vector<float> embed(gpt::embed_numel(cfg));
  for (float& x : embed) x = 0.02f * float(gen.uniform() - 0.5);
  std::vector<std::vector<int>> prompts(static_cast<std::size_t>(B));
  for (auto& p : prompts)
    for (int t = 0; t < o.prompt; ++t) p.push_back(int(gen.uniform() * 255.99));
  gpt::kv_decoder& dec = session.decoder(embed);
  dec.append(prompts);
  std::vector<double> t;
  for (int step = 0; step < o.tokens; ++step) {
    std::vector<std::vector<int>> next(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b)
      next[std::size_t(b)] = {gpt::argmax(dec.logits() + std::size_t(b) * cfg.vocab, cfg.vocab)};
    const auto t0 = clock_type::now();
    dec.append(next);
    t.push_back(seconds_since(t0));
  }
  const auto s = gpt::infer_schedule_for(io.home, io.kv, io.depth, &session.ctx());
  const double position = o.prompt + o.tokens / 2.0;
  const auto pred = strata::plan::predict_pass(gpt::infer_costs(cfg, f, micro, block, position, c), s, c);
  char what[96];
  std::snprintf(what, sizeof what, "generate nvme %s, %d x %d rows, KV on %s", gpt::format_name(f),
                block, micro, gpt::home_name(kv));
  return {what, pred.seconds, median(t), pred.bound};
}

strata::plan::calibration calibration_for(const options& o, const std::string& dir) {
  if (!o.calibration.empty() && std::filesystem::exists(o.calibration)) {
    auto c = strata::plan::load_calibration(o.calibration);
    if (!strata::plan::is_stale(c, c.nvme_dir)) return c;
    std::printf("%s is stale (other hardware): measuring again\n", o.calibration.c_str());
  }
  auto c = gpt::calibrate_machine(dir, o.quick);
  if (!o.calibration.empty()) strata::plan::save_calibration(c, o.calibration);
  return c;
}

int run(const options& o) {
  const std::string dir = bench_support::scratch_dir(o.dir);
  std::filesystem::create_directories(dir);
  if (bench_support::is_tmpfs(dir))
    throw strata::config_error("bench_plan: " + dir + " is a tmpfs (no O_DIRECT): pass --dir");
  gpt::use_one_thread_pool();  // as gpt_train (a reused calibration did not set it)
  const auto c = calibration_for(o, dir);
  const gpt::text_split data = gpt::split_corpus(gpt::load_corpus(gpt::default_corpus_path()));
  gpt::train_config tc;
  tc.model.layers = o.layers, tc.model.width = o.width, tc.model.heads = o.heads;
  tc.model.context = o.seq, tc.seq = o.seq, tc.steps = o.steps, tc.warmup = 1;
  tc.plan_checkpoints = false;
  std::vector<row> rows;
  for (int b : o.batches) {
    tc.batch = b;
    rows.push_back(train_run<strata::zero0>(gpt::train_policy::resident, tc, dir, data, c));
    rows.push_back(train_run<strata::zero3_offload>(gpt::train_policy::host, tc, dir, data, c));
    rows.push_back(train_run<strata::zero3_infinity>(gpt::train_policy::nvme, tc, dir, data, c));
    rows.push_back(train_run<strata::zero3_infinity_bf16>(gpt::train_policy::nvme_bf16, tc, dir, data, c));
  }
  gpt::gpt_config icfg;
  icfg.layers = o.infer_layers, icfg.width = o.infer_width, icfg.heads = 8;
  icfg.context = o.prompt + o.tokens + 1;
  rows.push_back(infer_run(icfg, gpt::weight_format::q4, 4, 2, gpt::kv_home::device, o, dir, c));
  rows.push_back(infer_run(icfg, gpt::weight_format::f32, 1, 1, gpt::kv_home::device, o, dir, c));
  rows.push_back(infer_run(icfg, gpt::weight_format::q4, 4, 2, gpt::kv_home::host, o, dir, c));
  rows.push_back(infer_run(icfg, gpt::weight_format::q4, 4, 2, gpt::kv_home::nvme, o, dir, c));

  std::printf("\n| run | predicted | measured | predicted / measured | the model says |\n");
  std::printf("| --- | ---: | ---: | ---: | --- |\n");
  std::vector<double> ratios;
  double worst = 1;
  int within = 0;
  for (const row& r : rows) {
    const double q = r.predicted / r.measured;
    ratios.push_back(q);
    if (std::abs(std::log(q)) > std::abs(std::log(worst))) worst = q;
    within += std::abs(q - 1) <= 0.15;
    std::printf("| %s | %.1f ms | %.1f ms | %.2f | %s |\n", r.what.c_str(), r.predicted * 1e3,
                r.measured * 1e3, q, r.bound.c_str());
  }
  std::printf("calibration: %s, %s\n", c.machine.c_str(), c.measured_at.c_str());
  std::printf("plan ratio=%.3f worst=%.3f within_15=%d runs=%zu\n", median(ratios), worst, within,
              rows.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::program_main<options>(
      "bench_plan", "usage: scripts/bench plan [options] (see benchmarks/bench_plan.cpp)\n", argc,
      argv,
      [](int ac, char** av, options& o) {
        parse(ac, av, o);
        return true;
      },
      run);
}
