// strata/exec/context.hpp — everything with state, in one value passed by reference.
//
// A context owns the per-tier budgets and memory resources (budgeted, over pools), the pinned
// staging ring, the copy queues, the compute stream and the trace recorder. Tensors, sequences
// and executors keep a reference to it, so it must outlive them. Policies are types;
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
#include <strata/memory/default_resource.hpp>
#include <strata/memory/pool.hpp>
#include <strata/memory/tier_list.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN

struct context_config {
  /// Budget of each tier, in bytes. In the host build `device_bytes` is also the capacity of
  /// the emulated device arena.
  std::size_t device_bytes = std::size_t{1} << 30;
  std::size_t pinned_bytes = std::size_t{1} << 30;
  std::size_t host_bytes = tier_budget::unlimited;
  std::size_t nvme_bytes = tier_budget::unlimited;
  /// Budgets of tiers of your own (a context built with a tier_list that adds them), by id;
  /// such a tier not listed here is unlimited.
  std::vector<std::pair<tier_id, std::size_t>> tier_bytes{};
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

  /// The budget of tier t: the named field for the library's tiers, tier_bytes for others.
  std::size_t budget_of(tier_id t) const noexcept {
    switch (t) {
    case tier_id::device: return device_bytes;
    case tier_id::pinned: return pinned_bytes;
    case tier_id::host: return host_bytes;
    case tier_id::nvme: return nvme_bytes;
    }
    for (auto& [id, bytes] : tier_bytes)
      if (id == t) return bytes;
    return tier_budget::unlimited;
  }
};

class context {
public:
  /// A context with the library's four tiers (standard_tiers).
  explicit context(const context_config& config = {}) : context(config, standard_tiers{}) {}

  /// A context with the tiers of `list`: each gets a budget (context_config), its
  /// default_resource under a pool, and its routes from copy_route. The list must hold the
  /// library's four tiers (compute, staging, the host side of assign/copy_to, the NVMe tier),
  /// plus any tiers of your own.
  template <memory_tier... Tiers>
  context(const context_config& config, tier_list<Tiers...> list)
      : config_(config), trace_(config.trace), table_(list), tiers_(make_tiers(config, list)),
        ring_(*tiers_[index(tier_id::pinned)]->budgeted, config.staging_slot_bytes,
              config.staging_slots),
        nvme_(make_nvme_store(config, *tiers_[index(tier_id::pinned)]->budgeted, ring_)),
        copies_(trace_, table_, ring_, *tiers_[index(tier_id::device)]->budgeted, nvme_.get(),
                config.device) {
    using L = tier_list<Tiers...>;
    static_assert(L::template contains<tier::device> && L::template contains<tier::pinned> &&
                      L::template contains<tier::host> && L::template contains<tier::nvme>,
                  "context: a tier list holds tier::device, tier::pinned, tier::host and "
                  "tier::nvme, plus any tiers of your own");
    static_assert(((Tiers::kind != tier_kind::file || std::is_same_v<Tiers, tier::nvme>) && ...),
                  "context: tier::nvme is the only file tier (its bytes go through the context's "
                  "nvme_store); a tier of your own must be host or device memory");
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
  /// The context's tiers: their traits (fastest first) and the route of every pair.
  const tier_table& tiers() const noexcept { return table_; }
  /// A tier's budget; what it counts is current: retired memory whose copies have ended has
  /// been given back first. config_error for a tier the context was not given.
  tier_budget& budget(tier_id t) {
    reap_retired(false);
    return tiers_[index(t)]->budget;
  }
  const tier_budget& budget(tier_id t) const {
    reap_retired(false);
    return tiers_[index(t)]->budget;
  }
  staging_ring& staging() noexcept { return ring_; }
  copy_engine& copies() noexcept {
    reap_retired(false);
    return copies_;
  }

  /// The budgeted, pooled resource of an addressable tier.
  memory_resource& resource(tier_id t) {
    reap_retired(false);
    tier_state& st = *tiers_[index(t)];
    if (!st.budgeted)
      throw config_error(std::string("tier ") + st.info.name +
                         " has no memory resource: it is reached through an IO engine");
    return *st.budgeted;
  }

  /// The cache under a tier's budget: blocks freed by tensors wait there for the next request.
  pool_resource& pool(tier_id t) {
    resource(t);  // refuses a file tier
    return *tiers_[index(t)]->pool;
  }

  /// `bytes` on tier `t` for `what` (a tensor name, "staging ring", ...). When the budget is
  /// short, waits for buffers still held by in-flight copies to come back, then tries again.
  buffer allocate(tier_id t, std::size_t bytes, std::string_view what) {
    reap_retired(false);
    memory_resource& r = resource(t);
    const std::size_t align = table_.info(t).alignment;
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

  [[nodiscard]] event copy(void* dst, tier_id to, const void* src, tier_id from, std::size_t bytes,
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
    for (const tier_info& t : table_.all()) {
      const tier_budget& b = tiers_[index(t.id)]->budget;
      auto lim = b.limit() == tier_budget::unlimited ? std::string("unlimited")
                                                     : format_bytes(b.limit());
      std::snprintf(line, sizeof line, "  %-18s in use %-28s peak %-28s budget %s\n",
                    t.name, format_bytes(b.used()).c_str(),
                    format_bytes(b.peak()).c_str(), lim.c_str());
      s += line;
    }
    return s;
  }

private:
  // A tier's state: its budget, and for addressable tiers the upstream resource, the pool over
  // it and the budget over the pool (destroyed in reverse: the pool returns its blocks to the
  // upstream, and both before the budget they are charged to).
  struct tier_state {
    tier_state(const tier_info& i, std::size_t limit, std::unique_ptr<memory_resource> up)
        : info(i), budget(i.id, limit, i.name), upstream(std::move(up)),
          pool(upstream ? std::make_unique<pool_resource>(*upstream) : nullptr),
          budgeted(pool ? std::make_unique<budgeted_resource>(*pool, budget) : nullptr) {}
    tier_info info;
    tier_budget budget;
    std::unique_ptr<memory_resource> upstream;
    std::unique_ptr<pool_resource> pool;  // under the budget: idle blocks do not count as used
    std::unique_ptr<budgeted_resource> budgeted;
  };
  using tier_states = std::array<std::unique_ptr<tier_state>, tier_table::id_space>;  // by id

  template <memory_tier... Tiers>
  static tier_states make_tiers(const context_config& c, tier_list<Tiers...>) {
    tier_states states;
    auto add = [&]<class Tier>(std::type_identity<Tier>) {
      const std::size_t limit = c.budget_of(Tier::id);
      states[static_cast<std::size_t>(Tier::id)] = std::make_unique<tier_state>(
          tier_info_of<Tier>, limit, default_resource<Tier>::make({limit, c.device}));
    };
    (add(std::type_identity<Tiers>{}), ...);
    return states;
  }

  // tiers_'s index of tier t; config_error (naming the id) for a tier the context lacks.
  std::size_t index(tier_id t) const {
    table_.position(t);  // refuses an absent tier with its message
    return static_cast<std::size_t>(t);
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
  tier_table table_;
  tier_states tiers_;
  mutable std::mutex retire_mutex_;
  mutable std::vector<retired_buffer> retired_;
  mutable std::atomic<std::size_t> retired_count_{0};  // retired_.size(), read without the lock
  staging_ring ring_;
  std::unique_ptr<io::nvme_store> nvme_;
  copy_engine copies_;  // last: its queues stop first, while everything they use still exists
};

STRATA_NAMESPACE_END
