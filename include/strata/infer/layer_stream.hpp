// strata/infer/layer_stream.hpp — streamed inference's weights: a model's layers kept on their
// home tier and walked through a fixed ring of buffers on the compute tier, ahead of use.
//
//   layer_stream<comm::solo, placement<tier::device, tier::pinned, tier::nvme>,
//                prefetch::lookahead<2>> w(ctx, comm, {{"h.0", bytes0}, ...});
//   w.set_layer(0, bytes_of_layer0);                       // once, at load
//   w.forward(k, [&](std::size_t i, std::size_t j, const std::byte* layer) { ... });
//
// What this is: the inference side's sibling of zero_executor (schedule/executor.hpp). Each
// layer is an opaque run of bytes — the caller's packing of its tensors, in whatever format
// (f32, bf16, f16, 4-bit groups: core/quant.hpp) — homed on the placement's last tier. A walk
// calls the caller for every layer in order with that layer's bytes on the compute tier, while
// the next Depth layers are already being fetched into the other buffers of a ring of Depth+1
// (prefetch::lookahead<Depth>); so the compute tier holds Depth+1 layers whatever the model's
// size, and reading layer i+Depth overlaps the compute of layer i.
//
// Batch blocks (FlexGen's zig-zag order): forward(k, f) calls f(i, j, bytes) for the k
// micro-batches j of a block before it moves on to layer i+1, so one transfer of a layer serves
// k micro-batches. The counters (stats()) make that observable: a pass reads every stored byte
// from home once, whatever k is.
//
// Several ranks: with a sharded placement (sharded_placement<...>) each rank keeps only its
// 1/R slice of every layer at home, fetches that slice and all-gathers the others' into the
// ring (ZeRO-Inference's multi-GPU trick: R ranks read R times faster than one); a replicated
// placement keeps the whole layer on every rank. Either way the caller sees whole layers.
//
// Memory: everything is planned up front (plan(), memory_plan.hpp) and refused in the
// constructor when it does not fit — before a byte of the model is loaded. A caller that holds
// more beside the stream (activations, the KV cache, the embeddings) adds those lines through
// the plan extension, so that the one check covers them and a refusal shows every line.
// What this is not: the model's compute, its KV cache (infer/kv_cache.hpp) or a loader of
// files (the caller fills layers with set_layer / set_stored). Not thread-safe; one per rank.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/exec/buffer_ring.hpp>
#include <strata/exec/work_queue.hpp>
#include <strata/schedule/memory_plan.hpp>
#include <strata/tensor/shard_layout.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <cstddef>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

STRATA_NAMESPACE_BEGIN

namespace infer {

namespace detail {
// The element of a stream's tensors: layers are split, padded and aligned in these.
struct alignas(64) weight_unit {
  std::byte bytes[64];
};
static_assert(sizeof(weight_unit) == 64 && std::is_trivially_copyable_v<weight_unit>);
}  // namespace detail

/// One layer as the stream sees it: a name (for messages and the trace) and its bytes.
struct weight_layer {
  std::string name;
  std::size_t bytes;
};

/// What the walks moved, on this rank, since the stream was made (or reset_stats()).
struct stream_stats {
  std::size_t passes = 0;          // forward() calls
  std::size_t home_bytes = 0;      // bytes fetched from the home tier (this rank's slices)
  std::size_t gathered_bytes = 0;  // bytes all-gathered from the other ranks
  std::size_t computes = 0;        // calls of the caller's function (layers x micro-batches)
};

template <comm::communicator Comm, class Placement, class Prefetch = prefetch::lookahead<1>>
class layer_stream {
  static_assert(placement_policy<Placement>,
                "layer_stream<Comm, Placement, Prefetch>: Placement must be a strata::placement "
                "or sharded_placement, compute tier first and home tier last");
  static_assert(prefetch_policy<Prefetch>,
                "layer_stream<Comm, Placement, Prefetch>: Prefetch is prefetch::none or "
                "prefetch::lookahead<Depth>, as for tensor_sequence");

public:
  using placement_type = Placement;
  using prefetch_type = Prefetch;
  using compute_tier = typename Placement::compute_tier;
  using home_tier = typename Placement::home_tier;
  static constexpr std::size_t depth = Prefetch::depth;
  static constexpr bool sharded = Placement::partition_type::is_sharded;
  static constexpr bool resident = Placement::tier_count == 1;  // home is the compute tier
  static constexpr bool file_home = home_tier::kind == tier_kind::file;
  /// Layers are split and padded in units of this many bytes, so every slice and every ring
  /// buffer starts on a 64-byte boundary whatever the layers' sizes.
  static constexpr std::size_t unit_bytes = 64;

  /// Adds the caller's lines to the stream's plan before it is checked (size(), layer(),
  /// comm() and ctx() answer; nothing is allocated yet).
  using plan_extension = std::function<void(layer_stream&, memory_plan&)>;

  layer_stream(context& ctx, Comm& comm, std::vector<weight_layer> layers,
               std::string name = "weights", const plan_extension& extend = {});
  ~layer_stream();
  layer_stream(const layer_stream&) = delete;
  layer_stream& operator=(const layer_stream&) = delete;

  const memory_plan& plan() const noexcept { return plan_; }
  std::size_t size() const noexcept { return layers_.size(); }
  const weight_layer& layer(std::size_t i) const { return layers_.at(i); }
  Comm& comm() noexcept { return comm_; }
  context& ctx() noexcept { return ctx_; }
  const std::string& name() const noexcept { return name_; }

  /// The bytes of layer i this rank stores, and where they start in the layer: all of it for a
  /// replicated placement, this rank's slice (possibly short, or empty, at the end) when
  /// sharded. A loader that reads only what it stores (set_stored) reads this range.
  std::size_t stored_offset(std::size_t i) const;
  std::size_t stored_bytes(std::size_t i) const;
  /// Bytes this rank keeps at home over all layers (padding included).
  std::size_t home_bytes() const noexcept;
  /// The largest layer, padded: one ring buffer.
  std::size_t largest_layer_bytes() const noexcept;

  /// Sets layer i from its whole bytes (every rank passes the same; each keeps its part).
  void set_layer(std::size_t i, std::span<const std::byte> whole);
  /// Sets what this rank stores of layer i (stored_bytes(i) bytes from stored_offset(i)).
  void set_stored(std::size_t i, std::span<const std::byte> part);
  /// Layer i's whole bytes on the host (a collective when sharded: every rank must call it).
  std::vector<std::byte> layer_bytes(std::size_t i);

  /// Walks the layers in order: f(i, bytes) with layer i's layer(i).bytes bytes on the compute
  /// tier (valid during the call only), the next Depth layers in flight meanwhile.
  template <class F>
  void forward(F&& f);
  /// The batch-block walk: f(i, j, bytes) for j = 0 .. micro_batches-1 before layer i+1.
  template <class F>
  void forward(std::size_t micro_batches, F&& f);

  /// True when layer i is on the compute tier or on its way there (fetched, gathered or in
  /// flight): what a test looks at, inside the walk, to see the lookahead.
  bool in_flight(std::size_t i) const;

  const stream_stats& stats() const noexcept { return stats_; }
  void reset_stats() noexcept { stats_ = {}; }

  /// Waits for every copy and collective the stream started; rethrows their failures.
  void sync() {
    collectives_.synchronize();
    ctx_.synchronize();
  }

private:
  using tensor_type = tiered_tensor<detail::weight_unit, Placement>;

  std::size_t padded_bytes(std::size_t i) const { return layouts_[i].padded_numel() * unit_bytes; }
  std::size_t shard_bytes(std::size_t i) const { return layouts_[i].shard_numel() * unit_bytes; }
  std::size_t largest_shard_bytes() const noexcept;

  void make_plan();
  tensor_type make_tensor(std::size_t i);

  // Where layer i will be on the compute tier, and when.
  struct flight {
    const std::byte* whole = nullptr;
    event ready;
    std::size_t slot = 0;  // ring slot (gathered_ for the whole layer, shards_ for a slice)
    bool live = false;     // issued and not yet given back
  };
  flight bring(std::size_t i, std::size_t pos);
  void done_with(std::size_t i, flight& f);
  void give_back(std::size_t i, flight& f);

  template <class Body>
  void walk(Body&& body);

  context& ctx_;
  Comm& comm_;
  std::string name_;
  std::vector<weight_layer> layers_;
  std::vector<shard_layout> layouts_;  // in units of unit_bytes, over comm.size() ranks
  memory_plan plan_;
  std::deque<tensor_type> tensors_;
  buffer_ring gathered_;  // Depth+1 whole layers on the compute tier (unless resident, replicated)
  buffer_ring shards_;    // Depth+1 slices on the compute tier (sharded, away from home only)
  std::vector<char> flying_;  // by layer: in flight or on the compute tier during a walk
  std::vector<char> set_;     // by layer: set_layer / set_stored was called
  stream_stats stats_;
  work_queue collectives_;  // last: its thread stops before the buffers it uses go
};

}  // namespace infer

STRATA_NAMESPACE_END

#include <strata/infer/detail/layer_stream.inl>
