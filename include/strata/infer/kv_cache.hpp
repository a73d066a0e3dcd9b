// strata/infer/kv_cache.hpp — a decoder's key/value cache as tiered tensors: one per layer,
// homed where the policy says (device, pinned, host or NVMe) and streamed per layer like the
// weights.
//
//   kv_cache<placement<tier::device, tier::host>, prefetch::lookahead<1>> kv(ctx, layers, bytes);
//   kv.begin_pass();                       // a walk over the layers starts
//   for each layer l:  std::byte* c = kv.open(l);  ...append to and read c...;  kv.close(l);
//   kv.end_pass();
//
// What this is: a cursor over per-layer caches that runs in step with a weight walk
// (layer_stream's callback opens layer l's cache, the model reads and appends to it, and
// closes it). With a home below the compute tier, open(l) leases layer l's cache read_write in
// one buffer of a ring of Depth+1 on the compute tier while layers l+1 .. l+Depth are already
// being fetched into the others; close(l) ends the lease, which writes the cache home (it
// changed: the new positions were appended) and frees the buffer for layer l+Depth+1. So the
// compute tier holds Depth+1 layers' caches whatever the number of layers or the context
// length. With a single-tier placement the caches simply live on the compute tier.
// ZeRO-Inference keeps its KV offload in a fork of transformers; here it is a placement.
// What this is not: attention (the model's), or paging within a layer (a layer's cache moves
// whole: (rows, heads, context, head_size) x 2 as the caller packs it). Not thread-safe.
#pragma once

#include <strata/exec/buffer_ring.hpp>
#include <strata/schedule/memory_plan.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <algorithm>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN

namespace infer {

template <class Placement, class Prefetch = prefetch::lookahead<1>>
class kv_cache {
  static_assert(placement_policy<Placement> && !Placement::partition_type::is_sharded,
                "kv_cache<Placement, ...>: Placement is a replicated strata::placement (each "
                "rank caches its own sequences), compute tier first and home tier last");
  static_assert(prefetch_policy<Prefetch>,
                "kv_cache<Placement, Prefetch>: Prefetch is prefetch::none or "
                "prefetch::lookahead<Depth>");

public:
  using placement_type = Placement;
  using compute_tier = typename Placement::compute_tier;
  using home_tier = typename Placement::home_tier;
  static constexpr std::size_t depth = Prefetch::depth;
  static constexpr bool resident = Placement::tier_count == 1;
  static constexpr bool file_home = home_tier::kind == tier_kind::file;

  /// The plan's lines for a cache of `layers` x `bytes_per_layer` in `ctx` (what the
  /// constructor will hold): a caller adds them to its plan (layer_stream's plan extension)
  /// before the check.
  static memory_plan plan_for(const context& ctx, std::size_t layers,
                              std::size_t bytes_per_layer) {
    memory_plan p;
    p.add(home_tier::id, "KV cache: all layers", layers * bytes_per_layer);
    if constexpr (!resident)
      p.add(compute_tier::id,
            "KV cache: " + std::to_string(slots(layers)) + " layer buffers (Depth+1)",
            slots(layers) * bytes_per_layer);
    if constexpr (file_home) p.add_file_home_buffers(ctx);
    return p;
  }

  /// `layers` caches of `bytes_per_layer` bytes each, zeroed, at home (charged to the tiers'
  /// budgets; plan them first with plan_for). A file home is not written: never-written data
  /// reads as zeros.
  kv_cache(context& ctx, std::size_t layers, std::size_t bytes_per_layer,
           std::string name = "kv")
      : ctx_(&ctx), name_(std::move(name)), bytes_(bytes_per_layer) {
    if (layers == 0 || bytes_per_layer == 0)
      throw config_error("kv_cache '" + name_ + "': needs at least one layer and one byte");
    const std::vector<std::byte> zeros(file_home ? 0 : bytes_per_layer);
    for (std::size_t l = 0; l < layers; ++l) {
      tensors_.emplace_back(ctx, name_ + ".h." + std::to_string(l), shape{bytes_per_layer});
      if constexpr (!file_home) tensors_.back().assign(zeros);
    }
    if constexpr (!resident)
      ring_ = buffer_ring(ctx, compute_tier::id, slots(layers), bytes_per_layer,
                          name_ + " layer ring");
    leases_.resize(layers);
  }
  ~kv_cache() {
    try {
      abandon_pass();
      ctx_->synchronize();
    } catch (...) {
    }
  }
  kv_cache(const kv_cache&) = delete;
  kv_cache& operator=(const kv_cache&) = delete;

  std::size_t layers() const noexcept { return tensors_.size(); }
  std::size_t bytes_per_layer() const noexcept { return bytes_; }
  /// Layer fetches issued since the cache was made: what a test counts.
  std::size_t fetches() const noexcept { return fetches_; }

  /// Starts a walk: fetches of layers 0 .. Depth are issued.
  void begin_pass() {
    if (in_pass_) throw config_error("kv_cache '" + name_ + "': begin_pass inside a pass");
    in_pass_ = true;
    next_ = 0;
    issued_ = 0;
    issue_up_to(std::min(depth, layers() - 1));
  }

  /// Layer l's cache on the compute tier, read-write, until close(l). Layers are opened in
  /// order, one at a time.
  std::byte* open(std::size_t l) {
    if (!in_pass_ || l != next_ || leases_[l])
      throw config_error("kv_cache '" + name_ + "': open(" + std::to_string(l) +
                         ") out of order (the walk expects layer " + std::to_string(next_) +
                         (in_pass_ ? ")" : " after begin_pass())"));
    issue_up_to(std::min(l + depth, layers() - 1));
    leases_[l].emplace(tensors_[l].ref().template acquire<std::byte, compute_tier>());
    return leases_[l]->data();
  }

  /// Ends layer l's lease: the cache goes home (after the compute that used it) and its buffer
  /// takes layer l+Depth+1.
  void close(std::size_t l) {
    if (!in_pass_ || l != next_ || !leases_[l])
      throw config_error("kv_cache '" + name_ + "': close(" + std::to_string(l) +
                         ") of a layer that is not open");
    leases_[l].reset();
    give_back(l);
    ++next_;
  }

  /// Ends the walk (every layer opened and closed).
  void end_pass() {
    if (!in_pass_ || next_ != layers())
      throw config_error("kv_cache '" + name_ + "': end_pass after " + std::to_string(next_) +
                         " of " + std::to_string(layers()) + " layers");
    in_pass_ = false;
  }

  /// Drops a walk that failed part-way: open leases end (their caches written home), fetched
  /// copies are dropped, buffers handed back. The caches keep what the closed layers appended.
  void abandon_pass() {
    if (!in_pass_) return;
    for (std::size_t l = next_; l < issued_; ++l) {
      if (leases_[l]) leases_[l].reset();
      if constexpr (!resident) {
        tensor_ref t = tensors_[l].ref();
        if (t.holds(compute_tier::id) && !t.leased()) t.evict(compute_tier::id);
      }
      give_back(l);
    }
    in_pass_ = false;
  }

  /// Layer l's cache on the host (waits): for tests and inspection.
  std::vector<std::byte> layer_bytes(std::size_t l) {
    return tensors_.at(l).to_vector();
  }

private:
  using tensor_type = tiered_tensor<std::byte, Placement>;

  static std::size_t slots(std::size_t layers) { return std::min(depth + 1, layers); }

  void issue_up_to(std::size_t last) {
    for (; issued_ <= last; ++issued_) {
      if constexpr (!resident) {
        const std::size_t k = issued_ % ring_.size();
        tensors_[issued_].ref().fetch_into(compute_tier::id, ring_.data(k), ring_.take_uses(k));
        ++fetches_;
      }
    }
  }

  void give_back(std::size_t l) {
    if constexpr (!resident)
      ring_.add_uses(l % ring_.size(), tensors_[l].ref().take_last_use(compute_tier::id));
  }

  context* ctx_;
  std::string name_;
  std::size_t bytes_;
  std::deque<tensor_type> tensors_;
  buffer_ring ring_;
  std::vector<std::optional<lease<std::byte, compute_tier>>> leases_;
  bool in_pass_ = false;
  std::size_t next_ = 0;    // the layer the walk opens next
  std::size_t issued_ = 0;  // layers [0, issued_) fetched in this pass
  std::size_t fetches_ = 0;
};

}  // namespace infer

STRATA_NAMESPACE_END
