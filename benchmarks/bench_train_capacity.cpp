// bench_train_capacity — training a GPT whose training state is larger than this machine's
// RAM: ZeRO-3 with the parameter shards, gradients and Adam's m and v on NVMe (zero3_infinity),
// the optimizer step deferred under the next forward, every block's activations kept for the
// backward (train_config::recompute off: at B x T = 64 they are 8 MiB a block, and the
// backward then computes no forward again; --recompute: activation checkpointing), one rank.
//
// The model: byte vocabulary, --width and --heads, context = --seq, and as many blocks as make
// the training state (16 bytes per parameter: fp32 parameters, gradients, m, v) reach
// --ram-multiple (default 1.5) x this machine's RAM (MemTotal, or --ram-mib to set it). The
// disk must hold the plan's NVMe bytes (the state, plus the new version of m and v a step
// writes, 24 bytes per parameter): the free space of --dir is checked first and a run that
// does not fit is refused, with the numbers, before anything is written. The memory budgets
// (device = the emulated device, pinned, host) default to 30%, 10% and 10% of that RAM; the
// plan is printed and checked against them before the first step.
//
// It trains --steps (default 5) steps on the fortunes (AdamW, --lr default 3e-5, constant, no
// warm-up: a first Adam step moves every weight by about lr, and at lr 1e-3 this 2.4 G model's
// loss went from 6.1 to 14.4; clipped at 1.0), printing a
// progress line every few seconds (phase and layer) and one line per step. Step 0 has no
// earlier update to run, and step 1 runs step 0's, whose m and v were never written (they read
// as zeros without IO); steps 2.. run the previous step's full update under their forward, and
// are the measured ones. Beside them, in the same run:
//   IO bound       the NVMe bytes the step moved (counted by a wrapper around the context's IO
//                  engine) ÷ fio's sequential O_DIRECT rates in the same directory (1 MiB x
//                  qd 16, before and after the steps; mean): reads ÷ read rate + writes ÷ write
//                  rate. The sum, not the max, because on this kind of disk reads and writes at
//                  once take the sum of their times (bench adam-nvme: io/store ≈ io/read +
//                  io/write); where a disk overlaps them, the bound is lower and the ratio worse.
//   compute bound  the step's GEMM FLOPs (forward — twice with --recompute — and backward:
//                  gpt_gemm_mix.hpp) ÷ cblas_sgemm's FLOP/s over one block's mix.
//                  Attention, layernorms and Adam are left out: a lower bound.
//
// Last line:
//   train-capacity ratio=X step_s=A io_bound_s=B compute_bound_s=C state_gib=S ram_gib=R
//                  state_over_ram=Q peak_rss_gib=P rss_of_ram=F swap_kib=W val_loss_before=L0
//                  val_loss_after=L1 nvme_read_gb=G nvme_write_gb=H
//   X = A / max(B, C) (goal <= 1.2), A the median measured step; F = P / R (goal <= 0.5);
//   Q = S / R (goal >= 1.5). L0, L1: the loss of one fixed validation batch before the first
//   step and after the last. Exit status 1 when that loss did not fall (L1 >= L0), a tier's
//   peak left the plan (memory_plan::covers_peaks), or the run was refused. The smoke run
//   (scripts/bench --smoke, in CI) sets --ram-mib 64 and budgets whose sum is under half the
//   state, so it checks the same on a state 2.3x the budgets.
//
//   scripts/bench train-capacity [--ram-multiple M] [--ram-mib N] [--width C --heads H --seq T
//       --batch B] [--steps N] [--device-mib N --pinned-mib N --host-mib N --staging-mib N]
//       [--sub-group N] [--lr F] [--recompute] [--dir DIR] [--trace FILE]
// DIR: default $STRATA_BENCH_DIR, else nvme-scratch/ beside this program (tmpfs is refused).
#include "trainer.hpp"

#include "bench_common.hpp"   // median, seconds_since, scratch_dir, disk_free_bytes, proc_kib
#include "gpt_gemm_mix.hpp"   // step_gemms, sgemm_mix_flops
#include "example_support.hpp"
#include "nvme_fio.hpp"

#include <strata/comm/solo.hpp>
#include <strata/io/counting.hpp>  // the step's NVMe traffic, measured

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using bench_support::proc_kib;
using bench_support::seconds_since;

constexpr double gib = 1024.0 * 1024.0 * 1024.0;

struct options {
  double ram_multiple = 1.5;
  std::size_t ram_mib = 0;  // 0: MemTotal
  int width = 2048, heads = 16, seq = 64, batch = 1, steps = 5;
  std::size_t device_mib = 0, pinned_mib = 0, host_mib = 0;  // 0: a share of the RAM
  std::size_t staging_mib = 8, sub_group = std::size_t{1} << 20;
  double lr = 2e-6;
  bool recompute = false;
  std::string dir, trace;
};

void parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  using sz = std::size_t;
  while (r.next()) {
    if (r.is("--ram-multiple")) o.ram_multiple = r.number(0.001, 1000);
    else if (r.is("--ram-mib")) o.ram_mib = r.integer<sz>(1, sz(1) << 30);
    else if (r.is("--width")) o.width = r.integer(8, 1 << 16);
    else if (r.is("--heads")) o.heads = r.integer(1, 1 << 10);
    else if (r.is("--seq")) o.seq = r.integer(2, 1 << 16);
    else if (r.is("--batch")) o.batch = r.integer(1, 1 << 12);
    else if (r.is("--steps")) o.steps = r.integer(3, 1000);
    else if (r.is("--device-mib")) o.device_mib = r.integer<sz>(1, sz(1) << 30);
    else if (r.is("--pinned-mib")) o.pinned_mib = r.integer<sz>(1, sz(1) << 30);
    else if (r.is("--host-mib")) o.host_mib = r.integer<sz>(1, sz(1) << 30);
    else if (r.is("--staging-mib")) o.staging_mib = r.integer<sz>(1, 1024);
    else if (r.is("--sub-group")) o.sub_group = r.integer<sz>(1, sz(1) << 32);
    else if (r.is("--lr")) o.lr = r.number(1e-9, 1);
    else if (r.is("--dir")) o.dir = r.path();
    else if (r.is("--trace")) o.trace = r.path();
    else if (r.flag("--recompute")) o.recompute = true;
    else r.unknown();
  }
}

// fio's sequential O_DIRECT rate (bytes/s) of a `bytes` file in `dir`: write, then read it.
struct disk_rates {
  double read = -1, write = -1;
};
disk_rates fio_rates(const std::string& dir, std::uint64_t bytes, const example::voice& say) {
  disk_rates r;
  if (nvme_fio::fio_version().empty()) return r;
  nvme_fio::job j;
  j.directory = dir;
  j.file = "train-capacity-fio.bin";
  j.size = std::max<std::uint64_t>(bytes / (1 << 20), 1) * (1 << 20);
  j.block = std::size_t(1) << 20;
  j.queue_depth = 16;
  for (bool write : {true, false}) {
    j.write = write;
    const nvme_fio::result res = nvme_fio::run(j);
    if (!res.ok) say("fio: %s\n", res.error.c_str());
    (write ? r.write : r.read) = res.ok ? res.bytes_per_s : -1;
  }
  std::error_code ec;
  fs::remove(fs::path(dir) / j.file, ec);
  return r;
}

double mean_rate(double a, double b) { return a > 0 && b > 0 ? (a + b) / 2 : std::max(a, b); }

int run(const options& o) {
  example::voice say;
  const double ram = o.ram_mib ? double(o.ram_mib) * (1 << 20)
                               : double(proc_kib("/proc/meminfo", "MemTotal:")) * 1024.0;
  gpt::train_config tc;
  tc.model.vocab = 256;
  tc.model.width = o.width;
  tc.model.heads = o.heads;
  tc.model.context = o.seq;
  tc.model.layers = 1;
  tc.seq = o.seq;
  tc.batch = o.batch;
  tc.steps = o.steps;
  tc.warmup = 0;
  tc.lr = tc.min_lr = o.lr;
  tc.clip = 1.0f;
  tc.adam_sub_group = o.sub_group;
  tc.plan_checkpoints = false;  // no checkpoint here: its host staging would grow with the model
  tc.recompute = o.recompute;
  tc.model.validate();
  const double per_block = 16.0 * double(gpt::block_numel(tc.model));
  const double target = o.ram_multiple * ram - 16.0 * double(gpt::embed_numel(tc.model));
  tc.model.layers = std::max(1, int(std::ceil(target / per_block)));
  tc.validate();
  const double params = double(gpt::parameter_count(tc.model));
  const double state = 16.0 * params;

  const std::string dir = bench_support::scratch_dir(o.dir);
  const double free_bytes = bench_support::disk_free_bytes(dir, "train-capacity", "the state");
  if (free_bytes < 0) return 1;
  const double fio_bytes = std::min(state / 8, 2.0 * gib);
  // The plan's NVMe bytes: parameters, gradients, m and v with the step's new version; the
  // store's block padding and checksums; fio's file.
  const double needed = 24.0 * params * 1.02 + fio_bytes + (256 << 20);
  say("train-capacity: GPT of %d blocks, width %d, %d heads, T %d, B %d: %.3f G parameters, "
      "training state %.2f GiB (%.2f x %.2f GiB of RAM) in %s (%.1f GiB free)\n",
      tc.model.layers, o.width, o.heads, o.seq, o.batch, params / 1e9, state / gib, state / ram,
      ram / gib, dir.c_str(), free_bytes / gib);
  if (needed > free_bytes) {
    std::fprintf(stderr,
                 "train-capacity: refused: the state and the step's new moments need %.2f GiB "
                 "(%.0f bytes) in %s, which has %.2f GiB (%.0f bytes) free; free some space, "
                 "pass --dir elsewhere, or lower --ram-multiple (%.2f would fit)\n",
                 needed / gib, needed, dir.c_str(), free_bytes / gib, free_bytes,
                 o.ram_multiple * (free_bytes - fio_bytes - (256 << 20)) / needed);
    return 1;
  }

  // Budgets, a share of the RAM unless given; the plan is checked against them.
  auto share = [&](std::size_t mib, double fraction) {
    return mib ? mib << 20 : std::size_t(fraction * ram) / (1 << 20) * (1 << 20);
  };
  strata::context_config cc;
  cc.device_bytes = share(o.device_mib, 0.30);
  cc.pinned_bytes = share(o.pinned_mib, 0.10);
  cc.host_bytes = share(o.host_mib, 0.10);
  cc.staging_slot_bytes = o.staging_mib << 20;
  cc.staging_slots = 4;
  cc.nvme_directory = dir;
  strata::io::counting* counter = nullptr;
  cc.wrap_io_engine = [&](std::unique_ptr<strata::io::engine> e) {
    auto c = std::make_unique<strata::io::counting>(std::move(e));
    counter = c.get();
    return std::unique_ptr<strata::io::engine>(std::move(c));
  };
  const double budgets = double(cc.device_bytes + cc.pinned_bytes + cc.host_bytes);
  say("budgets: device %.2f GiB, pinned %.2f GiB, host %.2f GiB: the state is %.1f x their sum\n",
      double(cc.device_bytes) / gib, double(cc.pinned_bytes) / gib, double(cc.host_bytes) / gib,
      state / budgets);

  gpt::use_one_thread_pool();
  const gpt::text_split data = gpt::split_corpus(gpt::load_corpus(gpt::default_corpus_path()));
  strata::context ctx(cc);
  strata::comm::solo solo;
  auto t0 = clock_type::now();
  gpt::trainer<strata::comm::solo, strata::zero3_infinity> tr(ctx, solo, tc, data);
  say("memory plan:\n%s", tr.plan().to_string(&ctx).c_str());
  say("activations: %s (%.1f MiB on the device tier)\n",
      tc.recompute ? "each block's input kept, the rest recomputed in the backward"
                   : "every block's kept for the backward (nothing recomputed)",
      double(tr.activation_bytes()) / (1 << 20));
  say("initial weights written in %.1f s\n", seconds_since(t0));

  gpt::gpt_config one = tc.model;
  one.layers = 1;
  const int N = o.batch * o.seq;
  const double sgemm = gpt_bench::sgemm_mix_flops(gpt_bench::step_gemms(one, N, tc.recompute), 3);
  const double step_flops = gpt_bench::mix_flops(gpt_bench::step_gemms(tc.model, N, tc.recompute));
  const disk_rates before = fio_rates(dir, std::uint64_t(fio_bytes), say);
  say("cblas_sgemm over a block's GEMMs: %.1f GFLOP/s; fio: read %.2f GB/s, write %.2f GB/s\n",
      sgemm / 1e9, before.read / 1e9, before.write / 1e9);

  // The loss that must fall: one fixed validation batch, before the first step and after the
  // last (the training batches differ from step to step, and at B x T tokens their losses are
  // noisier than a few steps' progress).
  t0 = clock_type::now();
  const double val_before = tr.validation_loss(1);
  say("validation loss before the first step: %.4f (%.1f s)\n", val_before, seconds_since(t0));

  auto last_say = clock_type::now();
  int step = 0;
  auto began = clock_type::now();
  tr.set_progress([&](const char* phase, std::size_t layer, std::size_t layers) {
    const bool first = layer == (phase[0] == 'f' ? 0 : layers - 1);  // of the walk
    if (seconds_since(last_say) < 5 && !first) return;
    last_say = clock_type::now();
    if (step < o.steps)
      say("  step %d: %s layer %zu/%zu, %.1f s\n", step, phase, layer + 1, layers,
          seconds_since(began));
    else
      say("  validation: layer %zu/%zu, %.1f s\n", layer + 1, layers, seconds_since(began));
  });
  std::vector<double> times, reads, writes;
  constexpr int measured_from = 2;
  for (step = 0; step < o.steps; ++step) {
    const double r0 = counter->read_bytes(), w0 = counter->written_bytes();
    began = clock_type::now();
    ctx.trace().clear();
    const gpt::step_stats st = tr.train_step(step);
    const double s = seconds_since(began);
    if (step == o.steps - 1) {  // the last measured step, queue by queue
      say("the last step's trace: %s", ctx.trace().summarize().to_string().c_str());
      if (!o.trace.empty()) ctx.trace().write_chrome_json(o.trace);
    }
    say("step %d: loss %.4f, grad norm %.3f, %.1f s, NVMe read %.2f GB, written %.2f GB%s\n", step,
        st.loss, st.grad_norm, s, (counter->read_bytes() - r0) / 1e9,
        (counter->written_bytes() - w0) / 1e9,
        step < measured_from ? " (not measured: see the top)" : "");
    if (step >= measured_from) {
      times.push_back(s);
      reads.push_back(counter->read_bytes() - r0);
      writes.push_back(counter->written_bytes() - w0);
    }
  }
  began = clock_type::now();
  tr.executor().sync();  // the last step's update, deferred to a forward that does not come
  say("the last step's update: %.1f s\n", seconds_since(began));
  const double val_after = tr.validation_loss(1);
  say("validation loss after step %d: %.4f\n", o.steps - 1, val_after);
  const disk_rates after = fio_rates(dir, std::uint64_t(fio_bytes), say);
  say("fio after the steps: read %.2f GB/s, write %.2f GB/s (the bound takes the mean)\n",
      after.read / 1e9, after.write / 1e9);
  const double read_rate = mean_rate(before.read, after.read);
  const double write_rate = mean_rate(before.write, after.write);

  const double step_s = bench_support::median(times);
  const double rb = bench_support::median(reads), wb = bench_support::median(writes);
  const double io_bound = read_rate > 0 && write_rate > 0 ? rb / read_rate + wb / write_rate : -1;
  const double compute_bound = step_flops / sgemm;
  const double bound = std::max(io_bound, compute_bound);
  const double rss = double(proc_kib("/proc/self/status", "VmHWM:")) * 1024.0;
  const long long swap = proc_kib("/proc/self/status", "VmSwap:");
  say("measured step %.1f s; IO bound %.1f s (%.1f GB read at %.2f GB/s + %.1f GB written at "
      "%.2f GB/s), compute bound %.1f s (%.0f GFLOP at %.1f GFLOP/s); peak RSS %.2f GiB "
      "(%.1f%% of RAM), swap %lld KiB; validation loss %.4f -> %.4f\n",
      step_s, io_bound, rb / 1e9, read_rate / 1e9, wb / 1e9, write_rate / 1e9, compute_bound,
      step_flops / 1e9, sgemm / 1e9, rss / gib, 100 * rss / ram, swap, val_before, val_after);
  // Bytes moved ÷ step time: what the disk delivered under the step, beside fio's rates (this
  // disk drifts; when it ran faster in the steps than in fio's runs, the ratio drops below 1).
  say("the step moved %.2f GB/s of NVMe traffic (reads and writes together)\n",
      (rb + wb) / step_s / 1e9);
  const bool fell = val_after < val_before;
  if (!fell) say("train-capacity: the loss did not fall\n");
  // Every tier's peak stayed inside the plan that was checked against the budgets.
  const bool within = tr.plan().covers_peaks(ctx);
  if (!within) say("train-capacity: a tier's peak exceeded the plan:\n%s", tr.plan().to_string(&ctx).c_str());
  std::printf("train-capacity ratio=%.3f step_s=%.2f io_bound_s=%.2f compute_bound_s=%.2f "
              "state_gib=%.2f ram_gib=%.2f state_over_ram=%.2f peak_rss_gib=%.2f "
              "rss_of_ram=%.3f swap_kib=%lld val_loss_before=%.4f val_loss_after=%.4f nvme_read_gb=%.2f "
              "nvme_write_gb=%.2f\n",
              bound > 0 ? step_s / bound : -1.0, step_s, io_bound, compute_bound, state / gib,
              ram / gib, state / ram, rss / gib, rss / ram, swap, val_before, val_after,
              rb / 1e9, wb / 1e9);
  return fell && within ? 0 : 1;
}

constexpr const char* usage =
    "usage: bench_train_capacity [--ram-multiple M] [--ram-mib N] [--width C --heads H --seq T\n"
    "       --batch B] [--steps N] [--device-mib N --pinned-mib N --host-mib N --staging-mib N]\n"
    "       [--sub-group N] [--lr F] [--recompute] [--dir DIR] [--trace FILE]\n"
    "Trains a GPT whose training state is M x RAM with its state on NVMe (see the source's top).\n";

}  // namespace

int main(int argc, char** argv) {
  return example::program_main<options>(
      "bench_train_capacity", usage, argc, argv,
      [](int c, char** v, options& o) {
        for (int i = 1; i < c; ++i)
          if (std::string(v[i]) == "--help" || std::string(v[i]) == "-h") return false;
        parse(c, v, o);
        return true;
      },
      run);
}
