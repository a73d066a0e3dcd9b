// examples/gpt/run_checkpoints.hpp — gpt_train's checkpoints: resume from `latest`, save every
// N steps in the background, and a last one on a stop or at the end.
//
// What this is: run_checkpoints<Trainer>, the part of train.cpp that drives strata's
// checkpoint::saver for one rank of the mini-GPT: what a checkpoint's metadata holds besides
// the training state (the model's shape, which a resumed run and gpt_export check; the data
// position, which is the step: data.hpp's batch order is a pure function of the step and the
// seed, so the step and the seed are the whole of the data and RNG state), when to save, and
// the line a progress report gets. What it is not: the saver (include/strata/checkpoint/) or
// the training step (trainer.hpp).
//
// The kill -9 drill's seam: with STRATA_GPT_HOLD=<commit phase>:<n> in the environment (e.g.
// "renamed:2"), rank 0's checkpoint queue, on the n-th time it completes that phase, creates
// the file STRATA_GPT_HOLD_MARKER names and stops there for good — so a test can SIGKILL the
// process at exactly that instant of a commit, and then check that resuming loses nothing.
#pragma once

#include "train_options.hpp"
#include "trainer.hpp"

#include <strata/checkpoint/saver.hpp>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

namespace gpt {

inline nlohmann::json model_json(const gpt_config& c) {
  return {{"vocab", c.vocab}, {"context", c.context}, {"layers", c.layers}, {"heads", c.heads},
          {"width", c.width}};
}

/// The test seam described at the top (empty when STRATA_GPT_HOLD is not set).
inline strata::checkpoint::phase_hook hold_hook_from_environment() {
  const char* spec = std::getenv("STRATA_GPT_HOLD");
  const char* marker = std::getenv("STRATA_GPT_HOLD_MARKER");
  if (!spec || !marker) return {};
  const std::string s = spec;
  const auto colon = s.find(':');
  const std::string phase = s.substr(0, colon);
  const int nth = colon == std::string::npos ? 1 : std::atoi(s.c_str() + colon + 1);
  auto seen = std::make_shared<int>(0);
  const std::string mark = marker;
  return [=](const strata::checkpoint::phase_event& e) {
    if (phase != strata::checkpoint::commit_phase_name(e.phase) || ++*seen != nth) return;
    const int fd = ::open(mark.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      const std::string what = phase + " " + std::string(e.tag) + "\n";
      (void)!::write(fd, what.data(), what.size());
      ::close(fd);
    }
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));  // until the test's SIGKILL
  };
}

template <class Trainer>
class run_checkpoints {
public:
  using executor_type = typename Trainer::executor_type;
  using saver_type = strata::checkpoint::saver<executor_type>;
  using say_fn = std::function<void(const std::string&)>;

  /// Opens --checkpoint-dir (a collective; rank 0 removes and reports what a crash left).
  run_checkpoints(Trainer& tr, const train_options& o, int rank, say_fn say)
      : tr_(tr), o_(o), say_(std::move(say)) {
    strata::checkpoint::saver_options so;
    so.directory = o.checkpoint_dir;
    so.keep = static_cast<std::size_t>(o.keep);
    so.on_notice = [this](const std::string& line) { say_("   checkpoint: " + line + "\n"); };
    if (rank == 0) so.on_phase = hold_hook_from_environment();
    saver_.emplace(tr.executor(), tr.optimizer(), std::move(so));
  }

  /// With --resume: loads `latest` (checking that it is this model) and returns the number of
  /// steps it had done; 0 when there is no checkpoint yet (a fresh start) or without --resume.
  int resume() {
    if (!o_.resume) return 0;
    const auto tag = saver_->latest();
    if (!tag) {
      say_("   checkpoint: none in '" + o_.checkpoint_dir + "' yet: a fresh start\n");
      return 0;
    }
    // The model first, from the manifest alone, so that another model's checkpoint is refused
    // by its shape rather than by the first tensor that does not fit.
    {
      strata::checkpoint::checkpoint_reader head(saver_->root(), *tag);
      check_same_run(head.of_rank(0).metadata, *tag);
    }
    const strata::checkpoint::loaded_state at = saver_->load(*tag);
    say_("   checkpoint: resumed from '" + o_.checkpoint_dir + "/" + at.tag + "' (step " +
         std::to_string(at.step) + ", saved by " + std::to_string(at.saved_world) + " rank(s))\n");
    return static_cast<int>(at.step);
  }

  /// After `done` steps: moves a checkpoint in flight on, and starts one when one is due
  /// (every --save-every steps) or `last` (the final step, or a stop). A collective.
  void after_step(int done, bool last) {
    const bool due = o_.save_every > 0 && done % o_.save_every == 0;
    if (!due && !last) {
      if (auto r = saver_->poll()) note(*r);
      return;
    }
    // The previous checkpoint ends first (it has had a step or more to persist).
    if (auto r = saver_->finish()) note(*r);
    saver_->save("step-" + std::to_string(done), static_cast<std::uint64_t>(done), metadata(done));
  }

  /// Waits for the checkpoint in flight (a collective); true when it committed (or none was).
  bool finish() {
    if (auto r = saver_->finish()) {
      note(*r);
      return r->committed;
    }
    return true;
  }

  /// What the progress line shows of the checkpoint that ended since the last call ("" if none).
  std::string progress() { return std::exchange(line_, std::string()); }
  std::optional<std::string> latest() const { return saver_->latest(); }

private:
  nlohmann::json metadata(int done) const {
    const auto& t = o_.train;
    return {{"model", model_json(t.model)},
            {"data_position", done},  // the next step's batch: data.hpp's order is f(step, seed)
            {"seed", t.seed},
            {"global_batch", {{"ranks", o_.ranks}, {"batch", t.batch}, {"accum", t.accum}, {"seq", t.seq}}},
            {"policy", o_.policy},
            {"steps", t.steps}};
  }

  void check_same_run(const nlohmann::json& meta, const std::string& tag) const {
    const std::string where = "--resume: checkpoint '" + o_.checkpoint_dir + "/" + tag + "'";
    if (!meta.contains("model"))
      throw strata::config_error(where + " has no model config: not gpt_train's");
    const nlohmann::json want = model_json(o_.train.model);
    for (auto it = want.begin(); it != want.end(); ++it)
      if (meta["model"].value(it.key(), -1) != it.value().template get<int>())
        throw strata::config_error(where + " is of a model with " + it.key() + " " +
                                   meta["model"].value(it.key(), nlohmann::json()).dump() +
                                   ", this run's has " + it.value().dump() +
                                   " (give the same model options, or another --checkpoint-dir)");
    const auto& t = o_.train;
    if (meta.value("seed", t.seed) != t.seed)
      say_("   checkpoint: note: saved with --seed " + meta["seed"].dump() +
           "; this run's data order follows --seed " + std::to_string(t.seed) + "\n");
    if (meta.value("steps", t.steps) != t.steps)
      say_("   checkpoint: note: saved by a run of " + meta["steps"].dump() +
           " steps; the learning-rate schedule now follows --steps " + std::to_string(t.steps) + "\n");
  }

  void note(const strata::checkpoint::save_report& r) {
    char buf[256];
    if (r.error.empty())
      std::snprintf(buf, sizeof buf, " | ckpt %s %s (stall %.1f ms, %.0f ms, %.1f MiB/rank)",
                    r.tag.c_str(), r.committed ? "saved" : "not saved", r.stall_seconds * 1e3,
                    r.persist_seconds * 1e3, static_cast<double>(r.bytes) / (1 << 20));
    else
      std::snprintf(buf, sizeof buf, " | ckpt %s FAILED (see above; training goes on)", r.tag.c_str());
    line_ = buf;
  }

  Trainer& tr_;
  const train_options& o_;
  say_fn say_;
  std::optional<saver_type> saver_;
  std::string line_;
};

}  // namespace gpt
