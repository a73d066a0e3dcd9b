// strata/infer/detail/layer_stream.inl — the bodies of layer_stream's members, declared and
// documented in infer/layer_stream.hpp (included at its end; not a header to include alone).
#pragma once

#include <algorithm>
#include <cstring>

STRATA_NAMESPACE_BEGIN

namespace infer {

template <comm::communicator Comm, class Placement, class Prefetch>
layer_stream<Comm, Placement, Prefetch>::layer_stream(context& ctx, Comm& comm,
                                                      std::vector<weight_layer> layers,
                                                      std::string name,
                                                      const plan_extension& extend)
    : ctx_(ctx),
      comm_(comm),
      name_(std::move(name)),
      layers_(std::move(layers)),
      collectives_("collectives", ctx.trace()) {
  if (layers_.empty()) throw config_error("layer_stream '" + name_ + "': no layers");
  const int world = sharded ? comm_.size() : 1;
  for (const weight_layer& l : layers_) {
    if (l.bytes == 0)
      throw config_error("layer_stream '" + name_ + "': layer '" + l.name + "' has no bytes");
    layouts_.emplace_back((l.bytes + unit_bytes - 1) / unit_bytes, world);
  }
  make_plan();
  if (extend) extend(*this, plan_);
  plan_.check(ctx_, name_);
  for (std::size_t i = 0; i < layers_.size(); ++i) tensors_.push_back(make_tensor(i));
  const std::size_t slots = std::min(depth + 1, layers_.size());
  if (sharded || !resident)
    gathered_ = buffer_ring(ctx_, compute_tier::id, slots, largest_layer_bytes(),
                            name_ + " layer ring");
  if (sharded && !resident)
    shards_ = buffer_ring(ctx_, compute_tier::id, slots, largest_shard_bytes(),
                          name_ + " slice ring");
  flying_.assign(layers_.size(), 0);
  set_.assign(layers_.size(), 0);
}

template <comm::communicator Comm, class Placement, class Prefetch>
layer_stream<Comm, Placement, Prefetch>::~layer_stream() {
  try {
    sync();
  } catch (...) {  // a failed copy or collective nobody waited for: nothing left to tell
  }
}

template <comm::communicator Comm, class Placement, class Prefetch>
std::size_t layer_stream<Comm, Placement, Prefetch>::stored_offset(std::size_t i) const {
  if constexpr (!sharded) return 0;
  return std::min(layouts_.at(i).offset(comm_.rank()) * unit_bytes, layers_[i].bytes);
}

template <comm::communicator Comm, class Placement, class Prefetch>
std::size_t layer_stream<Comm, Placement, Prefetch>::stored_bytes(std::size_t i) const {
  if constexpr (!sharded) return layers_.at(i).bytes;
  const std::size_t end =
      std::min((layouts_.at(i).offset(comm_.rank()) + layouts_[i].shard_numel()) * unit_bytes,
               layers_[i].bytes);
  return end - stored_offset(i);
}

template <comm::communicator Comm, class Placement, class Prefetch>
std::size_t layer_stream<Comm, Placement, Prefetch>::home_bytes() const noexcept {
  std::size_t total = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i)
    total += sharded ? shard_bytes(i) : padded_bytes(i);
  return total;
}

template <comm::communicator Comm, class Placement, class Prefetch>
std::size_t layer_stream<Comm, Placement, Prefetch>::largest_layer_bytes() const noexcept {
  std::size_t m = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i) m = std::max(m, padded_bytes(i));
  return m;
}

template <comm::communicator Comm, class Placement, class Prefetch>
std::size_t layer_stream<Comm, Placement, Prefetch>::largest_shard_bytes() const noexcept {
  std::size_t m = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i) m = std::max(m, shard_bytes(i));
  return m;
}

template <comm::communicator Comm, class Placement, class Prefetch>
void layer_stream<Comm, Placement, Prefetch>::make_plan() {
  const tier_id home = home_tier::id, dev = compute_tier::id;
  plan_.add(home,
            sharded ? "weights: this rank's slices of all layers" : "weights: all layers",
            home_bytes());
  const std::size_t slots = std::min(depth + 1, layers_.size());
  if (sharded || !resident)
    plan_.add(dev, std::to_string(slots) + " whole-layer buffers (Depth+1)",
              slots * largest_layer_bytes());
  if (sharded && !resident)
    plan_.add(dev, std::to_string(slots) + " layer-slice buffers (Depth+1)",
              slots * largest_shard_bytes());
  plan_.add_held_by(ctx_);
  if constexpr (file_home) plan_.add_file_home_buffers(ctx_);
}

template <comm::communicator Comm, class Placement, class Prefetch>
auto layer_stream<Comm, Placement, Prefetch>::make_tensor(std::size_t i) -> tensor_type {
  std::string name = name_ + "." + layers_[i].name;
  if constexpr (sharded) {
    name += "[rank " + std::to_string(comm_.rank()) + "]";
    return tensor_type(ctx_, std::move(name), layouts_[i], comm_.rank());
  } else {
    return tensor_type(ctx_, std::move(name), shape{layouts_[i].padded_numel()});
  }
}

template <comm::communicator Comm, class Placement, class Prefetch>
void layer_stream<Comm, Placement, Prefetch>::set_layer(std::size_t i,
                                                        std::span<const std::byte> whole) {
  if (whole.size() != layer(i).bytes)
    throw config_error("layer_stream '" + name_ + "': set_layer of layer '" + layers_[i].name +
                       "' with " + std::to_string(whole.size()) + " bytes; it has " +
                       std::to_string(layers_[i].bytes));
  set_stored(i, whole.subspan(stored_offset(i), stored_bytes(i)));
}

template <comm::communicator Comm, class Placement, class Prefetch>
void layer_stream<Comm, Placement, Prefetch>::set_stored(std::size_t i,
                                                         std::span<const std::byte> part) {
  if (part.size() != stored_bytes(i))
    throw config_error("layer_stream '" + name_ + "': set_stored of layer '" + layer(i).name +
                       "' with " + std::to_string(part.size()) + " bytes; rank " +
                       std::to_string(comm_.rank()) + " stores " + std::to_string(stored_bytes(i)) +
                       " of it (from byte " + std::to_string(stored_offset(i)) + ")");
  sync();
  tensor_ref t = tensors_[i].ref();
  if (part.size() == t.bytes()) {  // no padding: the caller's bytes go home as they are
    t.write_from(part.data(), tier_id::host, {}).wait();
    set_[i] = 1;
    return;
  }
  // The padding is written as zeros, so the ring's tail bytes are never uninitialised memory.
  std::vector<detail::weight_unit> units(tensors_[i].size());
  if (!part.empty()) std::memcpy(units.data(), part.data(), part.size());
  std::memset(reinterpret_cast<std::byte*>(units.data()) + part.size(), 0,
              units.size() * unit_bytes - part.size());
  tensors_[i].assign(units);
  set_[i] = 1;
}

template <comm::communicator Comm, class Placement, class Prefetch>
std::vector<std::byte> layer_stream<Comm, Placement, Prefetch>::layer_bytes(std::size_t i) {
  sync();
  const std::vector<detail::weight_unit> mine = tensors_.at(i).to_vector();
  std::vector<std::byte> whole(padded_bytes(i));
  if constexpr (sharded)
    comm_.all_gather(mine.data(), whole.data(), shard_bytes(i)).wait();
  else
    std::memcpy(whole.data(), mine.data(), whole.size());
  whole.resize(layers_[i].bytes);
  return whole;
}

template <comm::communicator Comm, class Placement, class Prefetch>
bool layer_stream<Comm, Placement, Prefetch>::in_flight(std::size_t i) const {
  return flying_.at(i) != 0;
}

template <comm::communicator Comm, class Placement, class Prefetch>
auto layer_stream<Comm, Placement, Prefetch>::bring(std::size_t i, std::size_t pos) -> flight {
  flight f;
  f.live = true;
  tensor_ref t = tensors_[i].ref();
  const std::byte* src = nullptr;
  if constexpr (resident) {
    src = static_cast<const std::byte*>(t.data(compute_tier::id));
  } else {
    buffer_ring& ring = sharded ? shards_ : gathered_;
    f.slot = pos % ring.size();
    t.fetch_into(compute_tier::id, ring.data(f.slot), ring.take_uses(f.slot));
    src = static_cast<const std::byte*>(ring.data(f.slot));
    stats_.home_bytes += t.bytes();
  }
  event src_ready = t.ready(compute_tier::id);
  if constexpr (sharded) {
    if constexpr (resident) f.slot = pos % gathered_.size();
    auto* dst = static_cast<std::byte*>(gathered_.data(f.slot));
    const std::size_t bytes = shard_bytes(i);
    std::vector<event> after = gathered_.take_uses(f.slot);
    after.push_back(std::move(src_ready));
    f.ready = collectives_.submit(
        span_kind::all_gather, "all-gather " + layers_[i].name,
        [this, src, dst, bytes] { comm_.all_gather(src, dst, bytes).wait(); }, std::move(after));
    f.whole = dst;
    stats_.gathered_bytes += bytes * static_cast<std::size_t>(comm_.size() - 1);
  } else {
    f.whole = src;
    f.ready = std::move(src_ready);
  }
  flying_[i] = 1;
  return f;
}

template <comm::communicator Comm, class Placement, class Prefetch>
void layer_stream<Comm, Placement, Prefetch>::done_with(std::size_t i, flight& f) {
  event fence = ctx_.compute_fence();
  if constexpr (sharded) gathered_.add_use(f.slot, fence);
  if constexpr (!resident) {
    tensors_[i].ref().evict(compute_tier::id, {f.ready, fence});
    give_back(i, f);
  }
  f.live = false;
  flying_[i] = 0;
}

template <comm::communicator Comm, class Placement, class Prefetch>
void layer_stream<Comm, Placement, Prefetch>::give_back(std::size_t i, flight& f) {
  buffer_ring& ring = sharded ? shards_ : gathered_;
  ring.add_uses(f.slot, tensors_[i].ref().take_last_use(compute_tier::id));
}

template <comm::communicator Comm, class Placement, class Prefetch>
template <class Body>
void layer_stream<Comm, Placement, Prefetch>::walk(Body&& body) {
  const std::size_t n = layers_.size();
  for (std::size_t i = 0; i < n; ++i)
    if (!set_[i])
      throw config_error("layer_stream '" + name_ + "': layer '" + layers_[i].name +
                         "' was never set (set_layer or set_stored every layer before a walk)");
  const std::size_t ahead = std::min(depth, n - 1);
  std::vector<flight> fl(n);
  std::size_t issued = 0;
  try {
    for (; issued <= ahead; ++issued) fl[issued] = bring(issued, issued);
    for (std::size_t p = 0; p < n; ++p) {
      if (p > 0 && p + ahead < n) {  // layer p-1's buffers are free: bring p+ahead
        fl[issued] = bring(issued, issued);
        ++issued;
      }
      fl[p].ready.wait();
      body(p, fl[p].whole);
      done_with(p, fl[p]);
    }
  } catch (...) {
    // Whatever is still in flight borrows ring memory: let it finish, then drop it.
    try {
      collectives_.synchronize();
    } catch (...) {
    }
    for (std::size_t p = 0; p < issued; ++p) {
      if (!fl[p].live) continue;
      if constexpr (!resident) {
        tensor_ref t = tensors_[p].ref();
        if (t.holds(compute_tier::id) && !t.leased()) t.evict(compute_tier::id);
        give_back(p, fl[p]);
      }
      flying_[p] = 0;
    }
    throw;
  }
  ++stats_.passes;
}

template <comm::communicator Comm, class Placement, class Prefetch>
template <class F>
void layer_stream<Comm, Placement, Prefetch>::forward(F&& f) {
  walk([&](std::size_t i, const std::byte* w) {
    ctx_.compute("compute " + layers_[i].name, [&] { f(i, w); });
    ++stats_.computes;
  });
}

template <comm::communicator Comm, class Placement, class Prefetch>
template <class F>
void layer_stream<Comm, Placement, Prefetch>::forward(std::size_t micro_batches, F&& f) {
  if (micro_batches == 0)
    throw config_error("layer_stream '" + name_ + "': a block needs at least one micro-batch");
  walk([&](std::size_t i, const std::byte* w) {
    for (std::size_t j = 0; j < micro_batches; ++j) {
      ctx_.compute("compute " + layers_[i].name + " mb " + std::to_string(j),
                   [&] { f(i, j, w); });
      ++stats_.computes;
    }
  });
}

}  // namespace infer

STRATA_NAMESPACE_END
