// strata/checkpoint/saver.hpp — checkpoints of a ZeRO training run, taken in the background:
// save() returns at once, the snapshot and the persist run while training goes on, and the
// commit is atomic across every rank.
//
// What lives here: saver<Executor>, one per rank, over a checkpoint root that every rank sees
// (local NVMe for one machine, a shared file system for several); saver_options; save_report.
// What does not: what the state is and how it is loaded onto another layout (train_state.hpp),
// the directory's commit (directory.hpp), the files (shard_file.hpp).
//
//   checkpoint::saver ck(ex, opt, {.directory = "ckpt", .keep = 2});   // a collective
//   if (auto at = ck.resume()) first_step = at->step;                 // latest, if any
//   for (step = first_step; step < steps; ++step) {
//     train_step(step);                                               // opt.step inside
//     if (auto r = ck.poll()) report(*r);                             // committed or failed
//     if ((step + 1) % every == 0) ck.save("step-" + ..., step + 1, {{"data_pos", ...}});
//   }
//   ck.finish();                                                      // the last one, committed
//
// The life of one checkpoint, on every rank (the calls are collectives: every rank makes them
// in the same order):
//   save()    waits for the previous checkpoint to end; rank 0 begins TAG.partial/, the others
//             join it; each rank notes where its state lives (home_source: a pointer into a
//             memory home, a handle of the NVMe store) and hands the rest to its checkpoint
//             queue (a work_queue, in the trace as "checkpoint"). The training thread's stall
//             is this, plus any wait at the update guard below.
//   snapshot  on the queue, layer by layer: a piece whose home is the NVMe store is copied
//             file to file from its committed extent into this rank's data file
//             (copy_file_range; the store's CRCs are the checkpoint's, so the bytes never
//             pass through memory); every other piece into the staging buffer (host memory, one line of
//             the memory plan: snapshot_plan(), checked with the executor's; save() refuses
//             with out_of_budget up front when it is not planned and does not fit). This runs
//             while the next forward and backward run — they do not change parameters or
//             moments. The next update must not change a layer before its snapshot has it:
//             the saver sets zero_adam's update guard, which waits for that layer only.
//   persist   on the queue: this rank's files written from staging and made durable.
//   poll()    once every rank's files are durable (a two-number all-reduce, only while a
//             checkpoint is in flight), rank 0 commits on its queue: rename, then `latest`.
//             poll() returns a report when a checkpoint ended: committed, or failed with the
//             error (a failure on any rank removes TAG.partial/; the previous checkpoint stays
//             `latest`; training goes on).
// A device home of a CUDA build cannot be read from another thread: its snapshot is taken in
// save() itself, through the executor.
#pragma once

#include <strata/checkpoint/train_state.hpp>
#include <strata/exec/work_queue.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <sched.h>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {

struct saver_options {
  /// The checkpoint root (created when missing). Every rank must see the same directory.
  std::string directory;
  /// Committed checkpoints kept (latest and keep-1 before it); 0 keeps all.
  std::size_t keep = 2;
  /// Each rank's commit phases (its own files; rank 0 also the directory's): the kill drill's
  /// hook. Runs on the checkpoint queue.
  phase_hook on_phase{};
  /// Told what opening the root removed (rank 0) and why a checkpoint failed (every rank).
  std::function<void(const std::string&)> on_notice{};
  /// Test seam: file-system failures (file_ops.hpp).
  fs_fault fault{};
  shard_writer_options writer{};
  /// In messages, the trace and the plan line.
  std::string name = "checkpoint";
  /// Run the snapshot and the persist at idle CPU priority (Linux SCHED_IDLE for the queue's
  /// thread): they take only CPU time training leaves unused (its waits for copies and
  /// collectives), so on a machine whose cores the training fills, a checkpoint's CRCs and
  /// copies do not slow the step; the persist takes longer instead. The update guard still
  /// waits for a layer's snapshot where it must (then the cores are free, and it runs).
  bool idle_priority = true;
};

/// How one checkpoint ended, as this rank saw it.
struct save_report {
  std::string tag;
  std::uint64_t step = 0;
  bool committed = false;  // rank 0: `latest` names it; other ranks: every rank's files durable
  std::string error;       // why it failed ("" when it did not)
  double stall_seconds = 0;    // the training thread's: save() plus the update guard's waits
  double persist_seconds = 0;  // from save() to the end (snapshot, files, commit)
  double snapshot_seconds = 0; // the background snapshot into staging
  double write_seconds = 0;    // this rank's files written and made durable
  double commit_seconds = 0;   // rank 0: the commit (rename, `latest`, their fsyncs)
  std::uint64_t bytes = 0;     // this rank's data file
  /// Of those, copied file to file from the NVMe store's extents (not read through the store),
  /// and the part of that the kernel copied itself (copy_file_range: never through this
  /// process's memory; the rest went through a 1 MiB buffer where the file system refused).
  std::uint64_t file_copied_bytes = 0;
  std::uint64_t kernel_copied_bytes = 0;
};

template <class Executor>
class saver {
public:
  using adam_type = optim::zero_adam<Executor>;

  /// Opens (creates) the root: rank 0 first, removing a crash's leftovers, then the others
  /// (which never remove anything). A collective.
  saver(Executor& ex, adam_type& opt, saver_options options);
  /// Waits for this rank's queue; a checkpoint not finished by finish() is not committed
  /// (rank 0 removes its TAG.partial/; a crash leaves it for the next open to remove).
  ~saver();
  saver(const saver&) = delete;
  saver& operator=(const saver&) = delete;

  /// The staging line for the executor's plan extension (snapshot_plan).
  static memory_plan plan_for(const Executor& ex, const std::string& name = "checkpoint") {
    return snapshot_plan(ex, name);
  }

  const checkpoint_root& root() const noexcept { return *root_; }
  /// The tag `latest` names, if any.
  std::optional<std::string> latest() const { return root_->latest(); }
  /// Loads checkpoint `tag` into the executor and optimizer (and scaler: exactly when the
  /// checkpoint has one), each rank reading what it owns (restore_train_state).
  loaded_state load(const std::string& tag, optim::loss_scaler* scaler = nullptr) {
    checkpoint_reader reader(*root_, tag);
    return restore_train_state(reader, ex_, opt_, scaler);
  }
  /// load(latest) when there is a checkpoint; nothing (a fresh start) when there is none.
  std::optional<loaded_state> resume(optim::loss_scaler* scaler = nullptr) {
    const auto tag = latest();
    if (!tag) return std::nullopt;
    return load(*tag, scaler);
  }

  /// Starts checkpoint `tag` of the state after `step` steps (see the top). A collective.
  /// `metadata`: the caller's keys (data position, RNG, ...). Returns once the snapshot is
  /// handed over; a failure to begin is reported by the next poll(), not thrown.
  void save(const std::string& tag, std::uint64_t step,
            nlohmann::json metadata = nlohmann::json::object(),
            const optim::loss_scaler* scaler = nullptr);
  /// A collective, cheap when nothing is in flight: moves the checkpoint in flight on (commit
  /// once every rank's files are durable) and returns its report when it has ended.
  std::optional<save_report> poll() { return advance(false); }
  /// Waits until the checkpoint in flight has ended (committed or failed); its report. A
  /// collective.
  std::optional<save_report> finish() { return advance(true); }
  bool in_flight() const noexcept { return phase_ != phase::idle; }
  /// How many times an update has had to wait at the guard for a layer's snapshot (since this
  /// saver was made): a schedule made observable, for tests and reports.
  std::size_t guard_waits() const noexcept { return guard_waits_.load(); }
  /// Bytes of this rank's snapshot staging.
  std::size_t staging_bytes() const noexcept { return snapshot_bytes(ex_); }

private:
  enum class phase { idle, persisting, committing };
  struct source {
    home_source home;  // where the background snapshot reads it
    std::vector<float> copied;  // or the values, copied in save() (device homes)
  };
  struct job {
    std::string tag;
    std::uint64_t step = 0;
    std::unique_ptr<pending_checkpoint> pending;
    std::vector<source> sources;  // per piece
    event persisted, committed;
    std::chrono::steady_clock::time_point started;
    std::string error;            // begin's failure, found in save()
    double stall = 0, snapshot = 0, write = 0, commit = 0;
    std::uint64_t bytes = 0;
    std::uint64_t file_copied = 0, kernel_copied = 0;  // NVMe homes' pieces (save_report)
  };

  void snapshot_and_persist(job& j);
  void guard(std::size_t layer);
  std::optional<save_report> advance(bool wait);
  save_report report_of(job& j, bool committed, std::string error);
  void notice(const std::string& line) const {
    if (options_.on_notice) options_.on_notice(line);
  }
  std::string who() const {
    return "checkpoint saver '" + options_.name + "' (rank " + std::to_string(ex_.comm().rank()) + ")";
  }

  Executor& ex_;
  adam_type& opt_;
  saver_options options_;
  std::unique_ptr<checkpoint_root> root_;
  train_snapshot snap_;
  std::unique_ptr<job> job_;
  phase phase_ = phase::idle;
  // Layers whose snapshot is taken (the update guard's condition), and the guard's stall.
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t snapshotted_ = 0;
  bool snapshot_over_ = true;  // taken, or failed: nothing more to wait for
  double guard_stall_ = 0;
  std::atomic<std::size_t> guard_waits_{0};
  work_queue queue_;  // last: it stops (waiting for its work) before what that work uses goes
};

}  // namespace checkpoint
STRATA_NAMESPACE_END

#include <strata/checkpoint/detail/saver.inl>
