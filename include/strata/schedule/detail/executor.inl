// strata/schedule/detail/executor.inl — the bodies of zero_executor's members, declared and
// documented in schedule/executor.hpp (included at its end; not a header to include alone).
#pragma once

STRATA_NAMESPACE_BEGIN

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
zero_executor<Comm, Bundle, Prefetch>::zero_executor(planning_tag, context& ctx, Comm& comm,
                                                     std::vector<layer_spec> layers,
                                                     std::string name, const plan_extension& extend)
    : ctx_(ctx),
      comm_(comm),
      name_(std::move(name)),
      specs_(std::move(layers)),
      collectives_("collectives", ctx.trace()),
      optimizer_("optimizer", ctx.trace()) {
  if (specs_.empty()) throw config_error("zero_executor '" + name_ + "': no layers");
  for (auto& l : specs_) layouts_.emplace_back(l.numel, comm_.size());
  make_plan();
  if (extend) extend(*this, plan_);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
zero_executor<Comm, Bundle, Prefetch>::zero_executor(context& ctx, Comm& comm,
                                                     std::vector<layer_spec> layers,
                                                     std::string name, const plan_extension& extend)
    : zero_executor(planning, ctx, comm, std::move(layers), std::move(name), extend) {
  plan_.check(ctx_, name_);
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    params_.push_back(make_state<param_tensor>(i, ".params"));
    if constexpr (narrow) working_.push_back(make_state<working_tensor>(i, ".working"));
    grads_.push_back(make_state<grad_tensor>(i, ".grads"));
    // Padding must read as zeros. A file home already does (never-written data reads as
    // zeros), so it is not written twice before set_params.
    if constexpr (!file_home) {
      zero_fill(params_.back());
      if constexpr (narrow) zero_fill(working_.back());
    }
  }
  auto ring = [&](std::size_t count, std::size_t bytes, const char* what) {
    return buffer_ring(ctx_, compute_tier::id, count, bytes, name_ + " " + what);
  };
  constexpr std::size_t wb = sizeof(working_type), f = sizeof(float);
  if (stage == 3 || !resident) gathered_ = ring(depth + 1, max_padded() * wb, "gathered params");
  // One more shard buffer than gathered ones: the fused backward keeps a layer's shard on
  // the device until its update, one layer after its gradient was computed.
  if (stage == 3 && !resident) shard_ring_ = ring(depth + 2, max_shard() * wb, "param shard");
  grad_full_ = ring(2, max_padded() * f, "full grads");
  if (Bundle::grads_sharded) grad_shard_ = ring(2, max_shard() * f, "grad shard");
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
zero_executor<Comm, Bundle, Prefetch>::~zero_executor() {
  try {
    if (deferred_) finish_deferred();
  } catch (...) {  // a failed deferred update nobody waited for: nothing left to tell
  }
  try {
    collectives_.synchronize();
    ctx_.synchronize();
  } catch (...) {  // a failed copy or collective nobody waited for: nothing left to tell
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::set_params(std::size_t i, std::span<const float> full) {
  const auto& lay = layouts_[i];
  if (full.size() != lay.numel())
    throw config_error("zero_executor '" + name_ + "': set_params of layer '" + specs_[i].name +
                       "' with " + std::to_string(full.size()) + " values; it has " +
                       std::to_string(lay.numel()));
  sync();
  std::vector<float> mine(params_[i].size(), 0.0f);
  const std::size_t from = Bundle::params_sharded ? lay.offset(comm_.rank()) : 0;
  const std::size_t n = Bundle::params_sharded ? lay.valid_in(comm_.rank()) : lay.numel();
  std::copy_n(full.begin() + static_cast<std::ptrdiff_t>(from), n, mine.begin());
  params_[i].assign(mine);
  assign_working(i, mine);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::assign_working(std::size_t i,
                                                           const std::vector<float>& mine) {
  if constexpr (narrow) {
    std::vector<working_type> copy(mine.size());
    convert(mine.data(), copy.data(), mine.size());
    working_[i].assign(copy);
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
event zero_executor<Comm, Bundle, Prefetch>::write_working(std::size_t i, const float* s,
                                                           std::size_t n, void* out,
                                                           std::vector<event> after) {
  if constexpr (!narrow) {
    return {};
  } else {
    convert(s, static_cast<working_type*>(out), n);  // the padding after n stays zeros
    return working_[i].ref().write_from(out, optimizer_tier::id, std::move(after));
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
std::vector<float> zero_executor<Comm, Bundle, Prefetch>::stored_params(std::size_t i) {
  sync();
  std::vector<float> mine = params_.at(i).to_vector();
  mine.resize(stored_numel(i));
  return mine;
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::set_stored_params(std::size_t i,
                                                              std::span<const float> values) {
  if (values.size() != stored_numel(i))
    throw config_error("zero_executor '" + name_ + "': set_stored_params of layer '" +
                       specs_.at(i).name + "' with " + std::to_string(values.size()) +
                       " values; rank " + std::to_string(comm_.rank()) + " stores " +
                       std::to_string(stored_numel(i)));
  sync();
  std::vector<float> mine(params_[i].size(), 0.0f);
  std::copy(values.begin(), values.end(), mine.begin());
  params_[i].assign(mine);
  assign_working(i, mine);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
std::vector<float> zero_executor<Comm, Bundle, Prefetch>::params(std::size_t i) {
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

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class F>
void zero_executor<Comm, Bundle, Prefetch>::forward(F&& f) {
  try {
    walk(false, [&](std::size_t i, const working_type* w, const in_flight&) {
      ctx_.compute("forward " + specs_[i].name, [&] { f(i, w, layouts_[i].numel()); });
    });
  } catch (...) {
    // The deferred step's jobs still use its scratch: they end (the updates of the layers the
    // walk did not reach still land); the walk's own failure is the one to report.
    if (deferred_) try {
        finish_deferred();
      } catch (...) {
      }
    throw;
  }
  if (deferred_) finish_deferred();  // the walk waited for every layer's update
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class G>
void zero_executor<Comm, Bundle, Prefetch>::backward(G&& g, grad_mode mode) {
  backward(std::forward<G>(g), mode, no_watch{});
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class G, class W>
void zero_executor<Comm, Bundle, Prefetch>::backward(G&& g, grad_mode mode, W&& watch) {
  if (deferred_) finish_deferred();
  ++backwards_;
  constexpr bool watching = !std::is_same_v<std::remove_cvref_t<W>, no_watch>;
  // Layer i's reduced gradient is watched, or added at home, after layer i-1's backward has
  // been issued, by when its reduction has had a layer's compute to finish in. Its buffer (one
  // of two) is not refilled before that: the next-but-one layer takes it.
  struct pending {
    std::size_t layer = 0, buffer = 0;
    event reduced;
    bool live = false;
  } last;
  auto land = [&](pending& pd) {
    if (!pd.live) return;
    pd.live = false;
    if (mode == grad_mode::accumulate)
      accumulate_gradient(pd.layer, pd.buffer, pd.reduced, watch);
    else if constexpr (watching)
      watch_reduced(pd.layer, pd.buffer, pd.reduced, watch);
  };
  const bool home_now = mode == grad_mode::overwrite;  // else the sum goes home
  std::size_t turn = 0;
  walk(true, [&](std::size_t i, const working_type* w, const in_flight&) {
    const std::size_t b = turn++ % 2;
    compute_gradient(i, w, b, g);
    event reduced = reduce_gradient(i, b, ctx_.compute_fence(), home_now);
    land(last);
    last = {i, b, reduced, true};
  });
  land(last);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class W>
void zero_executor<Comm, Bundle, Prefetch>::watch_reduced(std::size_t i, std::size_t b,
                                                          const event& reduced, W& watch) {
  reduced.wait();
  const auto& lay = layouts_[i];
  const int r = comm_.rank();
  const float* g = Bundle::grads_sharded
                       ? static_cast<const float*>(grad_shard_.data(b))
                       : static_cast<const float*>(grad_full_.data(b)) + lay.offset(r);
  watch(i, g, static_cast<std::size_t>(lay.valid_in(r)), compute_tier::id);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class G, class U>
requires(!std::is_same_v<std::remove_cvref_t<U>,
                         grad_mode>) void zero_executor<Comm, Bundle, Prefetch>::backward(G&& g,
                                                                                          U&& u) {
  if constexpr (stage != 3 || narrow) {
    backward(g);
    step(u);
  } else {
    if (deferred_) finish_deferred();
    ++backwards_;
    fused_pending last;
    scratch_set scratch;
    // Resident (home on the device): the update runs on a scratch copy of the shard, which
    // goes home only when the update returned.
    if constexpr (resident) scratch = make_scratch(compute_tier::id, 1, max_shard());
    try {
      std::size_t turn = 0;
      walk(
          true,
          [&](std::size_t i, const working_type* w, const in_flight& f) {
            const std::size_t b = turn++ % 2;
            compute_gradient(i, w, b, g);
            event reduced = reduce_gradient(i, b, ctx_.compute_fence(), false);
            fused_update(last, scratch, u);
            last = {i, b, f, reduced, true};
          },
          true);
      fused_update(last, scratch, u);
    } catch (...) {
      retire_scratch(scratch);
      throw;
    }
    retire_scratch(scratch);
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class U>
void zero_executor<Comm, Bundle, Prefetch>::fused_update(fused_pending& pd, scratch_set& scratch,
                                                         U& u) {
  if (!pd.live) return;
  pd.live = false;
  pd.reduced.wait();
  const float* gs = static_cast<const float*>(grad_shard_.data(pd.buffer));
  const std::size_t n = layouts_[pd.layer].valid_in(comm_.rank());
  const std::string label = "optimizer " + specs_[pd.layer].name;
  if constexpr (resident) {
    auto* s = static_cast<float*>(scratch.buffers[0].data());
    for (auto& e : std::exchange(scratch.uses[0], {})) e.wait();
    auto w = params_[pd.layer].template acquire<compute_tier>(read_write);  // home
    copy_within(optimizer_tier::id, s, w.data(), n, label, {});
    ctx_.compute(label, [&] { u(pd.layer, s, gs, n); });
    scratch.uses[0].push_back(
        copy_within(optimizer_tier::id, w.data(), s, n, label, {ctx_.compute_fence()}));
  } else {
    // The shard is on the compute tier in the ring slot the backward fetched it into. A read
    // lease keeps it there while u updates that memory (the executor's own); the lease's end
    // drops the copy from the tensor (the slot stays the executor's), and only an update that
    // returned is written home from it.
    tensor_ref p = params_[pd.layer].ref();
    auto* shard = static_cast<float*>(p.data(compute_tier::id));
    {
      auto w = p.template acquire<const float, compute_tier>();
      try {
        ctx_.compute(label, [&] { u(pd.layer, shard, gs, n); });
      } catch (...) {
        w.release();
        give_back_slot(pd.layer, pd.flight);
        throw;
      }
    }
    std::vector<event> used = p.take_last_use(compute_tier::id);
    event home = p.write_from(shard, compute_tier::id, used);
    used.push_back(home);
    shard_ring_.add_uses(pd.flight.shard, used);
  }
  grad_shard_.add_use(pd.buffer, ctx_.compute_fence());
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class U>
void zero_executor<Comm, Bundle, Prefetch>::step(U&& u) {
  sync();
  scratch_set scratch = make_step_scratch();
  tensor_ref reading;  // the tensor whose shard is being read into scratch
  try {
    for (std::size_t i = 0; i < specs_.size(); ++i) update_layer(i, scratch, reading, u, false);
  } catch (...) {
    drop_reading(reading, scratch);
    retire_scratch(scratch);
    throw;
  }
  retire_scratch(scratch);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class U>
const void* zero_executor<Comm, Bundle, Prefetch>::update_layer(std::size_t i,
                                                                scratch_set& scratch,
                                                                tensor_ref& reading, U& u,
                                                                bool on_queue) {
  // Away from home (NVMe: pinned) two buffers alternate, so a layer's write-back overlaps the
  // next layer's read.
  const std::size_t b = i % scratch.buffers.size();
  auto* s = static_cast<float*>(scratch.buffers[b].data());
  void* copy = narrow ? scratch.narrow[b].data() : nullptr;  // the bf16 working copy's bytes
  for (auto& e : std::exchange(scratch.uses[b], {})) e.wait();
  if constexpr (step_at_home) {
    update_at_home(i, s, copy, scratch.uses[b], u, on_queue);
    return nullptr;
  } else {
    return update_away_from_home(i, s, copy, scratch.uses[b], reading, u, on_queue);
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::drop_reading(tensor_ref& reading,
                                                         scratch_set& scratch) {
  if (!reading) return;
  constexpr tier_id k = optimizer_tier::id;
  if (reading.holds(k) && !reading.leased()) reading.evict(k);
  auto used = reading.take_last_use(k);
  for (auto& uses : scratch.uses) uses.insert(uses.end(), used.begin(), used.end());
  reading = {};
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class U>
void zero_executor<Comm, Bundle, Prefetch>::defer_step(U&& u) {
  if constexpr (!can_defer) {
    step(std::forward<U>(u));
  } else {
    sync();  // an earlier deferred step ends, and the backward's gradients are home
    auto d = std::make_shared<deferred_step>();
    d->scratch = make_step_scratch();
    const std::size_t n = specs_.size(), buffers = d->scratch.buffers.size();
    if constexpr (fetch_from_update) {
      d->fresh.assign(n, nullptr);
      d->fresh_written.resize(n);
      for (std::size_t i = 0; i < n; ++i) d->taken.push_back(event::pending());
    }
    auto update = std::make_shared<std::decay_t<U>>(std::forward<U>(u));
    for (std::size_t i = 0; i < n; ++i)
      d->updated.push_back(optimizer_.submit(
          span_kind::optimizer, "optimizer " + specs_[i].name, [this, d, update, i, buffers] {
            if (d->failed)
              throw config_error("zero_executor '" + name_ + "': layer '" + specs_[i].name +
                                 "' not updated: the deferred update of an earlier layer failed");
            // The buffer this layer reuses holds layer i-2's new values until the forward
            // has taken them.
            if (fetch_from_update && i >= buffers) d->taken[i - buffers].wait();
            try {
              const void* fresh = update_layer(i, d->scratch, d->reading, *update, true);
              if constexpr (fetch_from_update) {
                d->fresh_written[i] = d->scratch.uses[i % buffers].back();
                d->fresh[i] = fresh;
              }
            } catch (...) {
              d->failed = true;
              drop_reading(d->reading, d->scratch);
              throw;
            }
          }));
    deferred_ = std::move(d);
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
bool zero_executor<Comm, Bundle, Prefetch>::updated(std::size_t i, bool wait) {
  const event& e = deferred_->updated[i];
  if (wait) {
    e.wait();
    return true;
  }
  return e.ready() && !e.failure();
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::finish_deferred() {
  const std::shared_ptr<deferred_step> d = std::move(deferred_);  // no longer pending
  for (const auto& t : d->taken) t.complete();  // the forward takes no more (if it took all)
  std::exception_ptr first;
  for (auto& e : d->updated) try {
      e.wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  retire_scratch(d->scratch);
  if (first) std::rethrow_exception(first);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class U>
const void* zero_executor<Comm, Bundle, Prefetch>::update_away_from_home(
    std::size_t i, float* s, void* copy, std::vector<event>& s_uses, tensor_ref& reading, U& u,
    bool on_queue) {
  // The shard is read into the scratch buffer (the tensor borrows it for as long as a read
  // lease is out), updated there, and written home only if u returned.
  static_assert(stage == 3, "an optimizer tier away from home is the nvme home's");
  constexpr tier_id k = optimizer_tier::id;
  const std::size_t n = part_numel(i);
  tensor_ref p = params_[i].ref();
  if (p.holds(k)) p.evict(k);
  reading = p;
  p.fetch_into(k, s, {});
  auto dw = grads_[i].template acquire<optimizer_tier>();
  {
    auto w = params_[i].template acquire<optimizer_tier>();  // the fetch into s
    const float* gp = dw.data();
    run_update("optimizer " + specs_[i].name, on_queue, [&] { u(i, s, gp, n); });
  }
  reading = {};
  s_uses = p.take_last_use(k);
  s_uses.push_back(p.write_from(s, optimizer_tier::id, s_uses));
  // The bf16 working copy goes after the masters (and fails unrun if their write failed), so
  // its write is the one that says both are home.
  if constexpr (narrow) s_uses.push_back(write_working(i, s, n, copy, {s_uses.back()}));
  // An optimizer whose own state of the layer must commit with these parameters (zero_adam's
  // NVMe moments) is told which write that is.
  if constexpr (requires { u.home_written(i, s_uses.back()); }) u.home_written(i, s_uses.back());
  if constexpr (narrow) return copy;
  else return s;
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class U>
void zero_executor<Comm, Bundle, Prefetch>::update_at_home(std::size_t i, float* s, void* copy,
                                                           std::vector<event>& s_uses, U& u,
                                                           bool on_queue) {
  const auto& lay = layouts_[i];
  const std::size_t n = part_numel(i);
  const std::string label = "optimizer " + specs_[i].name;
  auto w = params_[i].template acquire<optimizer_tier>(read_write);
  auto dw = grads_[i].template acquire<optimizer_tier>();
  float* p = w.data();
  const float* gp = dw.data();
  const std::size_t off = (stage == 1 || stage == 2) ? lay.offset(comm_.rank()) : 0;
  copy_within(optimizer_tier::id, s, p + off, n, label, {});
  const event updated = run_update(label, on_queue, [&] { u(i, s, stage == 1 ? gp + off : gp, n); });
  s_uses.push_back(copy_within(optimizer_tier::id, p + off, s, n, label, {updated}));
  if constexpr (narrow) {  // stage 3: the shard's bf16 working copy, from the new masters
    w.release();           // the masters' read_write lease ends: the copy is another tensor
    s_uses.push_back(write_working(i, s, n, copy, {s_uses.back()}));
  }
  if constexpr (stage == 1 || stage == 2) {
    for (auto& e : s_uses) e.wait();  // the update is home before it is sent
    auto span = trace_recorder::scope(ctx_.trace(), "collectives", span_kind::all_gather,
                                      "all-gather " + specs_[i].name);
    comm_.all_gather(p + off, p, lay.shard_numel() * sizeof(float)).wait();
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
auto zero_executor<Comm, Bundle, Prefetch>::make_scratch(tier_id t, std::size_t count,
                                                         std::size_t floats) -> scratch_set {
  scratch_set s;
  s.uses.resize(count);
  for (std::size_t b = 0; b < count; ++b) {
    s.buffers.push_back(ctx_.allocate(t, floats * sizeof(float),
                                      name_ + " optimizer scratch " + std::to_string(b)));
    if constexpr (narrow) {  // host-reachable (static_assert above): zeros in the padding
      s.narrow.push_back(ctx_.allocate(t, floats * sizeof(working_type),
                                       name_ + " optimizer working copy " + std::to_string(b)));
      std::memset(s.narrow.back().data(), 0, s.narrow.back().size());
    }
  }
  return s;
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::retire_scratch(scratch_set& s) {
  for (std::size_t b = 0; b < s.buffers.size(); ++b) {
    if (b < s.narrow.size()) ctx_.retire(std::move(s.narrow[b]), s.uses[b]);
    ctx_.retire(std::move(s.buffers[b]), std::move(s.uses[b]));
  }
  s.buffers.clear();
  s.narrow.clear();
  s.uses.clear();
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class F>
void zero_executor<Comm, Bundle, Prefetch>::for_each_grad_shard(F&& f) {
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

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::make_plan() {
  constexpr std::size_t f = sizeof(float);
  std::size_t params_bytes = 0, grads_bytes = 0;
  for (auto& l : layouts_) {
    params_bytes += (Bundle::params_sharded ? l.shard_numel() : l.padded_numel()) * f;
    grads_bytes += (Bundle::grads_sharded ? l.shard_numel() : l.padded_numel()) * f;
  }
  constexpr tier_id home = Bundle::home_tier::id;
  const char* state = Bundle::params_sharded ? "parameter shards" : "parameter replicas";
  plan_.add(home, std::string(state) + " (all layers)", params_bytes);
  constexpr std::size_t wb = sizeof(working_type);
  if constexpr (narrow)
    plan_.add(home, "bf16 working copies of the parameter shards (all layers)",
              params_bytes / f * wb);
  plan_.add(home,
            std::string(Bundle::grads_sharded ? "gradient shards" : "gradient replicas") +
                " (all layers)",
            grads_bytes);
  const std::size_t d1 = depth + 1;
  constexpr tier_id dev = compute_tier::id;
  const char* kind = narrow ? " (bf16)" : "";
  if (stage == 3 || !resident)
    plan_.add(dev, std::to_string(d1) + " gathered-parameter buffers (Depth+1)" + kind,
              d1 * max_padded() * wb);
  if (stage == 3 && !resident)
    plan_.add(dev, std::to_string(d1 + 1) + " parameter-shard buffers (Depth+2)" + kind,
              (d1 + 1) * max_shard() * wb);
  plan_.add(dev, "2 full-gradient buffers", 2 * max_padded() * f);
  if (Bundle::grads_sharded) plan_.add(dev, "2 gradient-shard buffers", 2 * max_shard() * f);
  // The optimizer updates a copy of this rank's part (kept from home until the update
  // returned). Away from home (an NVMe home: pinned) the shard is read into one of two
  // alternating buffers and the layer's gradient is leased beside it; gradient accumulation
  // leases the gradient there too, at other times.
  if (optimizer_tier::id != home)
    plan_.add(optimizer_tier::id, "optimizer: 2 parameter-shard buffers + one layer's grads",
              2 * part_capacity() * f + (Bundle::grads_sharded ? max_shard() : max_padded()) * f);
  else
    plan_.add(optimizer_tier::id, "optimizer scratch: one layer's part", part_capacity() * f);
  if constexpr (narrow)
    plan_.add(optimizer_tier::id,
              "optimizer: the bf16 working copy of the updated part (one per scratch buffer)",
              (step_at_home ? 1 : 2) * part_capacity() * wb);
  if (cuda_enabled)  // accumulation sums on the host (accumulate_gradient)
    plan_.add(tier_id::pinned, "gradient accumulation: host copies of one layer's gradient",
              (optimizer_tier::id == tier_id::device ? 2 : 1) *
                  (Bundle::grads_sharded ? max_shard() : max_padded()) * f);
  plan_.add_held_by(ctx_);
  if constexpr (file_home) plan_.add_file_home_buffers(ctx_);
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
event zero_executor<Comm, Bundle, Prefetch>::copy_within(tier_id t, float* dst, const float* src,
                                                         std::size_t n, const std::string& label,
                                                         std::vector<event> after) {
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

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class W>
void zero_executor<Comm, Bundle, Prefetch>::accumulate_gradient(std::size_t i, std::size_t b,
                                                                const event& reduced, W& watch) {
  reduced.wait();
  const auto& lay = layouts_[i];
  const std::size_t count = Bundle::grads_sharded ? lay.shard_numel() : lay.padded_numel();
  const auto* src =
      static_cast<const float*>(Bundle::grads_sharded ? grad_shard_.data(b) : grad_full_.data(b));
  auto dw = grads_[i].template acquire<optimizer_tier>(read_write);
  float* dst = dw.data();
  const std::string label = "accumulate " + specs_[i].name;
  const std::size_t off = Bundle::grads_sharded ? 0 : lay.offset(comm_.rank());
  const auto valid = static_cast<std::size_t>(lay.valid_in(comm_.rank()));
  if constexpr (!cuda_enabled) {  // the emulated device is host memory
    ctx_.compute(label, [&] {
      for (std::size_t k = 0; k < count; ++k) dst[k] = dst[k] + src[k];
    });
    watch(i, dst + off, valid, optimizer_tier::id);
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
    {
      trace_recorder::scope span(ctx_.trace(), "compute", span_kind::compute, label);
      for (std::size_t k = 0; k < count; ++k) a[k] = a[k] + h[k];
    }
    watch(i, a + off, valid, tier_id::pinned);  // the sum, in host memory either way
    if constexpr (optimizer_tier::id == tier_id::device)
      ctx_.copy(dst, tier_id::device, a, tier_id::pinned, bytes, label).wait();
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::zero_device(float* p, std::size_t bytes) {
  if (!bytes) return;
#if STRATA_ENABLE_CUDA
  check_cuda(cudaMemsetAsync(p, 0, bytes, ctx_.compute_stream()), "zeroing gradient padding");
#else
  std::memset(p, 0, bytes);
#endif
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class Tensor>
Tensor zero_executor<Comm, Bundle, Prefetch>::make_state(std::size_t i, const char* what) {
  const int r = comm_.rank();
  std::string name = specs_[i].name + what + "[rank " + std::to_string(r) + "]";
  if constexpr (Tensor::sharded)
    return Tensor(ctx_, std::move(name), layouts_[i], r);
  else
    return Tensor(ctx_, std::move(name), shape{layouts_[i].padded_numel()});
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
auto zero_executor<Comm, Bundle, Prefetch>::bring(std::size_t i, std::size_t pos) -> in_flight {
  in_flight f;
  f.ring = gathered_.empty() ? 0 : pos % gathered_.size();
  f.shard = shard_ring_.empty() ? 0 : pos % shard_ring_.size();
  tensor_ref p = fetched(i);
  const working_type* src = nullptr;
  event src_ready;
  if constexpr (resident) {
    src = static_cast<const working_type*>(p.data(compute_tier::id));
    src_ready = p.ready(compute_tier::id);
  } else {
    auto& ring = stage == 3 ? shard_ring_ : gathered_;
    const std::size_t slot = stage == 3 ? f.shard : f.ring;
    if (const void* from = fresh_of(i)) {
      // A deferred update's new values, copied once their write home has succeeded (a failed
      // write fails this copy, and the forward, as a failed read would).
      std::vector<event> after = ring.take_uses(slot);
      after.push_back(deferred_->fresh_written[i]);
      src_ready = ctx_.copy(ring.data(slot), compute_tier::id, from, optimizer_tier::id,
                            layouts_[i].shard_numel() * sizeof(working_type),
                            "fetch " + specs_[i].name + " (from its update)", std::move(after));
      f.from_update = true;
    } else {
      p.fetch_into(compute_tier::id, ring.data(slot), ring.take_uses(slot));
      src_ready = p.ready(compute_tier::id);
    }
    src = static_cast<const working_type*>(ring.data(slot));
  }
  if constexpr (stage == 3) {
    auto* dst = static_cast<working_type*>(gathered_.data(f.ring));
    const std::size_t bytes = layouts_[i].shard_numel() * sizeof(working_type);
    std::vector<event> after = gathered_.take_uses(f.ring);
    after.push_back(src_ready);
    f.ready = collectives_.submit(
        span_kind::all_gather, "all-gather " + specs_[i].name,
        [this, src, dst, bytes] { comm_.all_gather(src, dst, bytes).wait(); }, std::move(after));
    f.full = dst;
  } else {
    f.full = src;
    f.ready = src_ready;
  }
  return f;
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::done_with(std::size_t i, const in_flight& f,
                                                      bool keep_shard) {
  event fence = ctx_.compute_fence();
  if constexpr (stage == 3) gathered_.add_use(f.ring, fence);
  if constexpr (!resident) {
    if (keep_shard) return;
    if (f.from_update)
      (stage == 3 ? shard_ring_ : gathered_).add_use(stage == 3 ? f.shard : f.ring, fence);
    else
      fetched(i).evict(compute_tier::id, {f.ready, fence});
    give_back_slot(i, f);
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
void zero_executor<Comm, Bundle, Prefetch>::give_back_slot(std::size_t i, const in_flight& f) {
  auto& ring = stage == 3 ? shard_ring_ : gathered_;
  ring.add_uses(stage == 3 ? f.shard : f.ring, f.from_update
                                                   ? std::vector<event>{f.ready}
                                                   : fetched(i).take_last_use(compute_tier::id));
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class Body>
void zero_executor<Comm, Bundle, Prefetch>::walk(bool backward, Body&& body, bool keep_shard) {
  const std::size_t n = specs_.size();
  auto index = [&](std::size_t p) { return backward ? n - 1 - p : p; };
  const std::size_t ahead = std::min(depth, n - 1);
  std::vector<in_flight> flight(n);
  std::size_t issued = 0;
  // A forward under a deferred step brings a layer only once its update has ended: the layer
  // at the walk's position is waited for, the ones ahead of it are brought when theirs has.
  auto may_bring = [&](std::size_t q, bool must) {
    return backward || !deferred_ || updated(index(q), must);
  };
  try {
    for (std::size_t p = 0; p < n; ++p) {
      // Up to `ahead` layers past p: the slot of layer p-1 is free by now.
      for (const std::size_t last = std::min(p + ahead, n - 1); issued <= last; ++issued) {
        if (!may_bring(issued, issued == p)) break;
        flight[issued] = bring(index(issued), issued);
      }
      const std::size_t i = index(p);
      flight[p].ready.wait();
      // Copied out of its update's scratch: the update two layers on may reuse it.
      if (flight[p].from_update) deferred_->taken[i].complete();
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
        tensor_ref t = fetched(index(p));
        if (t.holds(compute_tier::id) && !t.leased()) t.evict(compute_tier::id);
        give_back_slot(index(p), flight[p]);
      }
    throw;
  }
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
template <class G>
void zero_executor<Comm, Bundle, Prefetch>::compute_gradient(std::size_t i,
                                                             const working_type* w,
                                                             std::size_t b, G& g) {
  const auto& lay = layouts_[i];
  grad_full_.wait_free(b);
  float* dw = static_cast<float*>(grad_full_.data(b));
  ctx_.compute("backward " + specs_[i].name, [&] {
    g(i, w, dw, lay.numel());
    zero_device(dw + lay.numel(), (lay.padded_numel() - lay.numel()) * sizeof(float));
  });
}

template <comm::communicator Comm, zero_policy Bundle, class Prefetch>
event zero_executor<Comm, Bundle, Prefetch>::reduce_gradient(std::size_t i, std::size_t b,
                                                             event computed, bool land_home) {
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
    grad_shard_.add_use(b,
                        land_home ? grads_[i].ref().write_from(shard, compute_tier::id, {rs}) : rs);
    return rs;
  } else {
    const std::size_t count = lay.padded_numel();
    event ar = collectives_.submit(
        span_kind::reduce_scatter, "all-reduce " + specs_[i].name,
        [this, full, count] { comm_.all_reduce(full, full, count, comm::reduce_op::mean).wait(); },
        {computed});
    grad_full_.add_use(b,
                       land_home ? grads_[i].ref().write_from(full, compute_tier::id, {ar}) : ar);
    return ar;
  }
}

STRATA_NAMESPACE_END
