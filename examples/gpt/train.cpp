// examples/gpt/train.cpp — gpt_train: trains the mini-GPT through strata's ZeRO executor.
//
// What this is: the command line around trainer.hpp. It picks a policy bundle (where the
// parameters, gradients and optimizer state live) and a communicator (thread ranks in this
// process, or MPI ranks under mpirun), prints the memory plan before the first step, then one
// progress line per step, and leaves behind:
//   gpt_loss.csv, gpt_loss.svg   the loss log and its curve (train and validation)
//   gpt_trace.json (--trace)     rank 0's trace of the step --trace-step and of what ran between
//                                it and the step before (open in Perfetto)
//   gpt.safetensors              the final weights with GPT-2 tensor names (gpt_generate reads it)
// What it is not: fast on a GPU. This is the host build: tier::device is strata's emulated
// device (a bounded arena in host memory with its own copy queues), the kernels are host/
// (OpenBLAS GEMMs, OpenMP), and the CUDA kernels live in cuda/.
//
// The policies (see docs/gpt.md for the plan tables):
//   resident  zero0: every rank keeps all parameters, gradients and Adam state on the device;
//             gradients are all-reduced. The baseline.
//   host      zero3_offload: each rank keeps a 1/R shard of every layer in host memory; layers
//             are all-gathered onto the device just before they run; Adam runs on the host
//             over the shard (ZeRO-Offload).
//   nvme      zero3_infinity: the shards and the Adam moments live in a file per rank on the
//             NVMe tier, streamed through pinned buffers (ZeRO-Infinity). With --bf16
//             (zero3_infinity_bf16) the walks fetch and gather a bf16 copy of each shard,
//             written by every update beside the fp32 masters: half the parameter bytes.
//
//   gpt_train --policy nvme --ranks 2 --nvme-dir nvme          (the README demo)
//   mpirun -np 2 gpt_train --policy host                        (MPI ranks)
//   gpt_train --checkpoint-dir ckpt --save-every 50 --resume    (interrupt it, run it again)
//
// Checkpoints (run_checkpoints.hpp, on strata's checkpoint::saver): with --checkpoint-dir, a
// checkpoint of the whole training state (each rank its own shards: fp32 parameters, Adam m
// and v, the step) is taken every --save-every steps in the background, and one at the end.
// SIGINT or SIGTERM (or --stop-after) ends the run after the current step with a checkpoint;
// --resume continues from `latest`, bitwise as if never interrupted (the data order is a
// function of the step and the seed). A failed checkpoint is reported and training goes on;
// an error that ends the run names the last committed checkpoint to resume from.
//
// Exit codes: 0 trained (or stopped with a checkpoint), 1 failed (the message says why),
// 2 bad arguments.
#include "data.hpp"
#include "init_from.hpp"
#include "run_checkpoints.hpp"
#include "safetensors.hpp"
#include "stop_request.hpp"
#include "gpt_plan.hpp"  // train_context_config, the predicted step time
#include "train_options.hpp"
#include "trainer.hpp"

#include "example_support.hpp"  // examples/common/: voice, mib, launched_by_mpirun

#include <strata/comm/mpi.hpp>  // empty without STRATA_HAVE_MPI
#include <strata/comm/threads.hpp>
#include <strata/plan/calibration_json.hpp>

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace {

constexpr const char* usage = R"(usage: gpt_train [options]

Trains a byte-level GPT-2-style model with strata's ZeRO executor (host build: emulated device).

Model:     --layers N (4)  --heads N (4)  --width N (128)  --context N (64)
Batch:     --batch B (8, sequences per rank per micro-batch)  --seq T (= context)
           --accum A (1, micro-batches per step); global batch = ranks x B x A sequences
Schedule:  --steps N (300)  --lr F (3e-3)  --min-lr F (3e-4)  --warmup N (20)
           --wd F (0.1, AdamW)  --clip F (1.0, global gradient norm; 0 = off)  --seed N
Policy:    --policy resident|host|nvme (host)   --ranks R (2, thread ranks; mpirun sets it)
           --device-mib F (per rank; default: what the plan needs)  --pinned-mib F (64)
           --nvme-dir DIR (gpt-nvme; created if missing; a symbolic link anywhere in the
           path is refused)
           --no-overlap (run each optimizer step at once, not under the next forward; the
           same results, bitwise)  --bf16 (with --policy nvme: bf16 working parameters,
           fp32 masters, m and v on NVMe)  --no-recompute (keep every block's activations
           for the backward instead of recomputing them: one forward less per step, about
           15 x B x T x width floats per block more, the same results, bitwise)
Data:      --data PATH (a text file, or a directory of them; default the fortunes, else
           /usr/share/common-licenses)
           --val-every N (25)  --val-batches N (8)
Output:    --out FILE (gpt.safetensors)  --log FILE (gpt_loss.csv)  --svg FILE (gpt_loss.svg)
           --trace-step N (5; -1 = none)  --trace FILE (gpt_trace.json)  --threads N (per rank)
           (every output is checked for writability before the first step)
Checkpoint: --checkpoint-dir DIR (none)  --save-every N (0: only at the end and on a stop)
           --keep N (2)  --resume (from DIR's latest; a fresh start when it has none, so one
           command line serves the first start and every restart)  --stop-after N (stop after
           step N as SIGTERM would)  --init-from FILE (start from these weights, a
           gpt.safetensors of the same model; ignored when a checkpoint is resumed)
           SIGINT / SIGTERM: finish the step, write a checkpoint, exit 0
Planner:   --calibration FILE (strata-plan calibrate's): the predicted step time before the
           first step, and beside it at the end the median of the measured ones
           --help
)";

using options = gpt::train_options;

using example::mib;
using example::voice;  // only rank 0 talks; the lines appear as they happen

// This machine's sgemm rate with every core, the "peak" the MFU is measured against on the
// host (there is no datasheet figure for an emulated device): a 768^3 single-precision GEMM.
double measured_sgemm_flops() {
  const int n = 768;
  std::vector<float> a(std::size_t(n) * n, 0.5f), b(a), c(a);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  };
  run();
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

std::string tier_line(const strata::context& ctx) {
  std::string s;
  char buf[96];
  for (auto t : {strata::tier_id::device, strata::tier_id::pinned, strata::tier_id::host,
                 strata::tier_id::nvme}) {
    std::snprintf(buf, sizeof buf, "%s%s %.1f", s.empty() ? "" : " ",
                  t == strata::tier_id::device ? "dev" : t == strata::tier_id::pinned ? "pin"
                                                       : t == strata::tier_id::host   ? "host"
                                                                                      : "nvme",
                  mib(static_cast<double>(ctx.budget(t).used())));
    s += buf;
  }
  return s + " MiB";
}

template <class Bundle, class Comm>
int train(Comm& comm, const options& o, const gpt::text_split& data, double peak_flops) {
  const int rank = comm.rank(), ranks = comm.size();
  const voice say{rank == 0};
  const auto& tc = o.train;
  const gpt::gpt_config& cfg = tc.model;

  // The device budget: what the plan needs unless --device-mib says otherwise. A plan that does
  // not fit is refused by the executor before anything is allocated. The NVMe directory:
  // prepare_nvme_dir made it (main).
  strata::context_config cc = gpt::train_context_config(
      o.device_mib, o.pinned_mib, o.policy == "nvme" ? o.nvme_dir : std::string(), rank);
  cc.trace = rank == 0 && o.trace_step >= 0;
  strata::context ctx(cc);
  ctx.trace().set_enabled(false);

  gpt::trainer<Comm, Bundle> tr(ctx, comm, tc, data);
  const double params = static_cast<double>(gpt::parameter_count(cfg));
  const double state_bytes = params * 16;  // fp32 params, grads, Adam m and v
  say("\n== model: %d layers, %d heads, width %d, context %d, vocab %d: %.2f M parameters\n",
      cfg.layers, cfg.heads, cfg.width, cfg.context, cfg.vocab, params / 1e6);
  say("   training state (fp32 params + grads + Adam m, v): %.1f MiB; activations kept per rank: "
      "%.1f MiB\n",
      mib(state_bytes), mib(static_cast<double>(tr.activation_bytes())));
  say("   policy %s over %d rank%s; global batch %d ranks x %d seq x %d accum x %d tokens = %zu "
      "tokens/step\n",
      o.policy.c_str(), ranks, ranks > 1 ? "s" : "", ranks, tc.batch, tc.accum, tc.seq,
      tr.tokens_per_step());
  say("\n== memory plan of rank 0 (refused up front if it does not fit):\n%s",
      tr.plan().to_string(&ctx).c_str());
  if (o.policy == "nvme")
    gpt::check_nvme_space(o.nvme_dir, tr.plan().peak(strata::tier_id::nvme), ranks);
  if (o.device_mib > 0)
    say("   the device budget (%.1f MiB) is %.0f%% of the model's training state\n", o.device_mib,
        100.0 * o.device_mib * 1024 * 1024 / state_bytes);

  // The planner's prediction of a step on this machine (strata-plan calibrate's file); the
  // measured steps are set beside it at the end. Thread ranks share this machine's cores.
  double predicted_ms = 0;
  if (!o.calibration.empty()) {
    const auto c = strata::plan::load_calibration(o.calibration);
    const auto policy = gpt::parse_policy(o.policy == "nvme" && o.bf16 ? "nvme-bf16" : o.policy);
    const auto p = strata::plan::predict_step(
        gpt::layer_costs(cfg, tc.batch, tc.seq, c, ranks, tc.recompute),
        gpt::schedule_for(policy, tc, ranks, &ctx), c);
    predicted_ms = p.seconds * 1e3;
    say("\n== predicted step (strata-plan, calibration %s): %.0f ms, %s; compute bound %.0f ms, "
        "IO bound %.0f ms\n",
        o.calibration.c_str(), predicted_ms, p.bound.c_str(), p.compute_bound_s * 1e3,
        p.io_bound_s * 1e3);
  }
  std::vector<double> measured_ms;  // the steps after the first two (the steady state)

  using checkpoints = gpt::run_checkpoints<gpt::trainer<Comm, Bundle>>;
  std::optional<checkpoints> ck;
  int first_step = 0;
  if (!o.checkpoint_dir.empty()) {
    // keep checkpoints, and the one being written beside them.
    gpt::check_free_space("--checkpoint-dir", o.checkpoint_dir, "checkpoints (--keep + 1) of",
                          (o.keep + 1) * checkpoints::saver_type::plan_for(tr.executor())
                                             .peak(strata::tier_id::host),
                          ranks);
    ck.emplace(tr, o, rank, [&](const std::string& line) { say("%s", line.c_str()); });
    first_step = ck->resume();
  }
  if (first_step == 0 && !o.init_from.empty()) {  // every rank reads the same file
    const auto w = gpt::initial_weights_from(o.init_from, cfg);
    for (std::size_t i = 0; i < w.size(); ++i) tr.executor().set_params(i, w[i]);
    say("   initial weights from %s (the optimizer state starts fresh)\n", o.init_from.c_str());
  }
  if (first_step >= tc.steps) {  // the run had finished: its weights are the output
    auto w = tr.weights();
    if (rank == 0) gpt::save_gpt(o.out, cfg, w[0], {w.begin() + 1, w.end()});
    say("\n== nothing to train: the checkpoint is at step %d of %d; wrote its weights to %s\n",
        first_step, tc.steps, o.out.c_str());
    return 0;
  }

  std::unique_ptr<gpt::train_log> log;
  if (rank == 0) log = std::make_unique<gpt::train_log>(o.log, first_step);  // keeps steps 1..first_step
  const double flops_per_token = gpt::flops_per_token(cfg, tc.seq);
  say("\n== training (%d steps%s)\n", tc.steps,
      first_step > 0 ? (", from step " + std::to_string(first_step + 1)).c_str() : "");
  double first_loss = 0, last_val = std::numeric_limits<double>::quiet_NaN();
  bool stopped = false;
  for (int step = first_step; step < tc.steps && !stopped; ++step) {
    const bool traced = step == o.trace_step && rank == 0;
    if (traced) ctx.trace().set_enabled(true);
    const auto t0 = std::chrono::steady_clock::now();
    gpt::step_stats st;
    try {
      st = tr.train_step(step);
    } catch (const std::exception&) {
      // The step may have updated some layers and not others; what a resume can trust is the
      // last committed checkpoint.
      if (ck) {
        const auto at = ck->latest();
        say("\ngpt_train: step %d failed; the last committed checkpoint is %s\n", step + 1,
            at ? ("'" + o.checkpoint_dir + "/" + *at + "' (resume with --resume)").c_str()
               : "none");
      }
      throw;
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (traced) {
      ctx.trace().set_enabled(false);
      ctx.trace().write_chrome_json(o.trace);
    }
    gpt::step_record rec;
    rec.step = step + 1;
    rec.train_loss = st.loss;
    rec.lr = st.lr;
    rec.grad_norm = st.grad_norm;
    rec.ms = sec * 1e3;
    if (step >= first_step + 2) measured_ms.push_back(rec.ms);
    rec.tokens_per_s = static_cast<double>(tr.tokens_per_step()) / sec;
    if (step == first_step) first_loss = st.loss;
    if ((step + 1) % o.val_every == 0 || step + 1 == tc.steps) {
      rec.val_loss = tr.validation_loss(o.val_batches);
      last_val = rec.val_loss;
    }
    // A stop (a signal on any rank, or --stop-after) ends the run after this step, with a
    // checkpoint; so does the last step.
    stopped = gpt::stop_agreed(comm) || rec.step == o.stop_after;
    std::string ckpt;
    // The trace of step --trace-step starts here, one step early: it shows what happens between
    // the steps too (a checkpoint begun now persists under the traced step).
    if (rank == 0 && step + 1 == o.trace_step) ctx.trace().set_enabled(true);
    if (ck) {
      ck->after_step(rec.step, stopped || rec.step == tc.steps);
      ckpt = ck->progress();
    }
    const double flops = rec.tokens_per_s * flops_per_token;
    char val[32] = "";
    if (!std::isnan(rec.val_loss)) std::snprintf(val, sizeof val, " val %.4f |", rec.val_loss);
    say("step %4d/%d | loss %.4f |%s lr %.2e | norm %5.2f%s | %6.0f tok/s | %5.2f GFLOP/s | MFU "
        "%4.1f%% | %s | %4.0f ms%s%s\n",
        rec.step, tc.steps, rec.train_loss, val, rec.lr, rec.grad_norm,
        st.skipped ? " (skipped)" : "", rec.tokens_per_s, flops / 1e9, 100.0 * flops / peak_flops,
        tier_line(ctx).c_str(), rec.ms, traced ? " (traced)" : "", ckpt.c_str());
    if (log) log->add(rec);
  }
  if (ck) {
    const bool saved = ck->finish();
    const std::string last = ck->progress();
    if (!last.empty()) say("   %s\n", last.c_str() + 3);  // without the leading " | "
    if (stopped) {
      say("\n== stopped after the step above%s; %s\n",
          gpt::stop_signal().load() ? " (signal)" : " (--stop-after)",
          saved ? ("continue with the same command and --resume (checkpoint '" + o.checkpoint_dir +
                   "/" + ck->latest().value_or("?") + "')").c_str()
                : "its checkpoint FAILED (see above)");
      return saved ? 0 : 1;
    }
  }

  // The weights: every rank takes part in gathering them; rank 0 writes the file.
  auto w = tr.weights();
  if (rank == 0) {
    std::vector<std::vector<float>> blocks(w.begin() + 1, w.end());
    gpt::save_gpt(o.out, cfg, w[0], blocks);
    log->write_svg(o.svg, "mini-GPT " + std::to_string(params / 1e6).substr(0, 4) +
                              " M params, policy " + o.policy + ", " + std::to_string(ranks) +
                              " ranks");
    say("\n== done: loss %.3f -> validation %.3f\n", first_loss, last_val);
    if (predicted_ms > 0 && !measured_ms.empty()) {
      std::nth_element(measured_ms.begin(), measured_ms.begin() + measured_ms.size() / 2,
                       measured_ms.end());
      const double median = measured_ms[measured_ms.size() / 2];
      say("   step time: predicted %.0f ms, measured %.0f ms (median of %zu steps): %+.1f%%\n",
          predicted_ms, median, measured_ms.size(), 100.0 * (predicted_ms - median) / median);
    }
    say("   wrote %s (weights), %s + %s (loss log and curve)%s\n", o.out.c_str(), o.log.c_str(),
        o.svg.c_str(),
        o.trace_step >= 0 && o.trace_step < tc.steps ? (", " + o.trace).c_str() : "");
    say("   memory, rank 0:\n%s", ctx.memory_report().c_str());
  }
  return 0;
}

template <class Comm>
int train_policy(Comm& comm, const options& o, const gpt::text_split& data, double peak) {
  if (o.policy == "resident") return train<strata::zero0>(comm, o, data, peak);
  if (o.policy == "host") return train<strata::zero3_offload>(comm, o, data, peak);
  if (o.bf16) return train<strata::zero3_infinity_bf16>(comm, o, data, peak);
  return train<strata::zero3_infinity>(comm, o, data, peak);
}

void print_corpus(const gpt::corpus& text, const gpt::text_split& data) {
  std::printf("corpus: %s (%zu files, %.2f MB; %zu train / %zu validation bytes)\n",
              text.source.c_str(), text.files.size(), text.bytes.size() / 1e6, data.train.size(),
              data.val.size());
}

#if STRATA_HAVE_MPI
// Under mpirun: one process per rank on comm::mpi. The executor's collectives thread and this
// thread both call MPI, so comm::mpi needs MPI_THREAD_MULTIPLE.
int train_mpi(int& argc, char**& argv, const options& o, const gpt::corpus& text,
              const gpt::text_split& data, double peak, unsigned cores) {
  int provided = 0, rank = 0, size = 1;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc = 1;
  if (provided < MPI_THREAD_MULTIPLE) {
    if (rank == 0) std::fprintf(stderr, "gpt_train: this MPI lacks MPI_THREAD_MULTIPLE\n");
  } else {
    strata::comm::mpi comm;  // a duplicate of MPI_COMM_WORLD, freed before MPI_Finalize
    try {
      const int threads = o.threads > 0 ? o.threads : std::max(1, int(cores) / size);
      gpt::use_one_thread_pool();
#  if defined(_OPENMP)
      omp_set_num_threads(threads);
#  endif
      if (rank == 0) print_corpus(text, data);
      // Every process measured its sgemm rate at the same time, sharing the machine: the sum
      // is the machine's rate, the reference for the global FLOP/s.
      double machine_peak = peak;
      MPI_Allreduce(&peak, &machine_peak, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      rc = train_policy(comm, o, data, machine_peak);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gpt_train (rank %d): %s\n", rank, e.what());
      comm.abort(e.what());
    }
  }
  MPI_Finalize();
  return rc;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = gpt::parse_train_options(std::vector<std::string>(argv + 1, argv + argc));
    if (o.help) {
      std::fputs(usage, stdout);
      return 0;
    }
    gpt::check_outputs(o);
    gpt::install_stop_handlers();
    if (o.policy == "nvme") gpt::prepare_nvme_dir(o.nvme_dir);
  } catch (const gpt::bad_argument& e) {
    std::fprintf(stderr, "gpt_train: %s\n(see gpt_train --help)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpt_train: %s\n", e.what());
    return 1;
  }
  try {
    const std::string path = o.data.empty() ? gpt::default_corpus_path() : o.data;
    const gpt::corpus text = gpt::load_corpus(path);
    const gpt::text_split data = gpt::split_corpus(text);
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const double peak = measured_sgemm_flops();
#if STRATA_HAVE_MPI
    if (example::launched_by_mpirun()) return train_mpi(argc, argv, o, text, data, peak, cores);
#endif
    print_corpus(text, data);
    std::printf("host sgemm peak (all %u cores, 768^3): %.1f GFLOP/s — the MFU reference\n", cores,
                peak / 1e9);
    // Thread ranks share the cores: each gets its share of OpenMP threads, and OpenBLAS runs
    // on the calling thread (one thread pool, see host/kernels.hpp).
    const int threads = o.threads > 0 ? o.threads : std::max(1, int(cores) / o.ranks);
    gpt::use_one_thread_pool();
    int status = 0;
    strata::comm::thread_world world(o.ranks, std::chrono::minutes(10));
    world.run([&](strata::comm::threads& comm) {
#if defined(_OPENMP)
      omp_set_num_threads(threads);
#endif
      const int s = train_policy(comm, o, data, peak);
      if (comm.rank() == 0) status = s;
    });
    return status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpt_train: %s\n", e.what());
    return 1;
  }
}
