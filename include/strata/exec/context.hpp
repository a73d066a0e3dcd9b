// strata/exec/context.hpp — everything with state, in one value passed by reference.
//
// A context owns the per-tier budgets and memory resources (budgeted, over pools), the pinned
// staging ring, the copy queues, the compute stream and the trace recorder. Tensors, sequences
// and (later) executors keep a reference to it, so it must outlive them. Policies are types;
// this is where their state lives.
//
// Compute: in the host build, compute runs on the calling thread (the "compute queue" is the
// caller, which is what an in-order stream with a synchronous host is); in the CUDA build it is
// a CUDA stream that kernels are launched on — `compute_stream()`. `compute(label, fn)` wraps a
// piece of compute in a trace span either way (on the GPU, timed by events on the stream).
//
// Retired memory: a buffer dropped while copies may still use it (an evicted slot whose
// write-back is running) is given back as soon as those copies have ended — not at a fixed
// later point, but by whoever next touches the context: a budget query, memory_report,
// allocate, a copy, compute, synchronize, retire. The memory cannot be given back from the
// copy's own completion (a CUDA host callback may not free CUDA memory), so the emulated device
// does exactly what the GPU does: after `t.to_vector()` has waited for a write-back, the
// device budget no longer counts the evicted slot.
#pragma once

#include <strata/exec/copy_engine.hpp>
#include <strata/memory/buffer.hpp>
#include <strata/memory/pool.hpp>
#if !STRATA_ENABLE_CUDA
#  include <strata/memory/emulated_device.hpp>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

STRATA_NAMESPACE_BEGIN

struct context_config {
  /// Budget of each tier, in bytes. In the host build `device_bytes` is also the capacity of
  /// the emulated device arena.
  std::size_t device_bytes = std::size_t{1} << 30;
  std::size_t pinned_bytes = std::size_t{1} << 30;
  std::size_t host_bytes = tier_budget::unlimited;
  std::size_t nvme_bytes = tier_budget::unlimited;
  /// The pinned staging ring (counted in the pinned budget): slots x slot_bytes.
  std::size_t staging_slot_bytes = std::size_t{4} << 20;
  std::size_t staging_slots = 4;
  /// Record spans for the trace.
  bool trace = true;
  /// CUDA device ordinal (CUDA build only).
  int device = 0;
  /// The NVMe tier: a directory on a local (ideally NVMe) file system where this rank's arena
  /// file is created. Empty: no NVMe tier; tensors with an nvme home are refused.
  std::string nvme_directory{};
  /// Keep the arena file after the context ends (for inspection); removed otherwise.
  bool keep_nvme_files = false;
  /// This process's rank: names the arena file.
  int rank = 0;
  /// CRC-32C granularity of NVMe data; the staging slot size must be a multiple of it.
  std::size_t nvme_checksum_block = std::size_t{1} << 20;
  /// The IO engine (io_uring or the pread/pwrite pool), block size, queue depth.
  io::engine_config io{};
  /// Wraps the IO engine the context picked (tests put an io::faulty around it; a profiler
  /// could count bytes). Empty: the engine is used as it is.
  std::function<std::unique_ptr<io::engine>(std::unique_ptr<io::engine>)> wrap_io_engine{};
};

class context {
public:
  explicit context(const context_config& config = {})
      : config_(config), trace_(config.trace),
        budgets_{tier_budget{tier_id::device, config.device_bytes},
                 tier_budget{tier_id::pinned, config.pinned_bytes},
                 tier_budget{tier_id::host, config.host_bytes},
                 tier_budget{tier_id::nvme, config.nvme_bytes}},
        device_upstream_(make_device_upstream(config)),
        pools_{std::make_unique<pool_resource>(*device_upstream_),
               std::make_unique<pool_resource>(pinned_upstream_),
               std::make_unique<pool_resource>(host_upstream_)},
        budgeted_{budgeted_resource{*pools_[0], budgets_[0]},
                  budgeted_resource{*pools_[1], budgets_[1]},
                  budgeted_resource{*pools_[2], budgets_[2]}},
        ring_(budgeted_[1], config.staging_slot_bytes, config.staging_slots),
        nvme_(make_nvme_store(config, budgeted_[1], ring_)),
        copies_(trace_, ring_, budgeted_[0], nvme_.get(), config.device) {
#if STRATA_ENABLE_CUDA
    check_cuda(cudaStreamCreateWithFlags(&compute_stream_, cudaStreamNonBlocking),
               "compute stream");
#endif
  }

  ~context() {
    try {
      synchronize();
    } catch (...) {  // a failed copy nobody waited for: nothing left to report it to
    }
    reap_retired(true);
#if STRATA_ENABLE_CUDA
    cudaStreamDestroy(compute_stream_);
#endif
  }
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  const context_config& config() const noexcept { return config_; }
  trace_recorder& trace() noexcept { return trace_; }
  /// A tier's budget; what it counts is current: retired memory whose copies have ended has
  /// been given back first.
  tier_budget& budget(tier_id t) noexcept {
    reap_retired(false);
    return budgets_[static_cast<std::size_t>(t)];
  }
  const tier_budget& budget(tier_id t) const noexcept {
    reap_retired(false);
    return budgets_[static_cast<std::size_t>(t)];
  }
  staging_ring& staging() noexcept { return ring_; }
  copy_engine& copies() noexcept {
    reap_retired(false);
    return copies_;
  }

  /// The budgeted, pooled resource of an addressable tier.
  memory_resource& resource(tier_id t) {
    reap_retired(false);
    if (t == tier_id::nvme)
      throw config_error("tier nvme has no memory resource: it is reached through an IO engine");
    return budgeted_[static_cast<std::size_t>(t)];
  }

  /// The cache under a tier's budget: blocks freed by tensors wait there for the next request.
  pool_resource& pool(tier_id t) {
    resource(t);  // refuses nvme
    return *pools_[static_cast<std::size_t>(t)];
  }

  /// `bytes` on tier `t` for `what` (a tensor name, "staging ring", ...). When the budget is
  /// short, waits for buffers still held by in-flight copies to come back, then tries again.
  buffer allocate(tier_id t, std::size_t bytes, std::string_view what) {
    reap_retired(false);
    memory_resource& r = resource(t);
    const std::size_t align = alignment_of(t);
    try {
      return buffer(r, bytes, align, what);
    } catch (const out_of_budget&) {
      if (!reap_retired(true)) throw;
      return buffer(r, bytes, align, what);
    }
  }

  /// Frees `b` once every event in `after` has completed (a copy may still read or write it):
  /// at once if they have, else at the first touch of the context after they have.
  void retire(buffer&& b, std::vector<event> after) {
    if (!b) return;
    auto owner = std::make_shared<buffer>(std::move(b));
    retire([owner]() mutable { owner->reset(); }, std::move(after));
  }

  /// Runs `release` (giving back memory, an NVMe extent, budget) once every event in `after`
  /// has completed.
  void retire(std::function<void()> release, std::vector<event> after) {
    reap_retired(false);
    if (std::all_of(after.begin(), after.end(), [](const event& e) { return e.ready(); })) {
      release();
      return;
    }
    std::lock_guard lock(retire_mutex_);
    retired_.push_back({std::move(release), std::move(after)});
    retired_count_.store(retired_.size(), std::memory_order_release);
  }

  event copy(void* dst, tier_id to, const void* src, tier_id from, std::size_t bytes,
             std::string label, std::vector<event> after = {}) {
    return copies().copy(dst, to, src, from, bytes, std::move(label), std::move(after));
  }

  /// The NVMe tier's storage; throws config_error when the context has none.
  io::nvme_store& nvme() {
    if (!nvme_)
      throw config_error("this context has no NVMe tier: set context_config::nvme_directory to a "
                         "directory on a local NVMe drive");
    return *nvme_;
  }
  bool has_nvme() const noexcept { return nvme_ != nullptr; }

  /// Runs `fn` as compute, recorded as a span on the compute queue. Host build: runs it now on
  /// this thread. CUDA build: `fn` launches work on compute_stream(); the span is stamped by the
  /// stream itself. Returns an event for the end of that work.
  template <class F>
  event compute(std::string label, F&& fn) {
    reap_retired(false);
#if STRATA_ENABLE_CUDA
    auto mark = trace_.begin_on(compute_stream_);
    try {
      std::forward<F>(fn)();
    } catch (...) {
      try {
        trace_.end_on(compute_stream_, std::move(mark), "compute", span_kind::compute,
                      std::move(label));
      } catch (...) {  // the compute's own failure is the one to report
      }
      throw;
    }
    trace_.end_on(compute_stream_, std::move(mark), "compute", span_kind::compute,
                  std::move(label));
    return event::recorded_on(compute_stream_);
#else
    trace_recorder::scope span(trace_, "compute", span_kind::compute, std::move(label));
    std::forward<F>(fn)();
    return {};
#endif
  }

  /// An event for the end of all compute issued so far (already complete in the host build).
  event compute_fence() {
    reap_retired(false);
#if STRATA_ENABLE_CUDA
    return event::recorded_on(compute_stream_);
#else
    return {};
#endif
  }

#if STRATA_ENABLE_CUDA
  cudaStream_t compute_stream() const noexcept { return compute_stream_; }
#endif

  /// Waits for all compute and copies issued so far; rethrows a copy's failure.
  void synchronize() {
    compute_fence().wait();
    copies_.synchronize();
    reap_retired(false);
#if STRATA_ENABLE_CUDA
    trace_.resolve_device_spans(false);  // all their work has ended: nothing waits here
#endif
  }

  /// One line per tier: in use, peak and budget.
  std::string memory_report() const {
    reap_retired(false);
    std::string s;
    char line[200];
    for (auto& b : budgets_) {
      auto lim = b.limit() == tier_budget::unlimited ? std::string("unlimited")
                                                     : format_bytes(b.limit());
      std::snprintf(line, sizeof line, "  %-18s in use %-28s peak %-28s budget %s\n",
                    tier_name(b.tier()), format_bytes(b.used()).c_str(),
                    format_bytes(b.peak()).c_str(), lim.c_str());
      s += line;
    }
    return s;
  }

  static constexpr std::size_t alignment_of(tier_id t) noexcept {
    switch (t) {
    case tier_id::device: return tier::device::alignment;
    case tier_id::pinned: return tier::pinned::alignment;
    case tier_id::host: return tier::host::alignment;
    case tier_id::nvme: return tier::nvme::alignment;
    }
    return 1;
  }

private:
  static std::unique_ptr<memory_resource> make_device_upstream(const context_config& c) {
#if STRATA_ENABLE_CUDA
    const cuda_discovery found = cuda_discover();
    if (found.devices <= c.device)
      throw config_error("context: CUDA device " + std::to_string(c.device) +
                         " is not available (" +
                         (found.devices > 0 ? std::to_string(found.devices) + " found"
                                            : found.why_none()) +
                         "; this build needs a GPU; use the host build to run on the emulated "
                         "device)");
    check_cuda(cudaSetDevice(c.device), "cudaSetDevice");
    return std::make_unique<cuda_device_resource>(c.device);
#else
    return std::make_unique<emulated_device_arena>(c.device_bytes);
#endif
  }

  /// Frees retired buffers whose copies are done (all of them, waiting, if `wait`).
  /// Returns true if anything was freed. Const because it only brings the accounting up to
  /// date: what a caller can observe is as if each buffer had gone back when its copies ended.
  bool reap_retired(bool wait) const noexcept {
    if (retired_count_.load(std::memory_order_acquire) == 0) return false;  // the common case
    std::vector<retired_buffer> keep, done;
    try {
      std::lock_guard lock(retire_mutex_);
      keep.reserve(retired_.size());  // so that moving the entries below cannot throw
      done.reserve(retired_.size());
      for (auto& r : retired_) {
        bool ready = true;
        for (auto& e : r.after) ready = ready && (wait || e.ready());
        (ready ? done : keep).push_back(std::move(r));
      }
      retired_ = std::move(keep);
      retired_count_.store(retired_.size(), std::memory_order_release);
    } catch (...) {  // no memory for the lists (or a failing query): the next touch tries again
      return false;
    }
    for (auto& r : done) {
      for (auto& e : r.after)
        try {
          e.wait();
        } catch (...) {  // the copy's owner hears of the failure through its own event
        }
      try {
        r.release();
      } catch (...) {  // releases give back memory and extents, which do not fail
      }
    }
    return !done.empty();
  }

#if STRATA_ENABLE_CUDA
  cudaStream_t compute_stream_ = nullptr;
#endif

  struct retired_buffer {
    std::function<void()> release;
    std::vector<event> after;
  };

  static std::unique_ptr<io::nvme_store> make_nvme_store(const context_config& c,
                                                         memory_resource& pinned,
                                                         const staging_ring& ring) {
    if (c.nvme_directory.empty()) return nullptr;
    if (ring.slot_bytes() % c.nvme_checksum_block != 0)
      throw config_error("context: the staging slot size (" + format_bytes(ring.slot_bytes()) +
                         ") must be a multiple of the NVMe checksum block (" +
                         format_bytes(c.nvme_checksum_block) + ")");
    io::nvme_config nc;
    nc.directory = c.nvme_directory;
    nc.rank = c.rank;
    nc.keep_files = c.keep_nvme_files;
    nc.checksum_block = c.nvme_checksum_block;
    nc.engine = c.io;
    std::string notice;
    auto engine = io::make_engine(c.io, notice);
    if (c.wrap_io_engine) engine = c.wrap_io_engine(std::move(engine));
    auto store = std::make_unique<io::nvme_store>(nc, pinned, std::move(engine), notice);
    if (!store->notice().empty()) std::fprintf(stderr, "strata: %s\n", store->notice().c_str());
    return store;
  }

  context_config config_;
  trace_recorder trace_;
  std::array<tier_budget, tier_count> budgets_;
  aligned_host_resource host_upstream_;
  pinned_resource pinned_upstream_;
  std::unique_ptr<memory_resource> device_upstream_;
  std::array<std::unique_ptr<pool_resource>, 3> pools_;  // under the budgets: idle blocks
  std::array<budgeted_resource, 3> budgeted_;            // do not count as used
  mutable std::mutex retire_mutex_;
  mutable std::vector<retired_buffer> retired_;
  mutable std::atomic<std::size_t> retired_count_{0};  // retired_.size(), read without the lock
  staging_ring ring_;
  std::unique_ptr<io::nvme_store> nvme_;
  copy_engine copies_;  // last: its queues stop first, while everything they use still exists
};

STRATA_NAMESPACE_END
