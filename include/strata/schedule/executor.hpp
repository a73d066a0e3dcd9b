// strata/schedule/executor.hpp — the ZeRO layer executor: walks a model's layers forward and
// backward across ranks, moving and collecting their parameters and gradients in the
// background.
//
//   zero_executor<Comm, Bundle, Depth> ex(ctx, comm, {{"layer0", n0}, {"layer1", n1}, ...});
//   ex.forward([&](std::size_t i, const float* w, std::size_t n) { ... });          // layer i
//   ex.backward([&](std::size_t i, const float* w, float* dw, std::size_t n) { ... });
//   ex.step([&](std::size_t i, float* w, const float* dw, std::size_t n) { ... });   // optimizer
//   ex.backward(g, u);   // stage 3: backward with the update fused in, no step()
//   ex.backward(g, grad_mode::accumulate);   // a later micro-batch: add to the stored gradient
//   ex.for_each_grad_shard([&](std::size_t i, const float* g, std::size_t n) { ... });
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
#include <strata/schedule/partition.hpp>
#include <strata/schedule/zero.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN

/// How backward() lands a reduced gradient at home: overwrite (the first, or only, micro-batch)
/// or accumulate (add it to what is there: later micro-batches).
enum class grad_mode : std::uint8_t { overwrite, accumulate };

template <comm::communicator Comm, zero_policy Bundle, std::size_t Depth = 1>
class zero_executor {
public:
  using bundle_type = Bundle;
  using placement_type = typename Bundle::state_placement;
  using state_tensor = tiered_tensor<float, placement_type>;
  using optimizer_tier = typename Bundle::optimizer_tier;
  static constexpr int stage = Bundle::stage;
  static constexpr std::size_t depth = Depth;
  static constexpr bool resident = placement_type::tier_count == 1;  // home is the device

  /// Adds the caller's lines to the executor's plan before it is checked. It is called with
  /// the executor's layouts in place (size(), layer(), layout(), part_numel(), comm(), ctx()
  /// answer) and nothing allocated yet.
  using plan_extension = std::function<void(zero_executor&, memory_plan&)>;

  zero_executor(context& ctx, Comm& comm, std::vector<layer_spec> layers,
                std::string name = "model", const plan_extension& extend = {})
      : ctx_(ctx), comm_(comm), name_(std::move(name)), specs_(std::move(layers)),
        collectives_("collectives", ctx.trace()) {
    if (specs_.empty()) throw config_error("zero_executor '" + name_ + "': no layers");
    for (auto& l : specs_) layouts_.emplace_back(l.numel, comm_.size());
    make_plan();
    if (extend) extend(*this, plan_);
    plan_.check(ctx_, name_);
    const int r = comm_.rank();
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      const auto& lay = layouts_[i];
      const std::size_t pn = Bundle::params_sharded ? lay.shard_numel() : lay.padded_numel();
      const std::size_t gn = Bundle::grads_sharded ? lay.shard_numel() : lay.padded_numel();
      params_.emplace_back(ctx_, specs_[i].name + ".params[rank " + std::to_string(r) + "]",
                           shape{pn});
      grads_.emplace_back(ctx_, specs_[i].name + ".grads[rank " + std::to_string(r) + "]",
                          shape{gn});
      // Padding must read as zeros. An nvme home already does (never-written data reads as
      // zeros), so it is not written twice before set_params.
      if constexpr (Bundle::home_tier::id != tier_id::nvme) zero_fill(params_.back(), pn);
    }
    auto ring = [&](std::size_t count, std::size_t elems, const char* what) {
      return buffer_ring(ctx_, tier_id::device, count, elems * sizeof(float), name_ + " " + what);
    };
    if (stage == 3 || !resident) gathered_ = ring(depth + 1, max_padded(), "gathered params");
    // One more shard buffer than gathered ones: the fused backward keeps a layer's shard on
    // the device until its update, one layer after its gradient was computed.
    if (stage == 3 && !resident) shard_ring_ = ring(depth + 2, max_shard(), "param shard");
    grad_full_ = ring(2, max_padded(), "full grads");
    if (Bundle::grads_sharded) grad_shard_ = ring(2, max_shard(), "grad shard");
  }

  ~zero_executor() {
    try {
      collectives_.synchronize();
      ctx_.synchronize();
    } catch (...) {  // a failed copy or collective nobody waited for: nothing left to tell
    }
  }
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

  /// Sets layer i's parameters from the full values (every rank passes the same; each keeps
  /// what its stage keeps: its shard, or the whole padded replica).
  void set_params(std::size_t i, std::span<const float> full) {
    const auto& lay = layouts_[i];
    if (full.size() != lay.numel())
      throw config_error("zero_executor '" + name_ + "': set_params of layer '" +
                         specs_[i].name + "' with " + std::to_string(full.size()) +
                         " values; it has " + std::to_string(lay.numel()));
    std::vector<float> mine(params_[i].size(), 0.0f);
    const std::size_t from = Bundle::params_sharded ? lay.offset(comm_.rank()) : 0;
    const std::size_t n = Bundle::params_sharded ? lay.valid_in(comm_.rank()) : lay.numel();
    std::copy_n(full.begin() + static_cast<std::ptrdiff_t>(from), n, mine.begin());
    params_[i].assign(mine);
  }

  /// Layer i's full parameters on the host. A collective for stage 3 (all ranks must call it).
  std::vector<float> params(std::size_t i) {
    sync();
    const auto& lay = layouts_[i];
    std::vector<float> mine = params_[i].to_vector();
    if constexpr (!Bundle::params_sharded) {
      mine.resize(lay.numel());
      return mine;
    } else {
      std::vector<float> full(lay.padded_numel());
      comm_.all_gather(mine.data(), full.data(), lay.shard_numel() * sizeof(float)).wait();
      full.resize(lay.numel());
      return full;
    }
  }

  /// f(i, params, n) for i = 0 .. size-1; params: n floats on the compute tier.
  template <class F>
  void forward(F&& f) {
    walk(false, [&](std::size_t i, const float* w, const in_flight&) {
      ctx_.compute("forward " + specs_[i].name, [&] { f(i, w, layouts_[i].numel()); });
    });
  }

  /// g(i, params, grads, n) for i = size-1 .. 0; g writes all n gradients (compute tier). The
  /// gradients are then averaged over the ranks (reduce_op::mean) and stored at home:
  /// overwriting what is there, or with grad_mode::accumulate added to it (see the top).
  template <class G>
  void backward(G&& g, grad_mode mode = grad_mode::overwrite) {
    std::size_t turn = 0;
    if (mode == grad_mode::overwrite) {
      walk(true, [&](std::size_t i, const float* w, const in_flight&) {
        const std::size_t b = turn++ % 2;
        compute_gradient(i, w, b, g);
        reduce_gradient(i, b, ctx_.compute_fence(), true);
      });
      return;
    }
    // Accumulate: layer i's reduced gradient is added at home after layer i-1's backward has
    // been issued, by when its reduction has had a layer's compute to finish in. Its buffer
    // (one of two) is not refilled before that: the next-but-one layer takes it.
    struct pending {
      std::size_t layer = 0, buffer = 0;
      event reduced;
      bool live = false;
    } last;
    auto land = [&](pending& pd) {
      if (!pd.live) return;
      pd.live = false;
      accumulate_gradient(pd.layer, pd.buffer, pd.reduced);
    };
    walk(true, [&](std::size_t i, const float* w, const in_flight&) {
      const std::size_t b = turn++ % 2;
      compute_gradient(i, w, b, g);
      event reduced = reduce_gradient(i, b, ctx_.compute_fence(), false);
      land(last);
      last = {i, b, reduced, true};
    });
    land(last);
  }

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
  void backward(G&& g, U&& u) {
    if constexpr (stage != 3) {
      backward(g);
      step(u);
    } else {
      struct pending {
        std::size_t layer, buffer;
        in_flight flight;
        event reduced;
        bool live = false;
      } last;
      // Resident (home on the device): the update runs on a scratch copy of the shard, which
      // goes home only when the update returned.
      buffer scratch;
      std::vector<event> scratch_uses;
      if constexpr (resident)
        scratch = ctx_.allocate(tier_id::device, max_shard() * sizeof(float),
                                name_ + " optimizer scratch");
      auto update = [&](pending& pd) {
        if (!pd.live) return;
        pd.live = false;
        pd.reduced.wait();
        const float* gs = static_cast<const float*>(grad_shard_.data(pd.buffer));
        const std::size_t n = layouts_[pd.layer].valid_in(comm_.rank());
        const std::string label = "optimizer " + specs_[pd.layer].name;
        if constexpr (resident) {
          auto* s = static_cast<float*>(scratch.data());
          for (auto& e : std::exchange(scratch_uses, {})) e.wait();
          auto w = params_[pd.layer].template acquire<tier::device>(read_write);  // home
          copy_within(optimizer_tier::id, s, w.data(), n, label, {});
          ctx_.compute(label, [&] { u(pd.layer, s, gs, n); });
          scratch_uses.push_back(
              copy_within(optimizer_tier::id, w.data(), s, n, label, {ctx_.compute_fence()}));
        } else {
          // The shard is on the compute tier in the ring slot the backward fetched it into. A
          // read lease keeps it there while u updates that memory (the executor's own); the
          // lease's end drops the copy from the tensor (the slot stays the executor's), and
          // only an update that returned is written home from it.
          auto& core = *params_[pd.layer].core();
          auto* shard = static_cast<float*>(core.ptr_at(0));
          {
            lease<const float, tier::device> w(params_[pd.layer].core(), 0);
            try {
              ctx_.compute(label, [&] { u(pd.layer, shard, gs, n); });
            } catch (...) {
              w.release();
              give_back_slot(pd.layer, pd.flight);
              throw;
            }
          }
          std::vector<event> used = core.take_last_use(0);
          event home = core.write_from(shard, tier_id::device, used);
          used.push_back(home);
          shard_ring_.add_uses(pd.flight.shard, used);
        }
        grad_shard_.add_use(pd.buffer, ctx_.compute_fence());
      };
      auto finish = [&] {
        if (scratch) ctx_.retire(std::move(scratch), std::move(scratch_uses));
      };
      try {
        std::size_t turn = 0;
        walk(
            true,
            [&](std::size_t i, const float* w, const in_flight& f) {
              const std::size_t b = turn++ % 2;
              compute_gradient(i, w, b, g);
              event reduced = reduce_gradient(i, b, ctx_.compute_fence(), false);
              update(last);
              last = {i, b, f, reduced, true};
            },
            true);
        update(last);
      } catch (...) {
        finish();
        throw;
      }
      finish();
    }
  }

  /// u(i, params, grads, n) on the optimizer tier for every layer, over this rank's part: its
  /// shard (stages 1-3) or everything (stage 0); then, for stages 1-2, the updated slices are
  /// all-gathered so every rank holds the new replica. u updates a copy (see the top): when it
  /// throws, layer i's parameters at home stay as they were and the exception reaches the
  /// caller.
  template <class U>
  void step(U&& u) {
    sync();
    const int r = comm_.rank();
    constexpr bool at_home = optimizer_tier::id == Bundle::home_tier::id;
    constexpr std::size_t k = placement_type::index_of(optimizer_tier::id);
    // Away from home (NVMe: pinned) two buffers alternate, so a layer's write-back overlaps
    // the next layer's read.
    std::vector<buffer> scratch;
    std::vector<std::vector<event>> scratch_uses(at_home ? 1 : 2);
    for (std::size_t b = 0; b < scratch_uses.size(); ++b)
      scratch.push_back(ctx_.allocate(optimizer_tier::id, part_capacity() * sizeof(float),
                                      name_ + " optimizer scratch " + std::to_string(b)));
    detail::tensor_core* reading = nullptr;  // the tensor whose shard is being read into scratch
    auto finish = [&] {
      for (std::size_t b = 0; b < scratch.size(); ++b)
        ctx_.retire(std::move(scratch[b]), std::move(scratch_uses[b]));
    };
    try {
      for (std::size_t i = 0; i < specs_.size(); ++i) {
        const auto& lay = layouts_[i];
        const std::size_t n = part_numel(i);
        const std::size_t b = i % scratch.size();
        auto* s = static_cast<float*>(scratch[b].data());
        for (auto& e : std::exchange(scratch_uses[b], {})) e.wait();
        const std::string label = "optimizer " + specs_[i].name;
        if constexpr (!at_home) {
          // The shard is read into the scratch buffer (the tensor borrows it for as long as a
          // read lease is out), updated there, and written home only if u returned.
          static_assert(stage == 3, "an optimizer tier away from home is the nvme home's");
          auto& core = *params_[i].core();
          if (core.valid_at(k)) core.evict(k, {});
          reading = &core;
          core.fetch(k, s);
          auto dw = grads_[i].template acquire<optimizer_tier>();
          {
            auto w = params_[i].template acquire<optimizer_tier>();  // the fetch into s
            const float* gp = dw.data();
            ctx_.compute(label, [&] { u(i, s, gp, n); });
          }
          reading = nullptr;
          std::vector<event> used = core.take_last_use(k);
          event home = core.write_from(s, optimizer_tier::id, used);
          scratch_uses[b] = std::move(used);
          scratch_uses[b].push_back(home);
        } else {
          auto w = params_[i].template acquire<optimizer_tier>(read_write);
          auto dw = grads_[i].template acquire<optimizer_tier>();
          float* p = w.data();
          const float* gp = dw.data();
          const std::size_t off = (stage == 1 || stage == 2) ? lay.offset(r) : 0;
          copy_within(optimizer_tier::id, s, p + off, n, label, {});
          ctx_.compute(label, [&] { u(i, s, stage == 1 ? gp + off : gp, n); });
          scratch_uses[b].push_back(
              copy_within(optimizer_tier::id, p + off, s, n, label, {ctx_.compute_fence()}));
          if constexpr (stage == 1 || stage == 2) {
            for (auto& e : scratch_uses[b]) e.wait();  // the update is home before it is sent
            float* mine = p + off;
            auto span = trace_recorder::scope(ctx_.trace(), "collectives", span_kind::all_gather,
                                              "all-gather " + specs_[i].name);
            comm_.all_gather(mine, p, lay.shard_numel() * sizeof(float)).wait();
          }
        }
      }
    } catch (...) {
      if (reading) {  // the shard read into scratch is dropped (the read may still run)
        if (reading->valid_at(k) && !reading->leased()) reading->evict(k, {});
        auto used = reading->take_last_use(k);
        for (auto& uses : scratch_uses) uses.insert(uses.end(), used.begin(), used.end());
      }
      finish();
      throw;
    }
    finish();
  }

  /// f(i, grads, n) for every layer, in layer order: this rank's slice of layer i's stored
  /// gradient — elements [offset(rank), offset(rank) + valid_in(rank)) of the replica for
  /// stages 0-1, the real elements of its shard for 2-3 — leased read-only on the optimizer
  /// tier (host memory unless the home is a real GPU's). The slices of all ranks tile the
  /// gradient exactly once, so a sum over them (a norm) counts every element once. Waits for
  /// the gradients to be home.
  template <class F>
  void for_each_grad_shard(F&& f) {
    sync();
    const int r = comm_.rank();
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      const auto& lay = layouts_[i];
      auto dw = grads_[i].template acquire<optimizer_tier>();
      const float* gp = dw.data();
      f(i, Bundle::grads_sharded ? gp : gp + lay.offset(r),
        static_cast<std::size_t>(lay.valid_in(r)));
    }
  }

  /// Waits for every copy and collective the executor started; rethrows their failures.
  void sync() {
    collectives_.synchronize();
    ctx_.synchronize();
  }

private:
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

  void make_plan() {
    constexpr std::size_t f = sizeof(float);
    std::size_t params_bytes = 0, grads_bytes = 0;
    for (auto& l : layouts_) {
      params_bytes += (Bundle::params_sharded ? l.shard_numel() : l.padded_numel()) * f;
      grads_bytes += (Bundle::grads_sharded ? l.shard_numel() : l.padded_numel()) * f;
    }
    const tier_id home = Bundle::home_tier::id;
    const char* state = Bundle::params_sharded ? "parameter shards" : "parameter replicas";
    plan_.add(home, std::string(state) + " (all layers)", params_bytes);
    plan_.add(home, std::string(Bundle::grads_sharded ? "gradient shards" : "gradient replicas") +
                        " (all layers)",
              grads_bytes);
    const std::size_t d1 = depth + 1;
    if (stage == 3 || !resident)
      plan_.add(tier_id::device,
                std::to_string(d1) + " gathered-parameter buffers (Depth+1)",
                d1 * max_padded() * f);
    if (stage == 3 && !resident)
      plan_.add(tier_id::device, std::to_string(d1 + 1) + " parameter-shard buffers (Depth+2)",
                (d1 + 1) * max_shard() * f);
    plan_.add(tier_id::device, "2 full-gradient buffers", 2 * max_padded() * f);
    if (Bundle::grads_sharded)
      plan_.add(tier_id::device, "2 gradient-shard buffers", 2 * max_shard() * f);
    // The optimizer updates a copy of this rank's part (kept from home until the update
    // returned). Away from home (an NVMe home: pinned) the shard is read into one of two
    // alternating buffers and the layer's gradient is leased beside it; gradient accumulation
    // leases the gradient there too, at other times.
    if (optimizer_tier::id != home)
      plan_.add(optimizer_tier::id, "optimizer: 2 parameter-shard buffers + one layer's grads",
                2 * part_capacity() * f +
                    (Bundle::grads_sharded ? max_shard() : max_padded()) * f);
    else
      plan_.add(optimizer_tier::id, "optimizer scratch: one layer's part", part_capacity() * f);
    if (cuda_enabled)  // accumulation sums on the host (accumulate_gradient)
      plan_.add(tier_id::pinned, "gradient accumulation: host copies of one layer's gradient",
                (optimizer_tier::id == tier_id::device ? 2 : 1) *
                    (Bundle::grads_sharded ? max_shard() : max_padded()) * f);
    for (std::size_t t = 0; t < tier_count; ++t) {
      const auto tier = static_cast<tier_id>(t);
      if (const std::size_t held = ctx_.budget(tier).used())
        plan_.add(tier, "already held by the context (staging ring, ...)", held);
    }
    if (home == tier_id::nvme) {  // the store's bounce buffers: one per IO queue at most
      const std::size_t block = std::max<std::size_t>(ctx_.config().nvme_checksum_block, 1 << 20);
      plan_.add(tier_id::pinned, "NVMe bounce buffers (io-read, io-write)", 2 * block);
    }
  }

  // Room for the largest part one rank updates (the whole tensor for an NVMe home's shard).
  std::size_t part_capacity() const { return stage == 0 ? max_padded() : max_shard(); }

  // Copies n floats between two places on tier t (the optimizer tier): at once where the host
  // can reach it, else on the copy queues after `after` (waiting for it: the callers reuse the
  // memory right away). Returns when the bytes have arrived.
  event copy_within(tier_id t, float* dst, const float* src, std::size_t n,
                    const std::string& label, std::vector<event> after) {
    if (!n) return {};
    if (!cuda_enabled || t != tier_id::device) {
      for (auto& e : after) e.wait();
      std::memcpy(dst, src, n * sizeof(float));
      return {};
    }
    event e = ctx_.copy(dst, t, src, t, n * sizeof(float), label + " (scratch)", std::move(after));
    e.wait();
    return e;
  }

  // home += the reduced gradient of layer i (in buffer b), on the optimizer tier.
  void accumulate_gradient(std::size_t i, std::size_t b, const event& reduced) {
    reduced.wait();
    const auto& lay = layouts_[i];
    const std::size_t count = Bundle::grads_sharded ? lay.shard_numel() : lay.padded_numel();
    const auto* src = static_cast<const float*>(Bundle::grads_sharded ? grad_shard_.data(b)
                                                                      : grad_full_.data(b));
    auto dw = grads_[i].template acquire<optimizer_tier>(read_write);
    float* dst = dw.data();
    const std::string label = "accumulate " + specs_[i].name;
    if constexpr (!cuda_enabled) {  // the emulated device is host memory
      ctx_.compute(label, [&] {
        for (std::size_t k = 0; k < count; ++k) dst[k] = dst[k] + src[k];
      });
    } else {
      // Without a kernel of its own, the sum is taken on the host: the reduced gradient (and,
      // for a device home, the stored one) pass through host buffers (planned).
      const std::size_t bytes = count * sizeof(float);
      buffer in = ctx_.allocate(tier_id::pinned, bytes, label + " (reduced)");
      auto* h = static_cast<float*>(in.data());
      ctx_.copy(h, tier_id::pinned, src, tier_id::device, bytes, label).wait();
      buffer acc;
      float* a = dst;
      if constexpr (optimizer_tier::id == tier_id::device) {
        acc = ctx_.allocate(tier_id::pinned, bytes, label + " (stored)");
        a = static_cast<float*>(acc.data());
        ctx_.copy(a, tier_id::pinned, dst, tier_id::device, bytes, label).wait();
      }
      trace_recorder::scope span(ctx_.trace(), "compute", span_kind::compute, label);
      for (std::size_t k = 0; k < count; ++k) a[k] = a[k] + h[k];
      if constexpr (optimizer_tier::id == tier_id::device)
        ctx_.copy(dst, tier_id::device, a, tier_id::pinned, bytes, label).wait();
    }
  }

  void zero_device(float* p, std::size_t bytes) {
    if (!bytes) return;
#if STRATA_ENABLE_CUDA
    check_cuda(cudaMemsetAsync(p, 0, bytes, ctx_.compute_stream()), "zeroing gradient padding");
#else
    std::memset(p, 0, bytes);
#endif
  }

  void zero_fill(state_tensor& t, std::size_t n) { t.assign(std::vector<float>(n, 0.0f)); }

  // Where layer i's parameters will be for compute, and when.
  struct in_flight {
    const float* full = nullptr;  // n floats (padded) on the compute tier
    event ready;
    std::size_t ring = 0;   // gathered_ slot (stage 3) or fetch slot (stages 0-2)
    std::size_t shard = 0;  // shard_ring_ slot (stage 3 away from the device)
  };

  in_flight bring(std::size_t i, std::size_t pos) {
    in_flight f;
    f.ring = gathered_.empty() ? 0 : pos % gathered_.size();
    f.shard = shard_ring_.empty() ? 0 : pos % shard_ring_.size();
    auto& core = *params_[i].core();
    const float* src = nullptr;
    event src_ready;
    if constexpr (resident) {
      src = static_cast<const float*>(core.ptr_at(0));
      src_ready = core.ready_at(0);
    } else {
      auto& ring = stage == 3 ? shard_ring_ : gathered_;
      const std::size_t slot = stage == 3 ? f.shard : f.ring;
      core.fetch(0, ring.data(slot), ring.take_uses(slot));
      src = static_cast<const float*>(ring.data(slot));
      src_ready = core.ready_at(0);
    }
    if constexpr (stage == 3) {
      auto* dst = static_cast<float*>(gathered_.data(f.ring));
      const std::size_t bytes = layouts_[i].shard_numel() * sizeof(float);
      std::vector<event> after = gathered_.take_uses(f.ring);
      after.push_back(src_ready);
      f.ready = collectives_.submit(span_kind::all_gather, "all-gather " + specs_[i].name,
                                    [this, src, dst, bytes] {
                                      comm_.all_gather(src, dst, bytes).wait();
                                    },
                                    std::move(after));
      f.full = dst;
    } else {
      f.full = src;
      f.ready = src_ready;
    }
    return f;
  }

  // Layer i's compute is issued: its gathered buffer may be reused after that compute, and its
  // fetched copy dropped — unless `keep_shard` (the fused backward updates it first).
  void done_with(std::size_t i, const in_flight& f, bool keep_shard) {
    event fence = ctx_.compute_fence();
    if constexpr (stage == 3) gathered_.add_use(f.ring, fence);
    if constexpr (!resident) {
      if (keep_shard) return;
      params_[i].core()->evict(0, {f.ready, fence});
      give_back_slot(i, f);
    }
  }

  // The fetch slot layer i borrowed may be reused once its last use is over.
  void give_back_slot(std::size_t i, const in_flight& f) {
    auto& ring = stage == 3 ? shard_ring_ : gathered_;
    ring.add_uses(stage == 3 ? f.shard : f.ring, params_[i].core()->take_last_use(0));
  }

  // Brings layers in walk order with lookahead and calls body(i, params, flight) for each;
  // `keep_shard`: leave each fetched shard on the compute tier for the body's caller to update.
  template <class Body>
  void walk(bool backward, Body&& body, bool keep_shard = false) {
    const std::size_t n = specs_.size();
    auto index = [&](std::size_t p) { return backward ? n - 1 - p : p; };
    const std::size_t ahead = std::min(depth, n - 1);
    std::vector<in_flight> flight(n);
    std::size_t issued = 0;
    try {
      for (; issued <= ahead; ++issued) flight[issued] = bring(index(issued), issued);
      for (std::size_t p = 0; p < n; ++p) {
        if (p > 0 && p + ahead < n) {  // the slot of layer p-1 is free: bring p+ahead
          flight[issued] = bring(index(issued), issued);
          ++issued;
        }
        const std::size_t i = index(p);
        flight[p].ready.wait();
        body(i, flight[p].full, flight[p]);
        done_with(i, flight[p], keep_shard);
      }
    } catch (...) {
      // Whatever is still in flight borrows ring memory: let it finish, then drop it.
      try {
        collectives_.synchronize();
      } catch (...) {
      }
      if constexpr (!resident)
        for (std::size_t p = 0; p < issued; ++p) {
          auto& core = *params_[index(p)].core();
          if (core.valid_at(0) && !core.leased()) core.evict(0, {});
          give_back_slot(index(p), flight[p]);
        }
      throw;
    }
  }

  // g(i, params, grad_full_[b], n) on the compute tier, padding zeroed.
  template <class G>
  void compute_gradient(std::size_t i, const float* w, std::size_t b, G& g) {
    const auto& lay = layouts_[i];
    grad_full_.wait_free(b);
    float* dw = static_cast<float*>(grad_full_.data(b));
    ctx_.compute("backward " + specs_[i].name, [&] {
      g(i, w, dw, lay.numel());
      zero_device(dw + lay.numel(), (lay.padded_numel() - lay.numel()) * sizeof(float));
    });
  }

  // Averages layer i's gradient (in grad_full_[b]) over the ranks — into grad_shard_[b] for
  // stages 2-3 — and, if `land_home`, writes the result to its home. Returns the reduction.
  event reduce_gradient(std::size_t i, std::size_t b, event computed, bool land_home) {
    const auto& lay = layouts_[i];
    float* full = static_cast<float*>(grad_full_.data(b));
    if constexpr (Bundle::grads_sharded) {
      grad_shard_.wait_free(b);
      float* shard = static_cast<float*>(grad_shard_.data(b));
      const std::size_t count = lay.shard_numel();
      event rs = collectives_.submit(
          span_kind::reduce_scatter, "reduce-scatter " + specs_[i].name,
          [this, full, shard, count] {
            comm_.reduce_scatter(full, shard, count, comm::reduce_op::mean).wait();
          },
          {computed});
      grad_full_.add_use(b, rs);
      grad_shard_.add_use(b, land_home ? grads_[i].core()->write_from(shard, tier_id::device, {rs})
                                       : rs);
      return rs;
    } else {
      const std::size_t count = lay.padded_numel();
      event ar = collectives_.submit(
          span_kind::reduce_scatter, "all-reduce " + specs_[i].name,
          [this, full, count] {
            comm_.all_reduce(full, full, count, comm::reduce_op::mean).wait();
          },
          {computed});
      grad_full_.add_use(b, land_home ? grads_[i].core()->write_from(full, tier_id::device, {ar})
                                      : ar);
      return ar;
    }
  }

  context& ctx_;
  Comm& comm_;
  std::string name_;
  std::vector<layer_spec> specs_;
  std::vector<shard_layout> layouts_;
  memory_plan plan_;
  std::deque<state_tensor> params_, grads_;
  buffer_ring gathered_, shard_ring_, grad_full_, grad_shard_;  // on the compute tier
  work_queue collectives_;  // last: its thread stops before the buffers it uses go
};

STRATA_NAMESPACE_END
