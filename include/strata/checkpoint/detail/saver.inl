// strata/checkpoint/detail/saver.inl — the bodies of saver's members, declared and documented
// in checkpoint/saver.hpp (included at its end; not a header to include alone).
#pragma once

STRATA_NAMESPACE_BEGIN
namespace checkpoint {
namespace detail {
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
inline std::string message_of(const std::exception_ptr& e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an unknown exception";
  }
  return {};
}
}  // namespace detail

template <class Executor>
saver<Executor>::saver(Executor& ex, adam_type& opt, saver_options options)
    : ex_(ex), opt_(opt), options_(std::move(options)),
      queue_(options_.name, ex.ctx().trace(), [idle = options_.idle_priority] {
        if (!idle) return;
        sched_param none{};
        (void)::sched_setscheduler(0, SCHED_IDLE, &none);  // this thread; best effort
      }) {
  if (options_.directory.empty()) throw config_error(who() + ": no directory given");
  // The staging is planned: with the executor's lines when its plan extension added ours,
  // otherwise checked here, before it is allocated.
  const memory_plan own = plan_for(ex_, options_.name);
  if (!ex_.plan().includes(own)) {
    memory_plan all;
    all.add(ex_.plan());
    all.add(own);
    all.check(ex_.ctx(), who());
  }
  // Rank 0 opens first and removes what a crash left; then the others, which remove nothing.
  const int rank = ex_.comm().rank();
  auto open = [&] {
    root_options ro;
    ro.keep = options_.keep;
    ro.on_phase = options_.on_phase;
    ro.on_recovery = options_.on_notice;
    ro.fault = options_.fault;
    ro.recover = rank == 0;
    root_ = std::make_unique<checkpoint_root>(options_.directory, std::move(ro));
  };
  std::exception_ptr failed;
  float bad = 0;
  if (rank == 0) {
    try {
      open();
    } catch (...) {
      failed = std::current_exception();
      bad = 1;
    }
  }
  ex_.comm().all_reduce(&bad, &bad, 1, comm::reduce_op::sum).wait();
  if (failed) std::rethrow_exception(failed);
  if (bad > 0)
    throw io_error(who() + ": rank 0 could not open the checkpoint root '" + options_.directory +
                   "' (its error names why)");
  if (rank != 0) open();
  // The staging, allocated now: refused up front, not at the first save.
  describe_snapshot(snap_, ex_, opt_, 0, nullptr, nlohmann::json::object());
  opt_.set_update_guard([this](std::size_t layer) { guard(layer); });
}

template <class Executor>
saver<Executor>::~saver() {
  opt_.set_update_guard({});
  try {
    queue_.synchronize();
  } catch (...) {  // a failed persist nobody polled: its TAG.partial/ goes with its job
  }
}

template <class Executor>
void saver<Executor>::save(const std::string& tag, std::uint64_t step, nlohmann::json metadata,
                           const optim::loss_scaler* scaler) {
  if (in_flight()) {
    // The previous checkpoint must end first; its report is told as a notice, since this call
    // returns none (poll() or finish() before save() to have it).
    if (auto r = finish())
      notice(who() + ": checkpoint '" + r->tag + "' " +
             (r->committed ? "committed" : "failed: " + r->error) + " (ended by the next save)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  job_ = std::make_unique<job>();
  job& j = *job_;
  j.tag = tag;
  j.step = step;
  j.started = t0;
  const int rank = ex_.comm().rank();
  float bad = 0;
  if (rank == 0) {
    try {
      j.pending = root_->make_pending(tag, false);
    } catch (const std::exception& e) {
      j.error = e.what();
      bad = 1;
    }
  }
  ex_.comm().all_reduce(&bad, &bad, 1, comm::reduce_op::sum).wait();
  if (bad > 0 && j.error.empty()) j.error = "rank 0 could not begin checkpoint '" + tag + "'";
  if (j.error.empty() && rank != 0) {
    try {
      j.pending = root_->make_pending(tag, true);
    } catch (const std::exception& e) {
      j.error = e.what();
    }
  }
  if (j.error.empty()) {
    try {
      describe_snapshot(snap_, ex_, opt_, step, scaler, std::move(metadata));
      // Where each piece is read from in the background; a home no other thread can read (a
      // real GPU's) is copied now, through the executor.
      for (std::size_t i = 0; i < ex_.size(); ++i)
        for (int k = 0; k < 3; ++k) {
          source s;
          s.home = k == 0 ? ex_.stored_home(i) : opt_.moment_home(i, k - 1);
          const std::size_t held = k == 0 ? ex_.stored_numel(i) : ex_.part_numel(i);
          if (!s.home && held) s.copied = k == 0 ? ex_.stored_params(i) : k == 1 ? opt_.m(i) : opt_.v(i);
          j.sources.push_back(std::move(s));
        }
    } catch (const std::exception& e) {
      j.error = e.what();
    }
  }
  if (j.error.empty()) {
    {
      std::lock_guard lock(mutex_);
      snapshotted_ = 0;
      snapshot_over_ = false;
      guard_stall_ = 0;
    }
    j.persisted = queue_.submit(span_kind::io_write, options_.name + " " + tag,
                                [this, &j] { snapshot_and_persist(j); });
  } else {
    j.persisted = event::pending();
    j.persisted.fail(std::make_exception_ptr(io_error(j.error)));
  }
  phase_ = phase::persisting;
  j.stall = detail::seconds_since(t0);
}

template <class Executor>
void saver<Executor>::snapshot_and_persist(job& j) {
  auto over = [&] {
    std::lock_guard lock(mutex_);
    snapshot_over_ = true;
    cv_.notify_all();
  };
  const auto t0 = std::chrono::steady_clock::now();
  try {
    shard_writer w(*j.pending, snapshot_head(snap_, ex_.comm().size(), ex_.comm().rank()),
                   options_.writer);
    // The snapshot, layer by layer (the update guard waits on it): a piece whose home is the
    // NVMe store's extent and starts where the piece does is copied file to file into the
    // data file now; every other piece is copied into the staging, to be written after.
    std::vector<bool> in_file(j.sources.size(), false);
    unique_fd arena;
    std::vector<float> scratch;
    for (std::size_t i = 0; i < ex_.size(); ++i) {
      for (int k = 0; k < 3; ++k) {
        const std::size_t at = 3 * i + static_cast<std::size_t>(k);
        const source& s = j.sources[at];
        const auto& piece = snap_.pieces[at];
        const std::size_t held = k == 0 ? ex_.stored_numel(i) : ex_.part_numel(i);
        if (s.home.file && s.copied.empty() && held_offset(ex_, i, k) == piece.shard.offset()) {
          const io::nvme_store::extent_view ext = ex_.ctx().nvme().committed_extent(s.home.file);
          if (!arena) arena = j.pending->ops().open_read(AT_FDCWD, ext.path, ext.path);
          j.kernel_copied += w.add_copy(piece_desc(piece), arena.get(), ext);
          j.file_copied += ext.written ? std::min<std::uint64_t>(ext.bytes, w.current().tensors.back().bytes) : 0;
          in_file[at] = true;
          continue;
        }
        const float* from = held == 0 ? nullptr : s.copied.empty() ? s.home.host : s.copied.data();
        if (held && !from) {  // an NVMe home laid out otherwise: read through the store
          scratch.resize(held);
          ex_.ctx().nvme().read(s.home.file, 0, scratch.data(), held * sizeof(float));
          from = scratch.data();
        }
        fill_piece(snap_, ex_, i, k, from);
      }
      std::lock_guard lock(mutex_);
      snapshotted_ = i + 1;
      cv_.notify_all();
    }
    over();
    j.snapshot = detail::seconds_since(t0);
    const auto t1 = std::chrono::steady_clock::now();
    for (std::size_t at = 0; at < snap_.pieces.size(); ++at)
      if (!in_file[at]) w.add(piece_desc(snap_.pieces[at]), piece_bytes(snap_, snap_.pieces[at]));
    const manifest& m = w.finish();
    for (const auto& e : m.tensors) j.bytes = std::max<std::uint64_t>(j.bytes, e.offset + e.bytes);
    j.write = detail::seconds_since(t1);
  } catch (...) {
    over();
    throw;
  }
}

template <class Executor>
void saver<Executor>::guard(std::size_t layer) {
  std::unique_lock lock(mutex_);
  if (snapshot_over_ || snapshotted_ > layer) return;
  const auto t0 = std::chrono::steady_clock::now();
  ++guard_waits_;
  cv_.wait(lock, [&] { return snapshot_over_ || snapshotted_ > layer; });
  guard_stall_ += detail::seconds_since(t0);
}

template <class Executor>
save_report saver<Executor>::report_of(job& j, bool committed, std::string error) {
  save_report r;
  r.tag = j.tag;
  r.step = j.step;
  r.committed = committed;
  r.error = std::move(error);
  {
    std::lock_guard lock(mutex_);
    r.stall_seconds = j.stall + guard_stall_;
  }
  r.persist_seconds = detail::seconds_since(j.started);
  r.bytes = j.bytes;
  r.file_copied_bytes = j.file_copied;
  r.kernel_copied_bytes = j.kernel_copied;
  r.snapshot_seconds = j.snapshot;
  r.write_seconds = j.write;
  r.commit_seconds = j.commit;
  if (!r.error.empty()) notice(who() + ": checkpoint '" + j.tag + "' failed: " + r.error);
  return r;
}

template <class Executor>
std::optional<save_report> saver<Executor>::advance(bool wait) {
  if (phase_ == phase::idle) return std::nullopt;
  job& j = *job_;
  if (phase_ == phase::persisting) {
    if (wait) {
      try {
        j.persisted.wait();
      } catch (...) {  // read below, from the event
      }
    }
    const bool done = j.persisted.ready();
    const std::exception_ptr failure = done ? j.persisted.failure() : nullptr;
    float counts[2] = {done ? 1.0f : 0.0f, failure ? 1.0f : 0.0f};
    ex_.comm().all_reduce(counts, counts, 2, comm::reduce_op::sum).wait();
    if (counts[0] < static_cast<float>(ex_.comm().size())) return std::nullopt;  // not yet
    if (counts[1] > 0) {
      phase_ = phase::idle;
      if (j.pending) j.pending->abandon();  // rank 0 removes TAG.partial/
      std::string why = failure ? detail::message_of(failure)
                                : "another rank's files failed (its report names why)";
      return report_of(j, false, std::move(why));
    }
    if (ex_.comm().rank() != 0) {  // its part is durable; rank 0 commits
      phase_ = phase::idle;
      return report_of(j, true, {});
    }
    j.committed = queue_.submit(span_kind::io_write, options_.name + " commit " + j.tag,
                                [&j] {
                                  const auto t0 = std::chrono::steady_clock::now();
                                  j.pending->commit();
                                  j.commit = detail::seconds_since(t0);
                                });
    phase_ = phase::committing;
  }
  // Rank 0, committing.
  if (!wait && !j.committed.ready()) return std::nullopt;
  std::string error;
  try {
    j.committed.wait();
  } catch (const std::exception& e) {
    error = e.what();
  }
  phase_ = phase::idle;
  const bool committed = j.pending->committed();
  if (!committed) j.pending->abandon();
  return report_of(j, committed, std::move(error));
}

}  // namespace checkpoint
STRATA_NAMESPACE_END
