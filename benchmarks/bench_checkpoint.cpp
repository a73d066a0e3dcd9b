// benchmarks/bench_checkpoint.cpp — what a checkpoint costs the mini-GPT's training, as ratios
// measured in one run (built by examples/gpt/CMakeLists.txt: it needs the example's kernels).
//
// On R thread ranks (default 2) of the README demo's model, policy host (zero3_offload), each
// rank with a checkpoint::saver over one directory, `--reps` rounds of three measurements,
// interleaved so that a slow spell of the machine spreads over all three:
//   plain   one training step, no checkpoint in flight;
//   async   save() of the state, then one training step while it persists in the background
//           (the step waits only where the update guard must: a layer's snapshot not yet
//           taken when the optimizer reaches it), then finish() outside the timing;
//   sync    save() + finish(): the same state written synchronously, commit included — what
//           a checkpoint costs a trainer that stops to write it.
// Every checkpoint is committed (fsync of the files, the directory, `latest`); all are kept
// (keep = 0: no pruning in the timings) until the directory is removed at the end.
//
//   checkpoint ratio=X stall=A/B ms persist=C/D GB/s size=E MiB/rank F MiB
//     X = A / B: the training stall per checkpoint ÷ the synchronous write. A = the time the
//         training thread was held by the checkpoint — in save() and waiting at the update
//         guard — as the saver counts it (median); B = median(sync). Goal <= 0.05. The
//         difference median(async step) − median(plain step) is printed beside it: the
//         background work's CPU time too, within the steps' own spread.
//     C = the state's bytes (all ranks) ÷ (files written and fsynced + the commit), medians of
//         the sync rounds (rank 0's; the ranks write their files at once): how fast the
//         persist runs, the snapshot into staging not counted;
//     D = fio's sequential buffered write with --end_fsync=1 of the same bytes in the same
//         directory (one job, 1 MiB blocks), run right after each sync round (a cloud disk's
//         speed drifts over minutes), median: the peer. Goal C/D >= 0.9. Without fio, D = -1.
//     E, F: the checkpoint's data per rank and in total (params, Adam m and v: 12 B/param).
//
//   scripts/bench checkpoint [--reps N] [--ranks R] [--layers L --width C --heads H --seq T
//                            --batch B] [--dir DIR]
// DIR: default $STRATA_BENCH_DIR, else nvme-scratch/ beside this program (a real file system;
// tmpfs is refused, as by bench_nvme); the run's files are removed at the end.
#include "trainer.hpp"

#include "bench_common.hpp"  // median, seconds_since, scratch_dir, is_tmpfs
#include "example_support.hpp"
#include "nvme_fio.hpp"

#include <strata/checkpoint/saver.hpp>
#include <strata/comm/threads.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
using bench_support::median;
using bench_support::seconds_since;

struct figures {
  std::vector<double> plain, async, sync, stall, snapshot, write, commit, fio;
  std::uint64_t bytes_per_rank = 0;
  std::string error, fio_error = "not found";
};

// fio's peer of a persist: one sequential buffered write of `bytes` in `dir`, fsync'ed at the
// end (what a checkpoint's files need to be durable), 1 MiB blocks; bytes/s, or -1.
double fio_write(const std::string& dir, std::uint64_t bytes, std::string& error) {
  nvme_fio::job j;
  j.directory = dir;
  j.file = "fio-peer.dat";
  j.write = true;
  j.size = bytes;
  // 1 MiB blocks; a smoke run's tiny state in one block of its own size (fio refuses a size
  // below its block).
  j.block = static_cast<std::size_t>(std::clamp<std::uint64_t>(bytes / 4096 * 4096, 4096, 1 << 20));
  j.engine = "psync";
  j.direct = false;
  j.end_fsync = true;
  const nvme_fio::result r = nvme_fio::run(j);
  std::filesystem::remove(std::filesystem::path(dir) / j.file);
  if (!r.ok) error = r.error;
  return r.ok ? r.bytes_per_s : -1;
}

}  // namespace

int main(int argc, char** argv) {
  gpt::train_config tc;
  tc.model.layers = 6;
  tc.model.width = 192;
  tc.model.heads = 6;
  tc.model.context = 128;
  tc.seq = 128;
  tc.batch = 8;
  tc.steps = 1000;  // the schedule's length; only a few steps run
  int reps = 9, ranks = 2;
  std::string dir_option;
  try {
    example::option_reader r(argc, argv);
    while (r.next()) {
      if (r.is("--reps")) reps = r.integer(1);
      else if (r.is("--ranks")) ranks = r.integer(1, 64);
      else if (r.is("--layers")) tc.model.layers = r.integer(1);
      else if (r.is("--width")) tc.model.width = r.integer(1);
      else if (r.is("--heads")) tc.model.heads = r.integer(1);
      else if (r.is("--seq")) tc.seq = tc.model.context = r.integer(1);
      else if (r.is("--batch")) tc.batch = r.integer(1);
      else if (r.is("--dir")) dir_option = r.path();
      else r.unknown();
    }
    tc.validate();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: %s\n", e.what());
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path root = fs::path(bench_support::scratch_dir(dir_option)) /
                        ("strata-bench-checkpoint-" + std::to_string(::getpid()));
  fs::create_directories(root);
  if (bench_support::is_tmpfs(root.string())) {
    std::fprintf(stderr, "bench_checkpoint: '%s' is tmpfs/ramfs: memory, not a disk\n", root.c_str());
    fs::remove_all(root);
    return 2;
  }
  gpt::use_one_thread_pool();
  const gpt::text_split data = gpt::split_corpus(gpt::load_corpus(gpt::default_corpus_path()));
  const double params = static_cast<double>(gpt::parameter_count(tc.model));
  std::printf("checkpoint bench: %d layers, width %d, T %d, B %d: %.2f M params; %d thread "
              "ranks, policy host (zero3_offload); %d rounds; directory %s\n",
              tc.model.layers, tc.model.width, tc.seq, tc.batch, params / 1e6, ranks, reps,
              root.c_str());

  figures f;
  const bool has_fio = !nvme_fio::fio_version().empty();
  std::mutex mutex;
  strata::comm::thread_world world(ranks, std::chrono::minutes(10));
  world.run([&](strata::comm::threads& comm) {
    strata::context_config cc;
    cc.rank = comm.rank();
    strata::context ctx(cc);
    using trainer_type = gpt::trainer<strata::comm::threads, strata::zero3_offload>;
    trainer_type tr(ctx, comm, tc, data);
    strata::checkpoint::saver<trainer_type::executor_type> ck(
        tr.executor(), tr.optimizer(), {.directory = (root / "ck").string(), .keep = 0});
    int step = 0, tag = 0;
    auto next_tag = [&] { return "c" + std::to_string(tag++); };
    tr.train_step(step++);  // warm-up: first touches of every buffer
    std::vector<double> plain, async, sync, stall, snapshot, write, commit, fio;
    std::string error, fio_error = "not found";
    for (int r = 0; r < reps; ++r) {
      auto t0 = clock_type::now();
      tr.train_step(step++);
      plain.push_back(seconds_since(t0));

      t0 = clock_type::now();
      ck.save(next_tag(), std::uint64_t(step));
      tr.train_step(step++);
      async.push_back(seconds_since(t0));
      if (auto rep = ck.finish()) {
        stall.push_back(rep->stall_seconds);
        if (!rep->error.empty()) error = rep->error;
      }

      t0 = clock_type::now();
      ck.save(next_tag(), std::uint64_t(step));
      const auto rep = ck.finish();
      sync.push_back(seconds_since(t0));
      if (rep && !rep->error.empty()) error = rep->error;
      if (rep) {
        snapshot.push_back(rep->snapshot_seconds);
        write.push_back(rep->write_seconds);
        commit.push_back(rep->commit_seconds);
      }
      // The peer, right after, on the same file system in the same state (a cloud disk's
      // speed drifts over a run): rank 0 runs fio while the others wait.
      comm.barrier().wait();
      if (comm.rank() == 0 && has_fio) {
        const double bw = fio_write(root.string(), ck.staging_bytes() * std::uint64_t(ranks), fio_error);
        if (bw > 0) fio.push_back(bw);
      }
      comm.barrier().wait();
    }
    std::lock_guard lock(mutex);
    if (comm.rank() == 0) {
      f.plain = plain, f.async = async, f.sync = sync, f.stall = stall;
      f.snapshot = snapshot, f.write = write, f.commit = commit, f.fio = fio;
      f.fio_error = fio_error;
      f.bytes_per_rank = ck.staging_bytes();
    }
    if (!error.empty()) f.error = error;
  });
  if (!f.error.empty()) {
    std::fprintf(stderr, "bench_checkpoint: a checkpoint failed: %s\n", f.error.c_str());
    fs::remove_all(root);
    return 1;
  }
  const double plain = median(f.plain), async = median(f.async), sync = median(f.sync);
  // The stall is the time the training thread was held: in save() and at the update guard.
  // The step-time difference is printed beside it as a check: on a machine whose cores the
  // training fills, it also holds the CPU the background work took (run at idle priority to
  // keep that small), and its spread over a few rounds is that of the steps themselves.
  const double counted = median(f.stall);
  const double stall = counted;
  const double total = static_cast<double>(f.bytes_per_rank) * ranks;
  // Persisting: the files written and made durable, then the commit (rank 0's figures; the
  // ranks write at once, each its own file).
  const double files = median(f.write), commit = median(f.commit), snap = median(f.snapshot);
  const double persist = total / (files + commit);
  auto spread = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v.back() - v.front();
  };
  std::printf("step %.1f ms plain, %.1f ms with a checkpoint persisting under it (difference "
              "%+.1f ms; the plain steps spread over %.1f ms); the training thread was held "
              "%.2f ms (save() and the update guard)\n",
              plain * 1e3, async * 1e3, (async - plain) * 1e3, spread(f.plain) * 1e3, counted * 1e3);
  std::printf("synchronous checkpoint %.1f ms: snapshot %.1f ms, files written + fsynced %.1f ms, "
              "commit %.1f ms; persist %.2f GB/s\n",
              sync * 1e3, snap * 1e3, files * 1e3, commit * 1e3, persist / 1e9);

  const double fio = f.fio.empty() ? -1 : median(f.fio);
  if (fio > 0)
    std::printf("fio sequential buffered write + end_fsync, 1 MiB blocks, same bytes, same "
                "directory, one per round: %.2f GB/s\n", fio / 1e9);
  else
    std::printf("fio: %s — no peer for the persist speed\n", f.fio_error.c_str());
  fs::remove_all(root);
  std::printf("checkpoint ratio=%.3f stall=%.2f/%.1f ms persist=%.2f/%.2f GB/s size=%.1f MiB/rank "
              "%.1f MiB\n",
              stall / sync, stall * 1e3, sync * 1e3, persist / 1e9, fio > 0 ? fio / 1e9 : -1.0,
              static_cast<double>(f.bytes_per_rank) / (1 << 20), total / (1 << 20));
  return 0;
}
