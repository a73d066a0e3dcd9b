// examples/gpt/streamed_model.hpp — the decoder's weights and caches through strata's infer
// floor, with the policy chosen at run time (gpt_generate's --policy, --depth, --kv-tier).
//
// What this is: block_source and kv_source (decoder.hpp) made of infer::layer_stream and
// infer::kv_cache. The library's types take their placement and lookahead as types; the
// command line names them as words; make_block_stream / make_tiered_kv turn the words into
// the types (one instantiation per combination, chosen by a switch) behind the decoder's two
// small interfaces. Several ranks (a communicator with size() > 1) store 1/R of every block
// each and all-gather it (a sharded placement); one rank stores whole blocks.
// What it is not: the model's math (decoder.hpp) or the command line (generate.cpp).
#pragma once

#include "decoder.hpp"
#include "stored_block.hpp"

#include <strata/comm/communicator.hpp>
#include <strata/infer/kv_cache.hpp>
#include <strata/infer/layer_stream.hpp>

#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace gpt {

/// Where the blocks' weights live (their home tier): the compute tier itself (resident), or a
/// tier below it that the stream fetches each layer from.
enum class weight_home { resident, pinned, host, nvme };
/// Where the KV cache lives.
enum class kv_home { device, pinned, host, nvme };

inline const char* home_name(weight_home h) {
  switch (h) {
    case weight_home::resident: return "resident";
    case weight_home::pinned: return "pinned";
    case weight_home::host: return "host";
    case weight_home::nvme: return "nvme";
  }
  return "?";
}
inline const char* home_name(kv_home h) {
  switch (h) {
    case kv_home::device: return "device";
    case kv_home::pinned: return "pinned";
    case kv_home::host: return "host";
    case kv_home::nvme: return "nvme";
  }
  return "?";
}
inline weight_home parse_weight_home(const std::string& s) {
  for (weight_home h : {weight_home::resident, weight_home::pinned, weight_home::host, weight_home::nvme})
    if (s == home_name(h)) return h;
  throw std::invalid_argument("policy '" + s + "': expected resident, pinned, host or nvme");
}
inline kv_home parse_kv_home(const std::string& s) {
  for (kv_home h : {kv_home::device, kv_home::pinned, kv_home::host, kv_home::nvme})
    if (s == home_name(h)) return h;
  throw std::invalid_argument("KV tier '" + s + "': expected device, pinned, host or nvme");
}

/// The blocks as a stream: a block_source that is loaded a block at a time, and reports its
/// plan and its traffic.
class block_stream : public block_source {
public:
  virtual const strata::memory_plan& plan() const = 0;
  /// Sets block l from its stored bytes (layout().bytes; every rank passes the whole block).
  virtual void set_block(std::size_t l, std::span<const std::byte> bytes) = 0;
  virtual strata::infer::stream_stats stats() const = 0;
  /// Bytes this rank's home holds: what one pass reads (away from a resident home).
  virtual std::size_t home_bytes() const = 0;
};

namespace detail {

template <class Comm, class Placement, class Prefetch>
class block_stream_on final : public block_stream {
public:
  using stream_type = strata::infer::layer_stream<Comm, Placement, Prefetch>;

  block_stream_on(strata::context& ctx, Comm& comm, const gpt_config& cfg, weight_format f,
                  const strata::memory_plan& extra)
      : layout_(make_block_layout(cfg, f)),
        stream_(ctx, comm, specs(cfg, layout_.bytes), "blocks",
                [&](stream_type&, strata::memory_plan& p) { p.add(extra); }) {}

  const gpt::block_layout& layout() const override { return layout_; }
  std::size_t layers() const override { return stream_.size(); }
  void walk(std::size_t micro_batches, const block_visit& f) override {
    stream_.forward(micro_batches,
                    [&](std::size_t l, std::size_t j, const std::byte* w) { f(l, j, w); });
  }
  const strata::memory_plan& plan() const override { return stream_.plan(); }
  void set_block(std::size_t l, std::span<const std::byte> bytes) override {
    stream_.set_layer(l, bytes);
  }
  strata::infer::stream_stats stats() const override { return stream_.stats(); }
  std::size_t home_bytes() const override {
    return stream_type::resident ? 0 : stream_.home_bytes();
  }

private:
  static std::vector<strata::infer::weight_layer> specs(const gpt_config& cfg, std::size_t bytes) {
    std::vector<strata::infer::weight_layer> s;
    for (int l = 0; l < cfg.layers; ++l) s.push_back({"h." + std::to_string(l), bytes});
    return s;
  }

  gpt::block_layout layout_;
  stream_type stream_;
};

template <class Placement, class Prefetch>
class tiered_kv_on final : public kv_source {
public:
  using cache_type = strata::infer::kv_cache<Placement, Prefetch>;
  tiered_kv_on(strata::context& ctx, const gpt_config& cfg, int B)
      : kv_(ctx, std::size_t(cfg.layers), kv_floats_per_layer(cfg, B) * sizeof(float)) {}
  void begin() override { kv_.begin_pass(); }
  float* open(std::size_t l) override { return reinterpret_cast<float*>(kv_.open(l)); }
  void close(std::size_t l) override { kv_.close(l); }
  void end() override { kv_.end_pass(); }
  void abandon() noexcept override {
    try {
      kv_.abandon_pass();
    } catch (...) {
    }
  }

private:
  cache_type kv_;
};

// Calls f(type_tag<Placement>) for the KV home h.
template <class F>
decltype(auto) with_kv_placement(kv_home h, F&& f) {
  using namespace strata;
  switch (h) {
    case kv_home::device: return f(std::type_identity<placement<tier::device>>{});
    case kv_home::pinned: return f(std::type_identity<offloaded_to_pinned>{});
    case kv_home::host: return f(std::type_identity<offloaded_to_host>{});
    case kv_home::nvme: return f(std::type_identity<offloaded_to_nvme>{});
  }
  throw std::invalid_argument("KV tier: unknown value");
}

// Calls f(type_tag<Placement>, type_tag<Prefetch>) for the weight home and depth (0: no
// lookahead; at most 3). Sharded placements when `sharded`.
template <bool Sharded, class F>
decltype(auto) with_weight_policy(weight_home h, int depth, F&& f) {
  using namespace strata;
  auto with_depth = [&](auto placement) -> decltype(auto) {
    switch (depth) {
      case 0: return f(placement, std::type_identity<prefetch::none>{});
      case 1: return f(placement, std::type_identity<prefetch::lookahead<1>>{});
      case 2: return f(placement, std::type_identity<prefetch::lookahead<2>>{});
      case 3: return f(placement, std::type_identity<prefetch::lookahead<3>>{});
    }
    throw std::invalid_argument("lookahead depth " + std::to_string(depth) + ": expected 0 .. 3");
  };
  switch (h) {
    case weight_home::resident:
      if constexpr (Sharded)
        return with_depth(std::type_identity<sharded_placement<tier::device>>{});
      else
        return f(std::type_identity<placement<tier::device>>{},
                 std::type_identity<prefetch::none>{});
    case weight_home::pinned:
      if constexpr (Sharded)
        return with_depth(std::type_identity<sharded_placement<tier::device, tier::pinned>>{});
      else
        return with_depth(std::type_identity<offloaded_to_pinned>{});
    case weight_home::host:
      if constexpr (Sharded)
        return with_depth(std::type_identity<sharded_placement<tier::device, tier::host>>{});
      else
        return with_depth(std::type_identity<offloaded_to_host>{});
    case weight_home::nvme:
      if constexpr (Sharded)
        return with_depth(
            std::type_identity<sharded_placement<tier::device, tier::pinned, tier::nvme>>{});
      else
        return with_depth(std::type_identity<offloaded_to_nvme>{});
  }
  throw std::invalid_argument("policy: unknown weight home");
}

}  // namespace detail

/// The tier a KV cache on h lives on (its placement's home).
inline strata::tier_id home_tier_of(kv_home h) {
  return detail::with_kv_placement(h, [](auto p) { return decltype(p)::type::home_tier::id; });
}

/// The plan's lines of a KV cache for B rows on tier h (lookahead 1), for a stream's plan.
inline strata::memory_plan kv_plan(const strata::context& ctx, const gpt_config& cfg, int B,
                                   kv_home h) {
  return detail::with_kv_placement(h, [&](auto p) {
    using P = typename decltype(p)::type;
    return strata::infer::kv_cache<P, strata::prefetch::lookahead<1>>::plan_for(
        ctx, std::size_t(cfg.layers), kv_floats_per_layer(cfg, B) * sizeof(float));
  });
}

/// The KV cache for B rows on tier h, one layer ahead in flight.
inline std::unique_ptr<kv_source> make_tiered_kv(strata::context& ctx, const gpt_config& cfg,
                                                 int B, kv_home h) {
  return detail::with_kv_placement(h, [&](auto p) -> std::unique_ptr<kv_source> {
    using P = typename decltype(p)::type;
    return std::make_unique<detail::tiered_kv_on<P, strata::prefetch::lookahead<1>>>(ctx, cfg, B);
  });
}

/// The blocks of `cfg` in format f, homed on h, walked with `depth` layers in flight; `extra`
/// (the caller's other lines: KV cache, activations) joins the stream's plan before its check,
/// so a plan that does not fit is refused here, before any block is loaded.
template <strata::comm::communicator Comm>
std::unique_ptr<block_stream> make_block_stream(strata::context& ctx, Comm& comm,
                                                const gpt_config& cfg, weight_format f,
                                                weight_home h, int depth,
                                                const strata::memory_plan& extra) {
  auto make = [&](auto placement, auto prefetch) -> std::unique_ptr<block_stream> {
    using P = typename decltype(placement)::type;
    using D = typename decltype(prefetch)::type;
    return std::make_unique<detail::block_stream_on<Comm, P, D>>(ctx, comm, cfg, f, extra);
  };
  if (comm.size() > 1) return detail::with_weight_policy<true>(h, depth, make);
  return detail::with_weight_policy<false>(h, depth, make);
}

}  // namespace gpt
