// tests/io/test_layer_stream.cpp — infer::layer_stream: streamed layers are the resident bytes,
// bitwise, for every home tier, depth, block size and world size; the lookahead and the batch
// block are observable; a plan that does not fit is refused before anything is loaded.
#include "catch.hpp"
#include "io_test_support.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>
#include <strata/infer/layer_stream.hpp>

#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

using namespace strata;

namespace {

// Odd sizes on purpose: padding to the 64-byte unit and uneven slices across ranks.
const std::vector<std::size_t> layer_sizes{1000, 4097, 64, 3, 2500};

std::vector<std::vector<std::byte>> random_layers(std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::vector<std::byte>> out;
  for (std::size_t n : layer_sizes) {
    std::vector<std::byte> l(n);
    for (auto& b : l) b = static_cast<std::byte>(gen() & 0xff);
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<infer::weight_layer> specs() {
  std::vector<infer::weight_layer> s;
  for (std::size_t i = 0; i < layer_sizes.size(); ++i)
    s.push_back({"h." + std::to_string(i), layer_sizes[i]});
  return s;
}

struct walk_record {
  std::vector<std::pair<std::size_t, std::size_t>> order;  // (layer, micro-batch) as called
  std::vector<std::vector<std::byte>> seen;                // layer bytes as the compute saw them
  bool lookahead_ok = true;
  infer::stream_stats stats;
  std::size_t home_bytes = 0;
  bool peaks_within_plan = false;
  std::string plan;
};

template <std::size_t Depth>
using depth_policy = std::conditional_t<Depth == 0, prefetch::none, prefetch::lookahead<Depth>>;

template <class Placement, std::size_t Depth, class Comm>
walk_record walk_once(Comm& comm, context& ctx, std::size_t block, int passes = 2) {
  const auto layers = random_layers(7);
  infer::layer_stream<Comm, Placement, depth_policy<Depth>> s(ctx, comm, specs());
  for (std::size_t i = 0; i < layers.size(); ++i) s.set_layer(i, layers[i]);
  walk_record r;
  r.seen.resize(layers.size());
  for (int pass = 0; pass < passes; ++pass) {
    r.order.clear();
    s.forward(block, [&](std::size_t i, std::size_t j, const std::byte* w) {
      r.order.emplace_back(i, j);
      r.seen[i].assign(w, w + layer_sizes[i]);
      // Lookahead: the next Depth layers are already on their way, the one after is not.
      if (!decltype(s)::resident || decltype(s)::sharded) {
        for (std::size_t d = 1; d <= Depth && i + d < layers.size(); ++d)
          r.lookahead_ok = r.lookahead_ok && s.in_flight(i + d);
        if (i + Depth + 1 < layers.size())
          r.lookahead_ok = r.lookahead_ok && !s.in_flight(i + Depth + 1);
      }
    });
  }
  r.stats = s.stats();
  r.home_bytes = s.home_bytes();
  r.peaks_within_plan = s.plan().covers_peaks(ctx);
  r.plan = s.plan().to_string(&ctx);
  return r;
}

template <class Placement, std::size_t Depth>
void check_streamed(std::size_t block) {
  INFO("home " << tier_name(Placement::home_tier::id) << ", depth " << Depth << ", block "
               << block);
  comm::solo one;
  context ctx(io_test::toy_nvme_config(0));
  const walk_record r = walk_once<Placement, Depth>(one, ctx, block);
  const auto layers = random_layers(7);
  INFO(r.plan);
  REQUIRE(r.seen.size() == layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) CHECK(r.seen[i] == layers[i]);
  // Zig-zag: every micro-batch of the block meets layer i before layer i+1 is computed.
  std::vector<std::pair<std::size_t, std::size_t>> expect;
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (std::size_t j = 0; j < block; ++j) expect.emplace_back(i, j);
  CHECK(r.order == expect);
  CHECK(r.lookahead_ok);
  CHECK(r.stats.passes == 2);
  CHECK(r.stats.computes == 2 * layers.size() * block);
  // One transfer per layer and pass serves the whole block.
  const std::size_t moved = Placement::tier_count == 1 ? 0 : 2 * r.home_bytes;
  CHECK(r.stats.home_bytes == moved);
  CHECK(r.peaks_within_plan);
}

}  // namespace

TEST_CASE("streamed layers == resident bytes for every home, depth and block", "[infer]") {
  for (std::size_t block : {1u, 3u}) {
    check_streamed<placement<tier::device>, 0>(block);
    check_streamed<placement<tier::device, tier::host>, 0>(block);
    check_streamed<placement<tier::device, tier::host>, 1>(block);
    check_streamed<placement<tier::device, tier::host>, 2>(block);
    check_streamed<offloaded_to_pinned, 1>(block);
    check_streamed<offloaded_to_nvme, 0>(block);
    check_streamed<offloaded_to_nvme, 1>(block);
    check_streamed<offloaded_to_nvme, 3>(block);
  }
}

TEST_CASE("sharded layers all-gathered over 1-3 ranks == one rank's bytes", "[infer]") {
  const auto layers = random_layers(7);
  for (int world = 1; world <= 3; ++world) {
    INFO("world " << world);
    comm::thread_world tw(world, std::chrono::seconds(20));
    std::mutex m;
    std::vector<walk_record> got(static_cast<std::size_t>(world));
    tw.run([&](comm::threads& c) {
      context ctx(io_test::toy_nvme_config(c.rank()));
      walk_record r =
          walk_once<sharded_placement<tier::device, tier::pinned, tier::nvme>, 1>(c, ctx, 2);
      std::lock_guard lock(m);
      got[static_cast<std::size_t>(c.rank())] = std::move(r);
    });
    std::size_t home_total = 0;
    for (const walk_record& r : got) {
      for (std::size_t i = 0; i < layers.size(); ++i) CHECK(r.seen[i] == layers[i]);
      CHECK(r.lookahead_ok);
      CHECK(r.peaks_within_plan);
      CHECK(r.stats.home_bytes == 2 * r.home_bytes);  // each rank reads only its slices
      home_total += r.home_bytes;
    }
    // The slices tile the padded layers once: R ranks read what one rank would.
    std::size_t padded = 0;
    for (std::size_t n : layer_sizes) padded += ((n + 63) / 64 + world - 1) / world * world * 64;
    CHECK(home_total == padded);
  }
}

TEST_CASE("set_stored: each rank loads only its slice", "[infer]") {
  const auto layers = random_layers(11);
  comm::thread_world tw(3, std::chrono::seconds(20));
  std::mutex m;
  bool all_equal = true;
  tw.run([&](comm::threads& c) {
    context ctx(io_test::toy_nvme_config(c.rank()));
    infer::layer_stream<comm::threads, sharded_placement<tier::device, tier::host>> s(ctx, c,
                                                                                     specs());
    std::size_t covered = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const std::size_t off = s.stored_offset(i), n = s.stored_bytes(i);
      s.set_stored(i, std::span<const std::byte>(layers[i]).subspan(off, n));
      covered += n;
    }
    bool eq = true;
    for (std::size_t i = 0; i < layers.size(); ++i) eq = eq && s.layer_bytes(i) == layers[i];
    std::lock_guard lock(m);
    all_equal = all_equal && eq && covered <= s.home_bytes();
  });
  CHECK(all_equal);
}

TEST_CASE("a stream whose plan does not fit is refused before anything is allocated",
          "[infer]") {
  comm::solo one;
  auto cfg = io_test::toy_nvme_config(0);
  cfg.device_bytes = 8 << 10;  // less than 3 ring buffers of the 4160-byte layer
  context ctx(cfg);
  const std::size_t pinned_before = ctx.budget(tier_id::pinned).used();
  try {
    infer::layer_stream<comm::solo, offloaded_to_nvme, prefetch::lookahead<2>> s(ctx, one,
                                                                                 specs());
    FAIL("the plan was accepted");
  } catch (const out_of_budget& e) {
    const std::string what = e.what();
    CHECK(what.find("refused before the first step") != std::string::npos);
    CHECK(what.find("3 whole-layer buffers (Depth+1)") != std::string::npos);
  }
  CHECK(ctx.budget(tier_id::device).used() == 0);
  CHECK(ctx.budget(tier_id::pinned).used() == pinned_before);
}

TEST_CASE("layer_stream errors name the layer", "[infer]") {
  comm::solo one;
  context ctx(io_test::toy_nvme_config(0));
  infer::layer_stream<comm::solo, offloaded_to_host> s(ctx, one, specs());
  const auto layers = random_layers(3);
  CHECK_THROWS_WITH(s.set_layer(1, layers[0]),
                    Catch::Contains("layer 'h.1' with 1000 bytes; it has 4097"));
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) s.set_layer(i, layers[i]);
  CHECK_THROWS_WITH(s.forward([](std::size_t, const std::byte*) {}),
                    Catch::Contains("layer 'h.4' was never set"));
  s.set_layer(4, layers[4]);
  // A compute that throws leaves the stream usable: the ring is handed back.
  CHECK_THROWS_AS(s.forward([](std::size_t i, const std::byte*) {
    if (i == 2) throw std::runtime_error("compute failed");
  }), std::runtime_error);
  std::size_t calls = 0;
  s.forward([&](std::size_t i, const std::byte* w) {
    calls += std::memcmp(w, layers[i].data(), layers[i].size()) == 0;
  });
  CHECK(calls == layers.size());
}
