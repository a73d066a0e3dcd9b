// strata/schedule/executor.hpp — the ZeRO layer executor: walks a model's layers forward and
// backward across ranks, moving and collecting their parameters and gradients in the
// background.
//
//   zero_executor<Comm, Bundle, prefetch::lookahead<2>> ex(ctx, comm, {{"layer0", n0}, ...});
//   ex.forward([&](std::size_t i, const float* w, std::size_t n) { ... });          // layer i
//   ex.backward([&](std::size_t i, const float* w, float* dw, std::size_t n) { ... });
//   (w is the bundle's working_type: const bf16* for a bf16 bundle, e.g. zero3_infinity_bf16)
//   ex.step([&](std::size_t i, float* w, const float* dw, std::size_t n) { ... });   // optimizer
//   ex.backward(g, u);   // stage 3: backward with the update fused in, no step()
//   ex.backward(g, grad_mode::accumulate);   // a later micro-batch: add to the stored gradient
//   ex.for_each_grad_shard([&](std::size_t i, const float* g, std::size_t n) { ... });
//
// Prefetch is the policy tensor_sequence takes: prefetch::lookahead<Depth> keeps the next Depth
// layers in flight (Depth+1 buffers), prefetch::none brings each layer when it is reached.
// The bundle's placements say where the state lives and whether it is sharded; the executor's
// tensors are made from them and reached only through their public handles (tensor_ref).
//
// Forward, for layer i: wait for its parameters on the compute tier; start bringing layer
// i+Depth (fetch its shard from the home tier, then all-gather it: stage 3; or fetch the
// replica: stages 0-2); run the caller's compute on i; release i. Backward walks in reverse,
// re-gathering, runs the caller's backward into a gradient buffer on the compute tier, then
// reduces the gradient across ranks (reduce-scatter into this rank's shard for stages 2-3,
// all-reduce for 0-1) and writes the result to its home tier. Copies (h2d, d2h, io-read,
// io-write), collectives (their own queue) and compute overlap; all of it is in the trace.
// step() runs the caller's optimizer update on each layer's state on the bundle's optimizer
// tier: this rank's shard for stages 1-3 (then, for 1-2, all-gathers the updated replicas).
// The update runs on a copy of this rank's part (a scratch buffer on the optimizer tier; for
// an NVMe home the buffer the shard is read into) and that copy goes home only when the update
// returned: an update that throws leaves the parameters at home as they were (the layers
// already updated in that step stay updated). The fused backward keeps the same promise.
//
// The deferred step: defer_step(u) is step(u) run during the next forward(), in layer order,
// on the executor's optimizer queue (its own thread), and the forward brings layer i as soon as
// layer i's update has ended — so the step's IO (an NVMe home reads and writes every shard,
// gradient and moment) runs under the forward's compute instead of before it. This is the
// schedule for a clipped step: the norm is known only when the backward has ended, and the next
// forward needs layer 0 first, then layer 1, ... Results are bitwise those of step(u) then
// forward(f): the same updates on the same bytes, only later. With an NVMe home the forward
// takes layer i's new parameters (the bf16 copy, or the fp32 shard) from the memory its update
// wrote them home from, once that write has succeeded, instead of reading them back: 4 (fp32)
// or 2 (bf16) bytes per parameter less NVMe traffic per step, the same bytes. Until the
// forward has reached
// every layer the step is pending (step_deferred()); sync() and everything that reads or writes
// the state (params(), stored_home(), set_params(), backward(), step(), for_each_grad_shard())
// first lets it end. It runs on the queue for stages 0 and 3 with an optimizer tier the host
// updates (host, pinned, nvme homes; the emulated device); elsewhere (a real GPU's home, whose
// update is a kernel on the compute stream anyway, or stages 1-2, whose update all-gathers over
// the communicator the caller also uses) defer_step(u) is step(u), at once. A failed update
// reaches the caller at the forward's wait for that layer: the layers before it are updated,
// it and the ones after it are not (as with step()). The caller's forward compute must not call
// the executor while a step is deferred.
//
// bf16 working parameters (a bundle whose working_type is bf16, stage 3): each layer has, beside
// its fp32 master shard at home, a bf16 copy of it at home. The walks fetch and all-gather the
// copy, so forward(f) and backward(g) hand the caller const bf16* parameters, and every update
// writes the copy again from the new masters (rounded to nearest even) after the masters' own
// write — the event an optimizer's home_written waits for, so an NVMe home's moments commit
// only when both are home. set_params and set_stored_params write both. Gradients stay fp32
// (g writes float, reduced in fp32). The fused backward(g, u) is backward(g) then step(u) here:
// its update works on the gathered copy, which is no longer the master. A real GPU's home is
// refused at compile time (the copy would need a conversion kernel).
//
// Gradient accumulation (global batch = ranks x micro-batch x accumulation steps): the first
// micro-batch's backward(g) overwrites the gradient at home, each later backward(g,
// grad_mode::accumulate) adds its reduced gradient to it (home += reduced, in float, in
// micro-batch order), then one step(u) applies the sum. Every reduction is a mean over the
// ranks, so the caller divides by the number of micro-batches (the update's gradient
// multiplier is the natural place). The addition runs on the optimizer tier, one layer behind
// the backward walk, after that layer's reduction: simple rather than fast (it waits for the
// reduction); the overwriting backward is unchanged. The fused backward(g, u) does not
// accumulate: its gradients never go home.
//
// Memory: everything the executor holds is planned up front (plan(), memory_plan.hpp) and a
// plan that does not fit the budgets is refused in the constructor. On the compute tier it
// keeps Depth+1 gathered-parameter buffers (plus Depth+1 shard buffers when the home is not the
// device) and two gradient buffers, however many layers there are. A caller that will hold
// more beside the executor (activations, the optimizer's state: zero_adam::plan_for) adds those
// lines through the constructor's plan extension, so that the one check covers them too and a
// refusal shows every line.
//
// Reductions are deterministic (rank-order sums, comm/communicator.hpp), so a sharded step
// gives bitwise the same parameters as the same step on one rank that sums the ranks'
// gradients in rank order. Not thread-safe; one executor per rank.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/exec/buffer_ring.hpp>
#include <strata/schedule/memory_plan.hpp>
#include <strata/schedule/zero.hpp>
#include <strata/tensor/shard_layout.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN

/// Where a rank's state of a layer lives at home, for a reader on another thread (a
/// checkpoint's snapshot in the background): a host-readable pointer (a memory home the host
/// can read), or the handle of the NVMe store's tensor (a file home); neither where the home is
/// a real GPU (the reader must copy it through the executor instead).
struct home_source {
  const float* host = nullptr;
  io::nvme_store::handle file = 0;
  explicit operator bool() const noexcept { return host != nullptr || file != 0; }
};

/// One layer's parameters as the executor sees them: a name and a flat element count (the
/// layer's tensors back to back).
struct layer_spec {
  std::string name;
  std::size_t numel;
};

/// The watch of a backward that has none (backward(g, mode) is backward(g, mode, no_watch{})).
struct no_watch {
  void operator()(std::size_t, const float*, std::size_t, tier_id) const noexcept {}
};

/// How backward() lands a reduced gradient at home: overwrite (the first, or only, micro-batch)
/// or accumulate (add it to what is there: later micro-batches).
enum class grad_mode : std::uint8_t { overwrite, accumulate };

template <comm::communicator Comm, zero_policy Bundle, class Prefetch = prefetch::lookahead<1>>
class zero_executor {
  static_assert(prefetch_policy<Prefetch>,
                "zero_executor<Comm, Bundle, Prefetch>: Prefetch is prefetch::none or "
                "prefetch::lookahead<Depth>, as for tensor_sequence");

public:
  using bundle_type = Bundle;
  using prefetch_type = Prefetch;
  /// What the walks hand the caller: float, or bf16 for a bf16 bundle.
  using working_type = typename Bundle::working_type;
  static constexpr bool narrow = Bundle::narrow_working;
  using param_tensor = tiered_tensor<float, typename Bundle::param_placement>;
  using working_tensor = tiered_tensor<working_type, typename Bundle::param_placement>;
  using grad_tensor = tiered_tensor<float, typename Bundle::grad_placement>;
  using placement_type = typename Bundle::param_placement;
  using compute_tier = typename placement_type::compute_tier;
  using optimizer_tier = typename Bundle::optimizer_tier;
  static constexpr int stage = Bundle::stage;
  static constexpr std::size_t depth = Prefetch::depth;
  static constexpr bool resident = placement_type::tier_count == 1;  // home is the device
  static constexpr bool file_home = Bundle::home_tier::kind == tier_kind::file;
  static_assert(!(narrow && cuda_enabled && optimizer_tier::id == tier_id::device),
                "zero_executor: bf16 working parameters with a GPU home need a device conversion "
                "kernel; use a host, pinned or nvme home (zero3_offload_bf16, zero3_infinity_bf16)");

  /// Adds the caller's lines to the executor's plan before it is checked. It is called with
  /// the executor's layouts in place (size(), layer(), layout(), part_numel(), comm(), ctx()
  /// answer) and nothing allocated yet.
  using plan_extension = std::function<void(zero_executor&, memory_plan&)>;

  zero_executor(context& ctx, Comm& comm, std::vector<layer_spec> layers,
                std::string name = "model", const plan_extension& extend = {});

  /// The plan that zero_executor(ctx, comm, layers, name, extend) would check — the same lines
  /// and bytes, extension included — made without allocating anything or checking it against
  /// the budgets: what the planner (plan/) reads. With a comm::planned rank it is the plan of
  /// any rank of any world size.
  static memory_plan plan_for(context& ctx, Comm& comm, std::vector<layer_spec> layers,
                              std::string name = "model", const plan_extension& extend = {}) {
    return zero_executor(planning, ctx, comm, std::move(layers), std::move(name), extend).plan_;
  }

  ~zero_executor();
  zero_executor(const zero_executor&) = delete;
  zero_executor& operator=(const zero_executor&) = delete;

  const memory_plan& plan() const noexcept { return plan_; }
  std::size_t size() const noexcept { return specs_.size(); }
  const shard_layout& layout(std::size_t i) const { return layouts_[i]; }
  const layer_spec& layer(std::size_t i) const { return specs_[i]; }
  /// The communicator the executor reduces and gathers over (for collectives of its own, such
  /// as a global gradient norm).
  Comm& comm() noexcept { return comm_; }
  context& ctx() noexcept { return ctx_; }
  /// Elements of layer i that this rank's optimizer updates: everything for stage 0, its
  /// shard's real elements for stages 1-3 (the n that step()'s update gets).
  std::size_t part_numel(std::size_t i) const {
    return stage == 0 ? layouts_[i].numel() : layouts_[i].valid_in(comm_.rank());
  }
  /// Where that part starts in layer i (element offset): 0 for stage 0, the shard's offset
  /// otherwise. With part_numel, the global range the optimizer state of this rank covers.
  std::size_t part_offset(std::size_t i) const {
    return stage == 0 ? 0 : layouts_[i].offset(comm_.rank());
  }
  /// The global range of layer i's parameters this rank stores: its shard's real elements
  /// when the bundle shards parameters (stage 3), all of them otherwise.
  std::size_t stored_offset(std::size_t i) const {
    return Bundle::params_sharded ? layouts_[i].offset(comm_.rank()) : 0;
  }
  std::size_t stored_numel(std::size_t i) const {
    return Bundle::params_sharded ? layouts_[i].valid_in(comm_.rank()) : layouts_[i].numel();
  }
  /// What this rank stores of layer i's parameters (stored_numel values from stored_offset),
  /// read from home without any collective: what a checkpoint of this rank saves.
  std::vector<float> stored_params(std::size_t i);
  /// Sets what this rank stores of layer i (stored_numel values; the padding stays zeros):
  /// what a checkpoint restores, each rank from the byte ranges it owns. Not a collective.
  void set_stored_params(std::size_t i, std::span<const float> values);
  /// Where the stored parameters of layer i are at home (see home_source), after a sync():
  /// what a background reader may read, and nothing else of the executor's, while forward()
  /// and backward() run — not once step() or a set_params() rewrites layer i. Empty for a
  /// device home in a CUDA build.
  home_source stored_home(std::size_t i) {
    sync();
    if constexpr (file_home) {
      return {nullptr, params_.at(i).ref().home_file()};
    } else if constexpr (Bundle::home_tier::host_accessible) {
      return {static_cast<const float*>(params_.at(i).ref().data(Bundle::home_tier::id)), 0};
    } else {
      return {};
    }
  }

  /// Sets layer i's parameters from the full values (every rank passes the same; each keeps
  /// what its stage keeps: its shard, or the whole padded replica).
  void set_params(std::size_t i, std::span<const float> full);

  /// Layer i's full parameters on the host. A collective for stage 3 (all ranks must call it).
  std::vector<float> params(std::size_t i);

  /// f(i, params, n) for i = 0 .. size-1; params: n working_type values on the compute tier.
  template <class F>
  void forward(F&& f);

  /// g(i, params, grads, n) for i = size-1 .. 0; g writes all n gradients (compute tier). The
  /// gradients are then averaged over the ranks (reduce_op::mean) and stored at home:
  /// overwriting what is there, or with grad_mode::accumulate added to it (see the top).
  template <class G>
  void backward(G&& g, grad_mode mode = grad_mode::overwrite);

  /// backward(g, mode) that also shows each layer's gradient as it lands at home:
  /// watch(i, grads, n, tier) gets exactly what for_each_grad_shard would give for layer i after
  /// this backward (this rank's slice of the reduced gradient, or with grad_mode::accumulate of
  /// the sum at home), in memory on `tier` (the compute tier, or host memory after an
  /// accumulation), while it is still at hand — so a norm needs no second read of every
  /// gradient from home (zero_adam::watch). Layers come in backward order, one behind the walk.
  template <class G, class W>
  void backward(G&& g, grad_mode mode, W&& watch);
  /// Backward walks begun so far (any form): what a watch's measures belong to.
  std::uint64_t backwards() const noexcept { return backwards_; }

  /// backward(g) with the optimizer fused in: as soon as layer i's gradient is reduced into
  /// this rank's shard, u(i, params, grads, n) updates this rank's parameter shard where the
  /// backward left it — on the compute tier — and the updated shard goes home. Gradients never
  /// travel home and no step() follows, so with an NVMe or host home each layer's shard crosses
  /// the bus three times a step (forward fetch, backward fetch, write-back) instead of six, and
  /// all of it overlaps compute. The update of layer i runs after the backward of layer i-1 has
  /// been issued, by when i's reduce-scatter has had a layer's compute to finish in. Stage 3
  /// only (for stages 0-2 the whole replica would have to be on the compute tier anyway: it is
  /// backward(g) then step(u)). Same results as backward(g) + step(u), bitwise. An update that
  /// throws leaves that layer's parameters at home as they were.
  template <class G, class U>
    requires(!std::is_same_v<std::remove_cvref_t<U>, grad_mode>)
  void backward(G&& g, U&& u);

  /// u(i, params, grads, n) on the optimizer tier for every layer, over this rank's part: its
  /// shard (stages 1-3) or everything (stage 0); then, for stages 1-2, the updated slices are
  /// all-gathered so every rank holds the new replica. u updates a copy (see the top): when it
  /// throws, layer i's parameters at home stay as they were and the exception reaches the
  /// caller.
  template <class U>
  void step(U&& u);

  /// step(u), deferred to the next forward() (see the top): u updates layer i on the
  /// executor's optimizer queue while the forward computes the layers before it. Ends any
  /// earlier deferred step first. Where the update cannot run on that queue, this is step(u).
  template <class U>
  void defer_step(U&& u);
  /// True while a step given to defer_step has layers still to update.
  bool step_deferred() const noexcept { return deferred_ != nullptr; }
  /// Waits until every update of a deferred step has ended, leaving the step pending: its
  /// outcome (a failure) is still reported by the next forward() or sync(). For an optimizer
  /// whose update refers to it and that goes away before this executor.
  void wait_deferred() const noexcept {
    if (!deferred_) return;
    // No forward takes the updates' output now: the updates may reuse their buffers, and a
    // later forward fetches from home.
    for (const auto& t : deferred_->taken) t.complete();
    for (const auto& e : deferred_->updated) try {
        e.wait();
      } catch (...) {  // kept in the event, for finish_deferred to rethrow
      }
    std::fill(deferred_->fresh.begin(), deferred_->fresh.end(), nullptr);
  }

  /// f(i, grads, n) for every layer, in layer order: this rank's slice of layer i's stored
  /// gradient — elements [offset(rank), offset(rank) + valid_in(rank)) of the replica for
  /// stages 0-1, the real elements of its shard for 2-3 — leased read-only on the optimizer
  /// tier (host memory unless the home is a real GPU's). The slices of all ranks tile the
  /// gradient exactly once, so a sum over them (a norm) counts every element once. Waits for
  /// the gradients to be home.
  template <class F>
  void for_each_grad_shard(F&& f);

  /// Ends a deferred step, then waits for every copy and collective the executor started;
  /// rethrows their failures.
  void sync() {
    if (deferred_) finish_deferred();
    collectives_.synchronize();
    ctx_.synchronize();
  }

private:
  // The layouts and the plan only (plan_for); the public constructor goes on to check and
  // allocate.
  struct planning_tag {};
  static constexpr planning_tag planning{};
  zero_executor(planning_tag, context& ctx, Comm& comm, std::vector<layer_spec> layers,
                std::string name, const plan_extension& extend);

  std::size_t max_padded() const {
    std::size_t m = 0;
    for (auto& l : layouts_) m = std::max(m, l.padded_numel());
    return m;
  }
  std::size_t max_shard() const {
    std::size_t m = 0;
    for (auto& l : layouts_) m = std::max(m, l.shard_numel());
    return m;
  }

  void make_plan();

  // Scratch buffers on one tier and the events after which each may be reused: the copies of
  // this rank's part that an update works on (kept from home until it returned), and with bf16
  // working parameters the copy's new values (padding zeros), beside each.
  struct scratch_set {
    std::vector<buffer> buffers, narrow;
    std::vector<std::vector<event>> uses;
  };
  scratch_set make_scratch(tier_id t, std::size_t count, std::size_t floats);
  void retire_scratch(scratch_set& s);

  // Layer i's update in step() or a deferred step: scratch buffer i % 2 (or the one), after
  // its last use. `on_queue`: run on the optimizer queue's thread (a deferred step), where the
  // update is traced by the queue, not as compute. Returns, away from home, the memory the
  // fetched tensor's new values were written home from (narrow: the bf16 copy; else the fp32
  // shard), whose write is the buffer's last use; at home, null.
  template <class U>
  const void* update_layer(std::size_t i, scratch_set& scratch, tensor_ref& reading, U& u,
                           bool on_queue);
  scratch_set make_step_scratch() {
    return make_scratch(optimizer_tier::id, step_at_home ? 1 : 2, part_capacity());
  }
  // After a failed update: the shard being read into scratch is dropped once the read is done.
  void drop_reading(tensor_ref& reading, scratch_set& scratch);
  // runs fn as the update of `label`: compute (step()), or plainly on the optimizer queue.
  template <class F>
  event run_update(const std::string& label, bool on_queue, F&& fn) {
    if (on_queue) {
      fn();
      return {};
    }
    return ctx_.compute(label, std::forward<F>(fn));
  }

  // The deferred step: one job per layer on optimizer_, in layer order. A job after a failed
  // one updates nothing and fails too.
  static constexpr bool can_defer =
      (stage == 0 || stage == 3) && (!cuda_enabled || optimizer_tier::id != tier_id::device);
  // With an NVMe home, the forward takes each layer's new values from its update's scratch
  // (see the top); the update two layers on, which reuses that buffer, waits until then.
  static constexpr bool fetch_from_update = file_home && stage == 3;
  struct deferred_step {
    scratch_set scratch;
    tensor_ref reading;
    std::vector<event> updated;  // per layer: its job
    std::atomic<bool> failed{false};
    // fetch_from_update, per layer: where its update left the fetched tensor's new values
    // (null: nowhere), the event of their write home, and `taken`: completed once the forward
    // has copied them out (or the step ends without it).
    std::vector<const void*> fresh;
    std::vector<event> fresh_written, taken;
  };
  // The forward's gate: whether layer i's deferred update has ended (successfully); `wait`:
  // wait for it (rethrowing its failure).
  bool updated(std::size_t i, bool wait);
  // Waits for every job of the deferred step and frees its scratch; rethrows the first failure.
  void finish_deferred();

  // step() on an optimizer tier that is the home (stages 0-3 with an addressable home): the
  // update runs on a scratch copy that goes home when it returned; stages 1-2 then all-gather.
  static constexpr bool step_at_home = optimizer_tier::id == Bundle::home_tier::id;
  template <class U>
  void update_at_home(std::size_t i, float* s, void* copy, std::vector<event>& s_uses, U& u,
                      bool on_queue);
  // step() with a file home: layer i's shard is read into scratch `s` (the tensor borrows it,
  // `reading` says which tensor, for the error path), updated, and written home.
  template <class U>
  const void* update_away_from_home(std::size_t i, float* s, void* copy,
                                    std::vector<event>& s_uses, tensor_ref& reading, U& u,
                                    bool on_queue);

  // The fused backward's update of the layer one behind the walk (in `pd`, if live).
  struct fused_pending;
  template <class U>
  void fused_update(fused_pending& pd, scratch_set& scratch, U& u);

  // Room for the largest part one rank updates (the whole tensor for an NVMe home's shard).
  std::size_t part_capacity() const { return stage == 0 ? max_padded() : max_shard(); }

  // Copies n floats between two places on tier t (the optimizer tier): at once where the host
  // can reach it, else on the copy queues after `after` (waiting for it: the callers reuse the
  // memory right away). Returns when the bytes have arrived.
  event copy_within(tier_id t, float* dst, const float* src, std::size_t n,
                    const std::string& label, std::vector<event> after);

  // home += the reduced gradient of layer i (in buffer b), on the optimizer tier; then
  // watch(i, slice, n, tier) on this rank's slice of the sum.
  template <class W>
  void accumulate_gradient(std::size_t i, std::size_t b, const event& reduced, W& watch);
  // watch(i, slice, n, tier) on layer i's reduced gradient in buffer b (after `reduced`).
  template <class W>
  void watch_reduced(std::size_t i, std::size_t b, const event& reduced, W& watch);


  void zero_device(float* p, std::size_t bytes);

  template <class Tensor>
  static void zero_fill(Tensor& t) {
    t.assign(std::vector<typename Tensor::element_type>(t.size()));  // value-initialised: zeros
  }

  // Layer i's parameter or gradient tensor on this rank: its shard of the layer's layout when
  // the bundle shards that state, else the whole padded replica.
  template <class Tensor>
  Tensor make_state(std::size_t i, const char* what);

  // The tensor the walks fetch for layer i: the bf16 copy, or the fp32 parameters.
  tensor_ref fetched(std::size_t i) { return narrow ? working_[i].ref() : params_[i].ref(); }
  // With bf16 working parameters: layer i's copy from this rank's n updated masters at `s`,
  // written home (from `out`, on the optimizer tier) after `after`; returns that write.
  event write_working(std::size_t i, const float* s, std::size_t n, void* out,
                      std::vector<event> after);
  // The copy of `mine` (this rank's stored values, padded) into layer i's working tensor.
  void assign_working(std::size_t i, const std::vector<float>& mine);

  // Where layer i's parameters will be for compute, and when.
  struct in_flight {
    const working_type* full = nullptr;  // n values (padded) on the compute tier
    event ready;
    std::size_t ring = 0;   // gathered_ slot (stage 3) or fetch slot (stages 0-2)
    std::size_t shard = 0;  // shard_ring_ slot (stage 3 away from the device)
    bool from_update = false;  // copied from a deferred update's scratch, not fetched
  };

  in_flight bring(std::size_t i, std::size_t pos);

  struct fused_pending {
    std::size_t layer = 0, buffer = 0;
    in_flight flight;
    event reduced;
    bool live = false;
  };

  // Layer i's compute is issued: its gathered buffer may be reused after that compute, and its
  // fetched copy dropped — unless `keep_shard` (the fused backward updates it first).
  void done_with(std::size_t i, const in_flight& f, bool keep_shard);

  // The fetch slot layer i borrowed may be reused once its last use is over.
  void give_back_slot(std::size_t i, const in_flight& f);
  // Where a deferred update left layer i's new values for the forward to copy (null: fetch).
  const void* fresh_of(std::size_t i) const {
    if constexpr (fetch_from_update)
      if (deferred_) return deferred_->fresh[i];
    return nullptr;
  }

  // Brings layers in walk order with lookahead and calls body(i, params, flight) for each;
  // `keep_shard`: leave each fetched shard on the compute tier for the body's caller to update.
  template <class Body>
  void walk(bool backward, Body&& body, bool keep_shard = false);

  // g(i, params, grad_full_[b], n) on the compute tier, padding zeroed.
  template <class G>
  void compute_gradient(std::size_t i, const working_type* w, std::size_t b, G& g);

  // Averages layer i's gradient (in grad_full_[b]) over the ranks — into grad_shard_[b] for
  // stages 2-3 — and, if `land_home`, writes the result to its home. Returns the reduction.
  event reduce_gradient(std::size_t i, std::size_t b, event computed, bool land_home);

  context& ctx_;
  Comm& comm_;
  std::string name_;
  std::vector<layer_spec> specs_;
  std::vector<shard_layout> layouts_;
  memory_plan plan_;
  std::deque<param_tensor> params_;
  std::deque<working_tensor> working_;  // bf16 working parameters: the copies (else empty)
  std::deque<grad_tensor> grads_;
  buffer_ring gathered_, shard_ring_, grad_full_, grad_shard_;  // on the compute tier
  std::shared_ptr<deferred_step> deferred_;  // a step given to defer_step, not yet ended
  std::uint64_t backwards_ = 0;
  // Last: their threads stop before the buffers they use go.
  work_queue collectives_;
  work_queue optimizer_;  // a deferred step's updates
};

STRATA_NAMESPACE_END

#include <strata/schedule/detail/executor.inl>
