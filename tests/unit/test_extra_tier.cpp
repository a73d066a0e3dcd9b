// A tier of the test's own: the tier set is open. `cxl` below is a CXL-like memory expander —
// host-addressable, pageable (not DMA-capable), slower than pinned memory, faster than host
// memory — defined in this file alone, with its own budget. The test walks a sequence through
// it and checks that the walk is bitwise the one through host memory, that its budget is
// charged and enforced under its own name, that its routes come from copy_route (a
// specialisation included), and that a context without it refuses it by id.
#include "catch.hpp"

#include <strata/strata.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace strata;

namespace {

struct cxl {
  static constexpr tier_id id{8};
  static constexpr const char* name = "cxl";
  static constexpr tier_kind kind = tier_kind::host_memory;
  static constexpr bool host_accessible = true;
  static constexpr bool dma_capable = false;
  static constexpr int speed_rank = 15;  // between pinned (10) and host (20)
  static constexpr std::size_t alignment = 64;
};
static_assert(memory_tier<cxl>);

// A second tier of the test's own whose route to the device the rule would stage, but a
// specialisation (below) declares direct: e.g. memory a GPU can reach over its own link.
struct linked {
  static constexpr tier_id id{9};
  static constexpr const char* name = "linked";
  static constexpr tier_kind kind = tier_kind::host_memory;
  static constexpr bool host_accessible = true;
  static constexpr bool dma_capable = false;
  static constexpr int speed_rank = 12;
  static constexpr std::size_t alignment = 64;
};

}  // namespace

template <>
struct strata::copy_route<linked, tier::device> {
  static constexpr route value{route_kind::direct, linked::id};
};

namespace {

using with_cxl = tier_list<tier::device, tier::pinned, linked, cxl, tier::host, tier::nvme>;

// The default rule, applied to the new tier's traits.
static_assert(staged_copy_v<cxl, tier::device> && staged_copy_v<tier::device, cxl>);
static_assert(direct_copy_v<cxl, tier::host> && direct_copy_v<cxl, tier::pinned>);
static_assert(staged_copy_v<cxl, tier::nvme>);
// The specialisation wins for its pair; the reverse pair keeps the rule.
static_assert(direct_copy_v<linked, tier::device> && staged_copy_v<tier::device, linked>);
// A placement orders the new tier by its speed rank.
static_assert(placement_policy<placement<tier::device, tier::pinned, cxl, tier::host>>);

std::vector<std::size_t> sizes() { return {3000, 17, 4096, 999, 2500, 1, 4000, 1234}; }

std::vector<std::vector<float>> initial() {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<std::vector<float>> w;
  for (auto n : sizes()) {
    w.emplace_back(n);
    for (auto& x : w.back()) x = u(rng);
  }
  return w;
}

struct walk_result {
  std::vector<std::vector<float>> weights;
  double act = 0.25;
};

// Two forward read_write walks and one backward walk; every value depends on every earlier one.
template <class Placement>
walk_result walk(context& ctx) {
  tensor_sequence<float, Placement, prefetch::lookahead<2>> seq(ctx);
  auto init = initial();
  for (std::size_t i = 0; i < init.size(); ++i)
    seq.emplace_back("layer" + std::to_string(i), {init[i].size()}).assign(init[i]);
  walk_result r;
  for (int step = 0; step < 2; ++step)
    seq.forward(read_write, [&](std::size_t i, auto v) {
      for (std::size_t k = 0; k < v.size(); ++k) {
        r.act = std::fmod(r.act * 1.0001 + v.data()[k], 1000.0);
        v.data()[k] = static_cast<float>(v.data()[k] * 0.5 + static_cast<double>(i) + r.act * 1e-3);
      }
    });
  seq.backward([&](std::size_t i, auto v) {
    for (std::size_t k = 0; k < v.size(); ++k)
      r.act = std::fmod(r.act * 0.999 + v.data()[k] * (1.0 + static_cast<double>(i)), 1e6);
  });
  for (auto& t : seq) r.weights.push_back(t.to_vector());
  return r;
}

context_config small() {
  context_config c;
  c.device_bytes = 256 << 10;
  c.pinned_bytes = 1 << 20;
  c.staging_slot_bytes = 4096;
  c.staging_slots = 4;
  return c;
}

}  // namespace

TEST_CASE("a tier defined in a test file: a sequence walks through it, bitwise as through host "
          "memory", "[tier]") {
  context_config c = small();
  c.tier_bytes = {{cxl::id, 1 << 20}};
  context ctx(c, with_cxl{});

  context plain(small());
  const walk_result ref = walk<placement<tier::device, tier::host>>(plain);
  const walk_result got = walk<placement<tier::device, cxl>>(ctx);
  CHECK(got.weights == ref.weights);
  CHECK(got.act == ref.act);

  // The tier's budget counted the tensors' homes, under the tier's own name.
  std::size_t bytes = 0;
  for (auto n : sizes()) bytes += n * sizeof(float);
  CHECK(ctx.budget(cxl::id).peak() >= bytes);
  CHECK(ctx.budget(cxl::id).used() == 0);  // the sequence is gone
  CHECK(ctx.budget(tier_id::host).peak() == 0);  // nothing went to host memory
  CHECK(std::string(ctx.tiers().name(cxl::id)) == "cxl");
  CHECK(ctx.memory_report().find("cxl") != std::string::npos);
}

TEST_CASE("the tier list's order, routes and budgets come from the tier types", "[tier]") {
  context_config c = small();
  c.tier_bytes = {{cxl::id, 64 << 10}};
  context ctx(c, with_cxl{});

  // Fastest first, by speed rank, whatever order the list gave.
  std::vector<std::string> order;
  for (const tier_info& t : ctx.tiers().all()) order.push_back(t.name);
  CHECK(order == std::vector<std::string>{tier::device::name, "pinned", "linked", "cxl", "host",
                                          "nvme"});

  // The runtime table holds copy_route of every pair, the specialisation included.
  CHECK(ctx.tiers().route_between(cxl::id, tier_id::device) == copy_route_v<cxl, tier::device>);
  CHECK(ctx.tiers().route_between(linked::id, tier_id::device).kind == route_kind::direct);
  CHECK(ctx.tiers().route_between(tier_id::device, linked::id).kind == route_kind::staged);
  CHECK(ctx.tiers().route_between(cxl::id, tier_id::host).kind == route_kind::direct);

  // Its own budget refuses, naming the tier.
  using on_cxl = tiered_tensor<float, placement<tier::device, cxl>>;
  on_cxl a(ctx, "fits", shape{8 << 10});  // 32 KiB of 64
  try {
    on_cxl b(ctx, "too big", shape{16 << 10});
    FAIL("the cxl budget did not refuse");
  } catch (const out_of_budget& e) {
    CHECK(std::string(e.what()).find("cxl") != std::string::npos);
    CHECK(std::string(e.what()).find("too big") != std::string::npos);
  }

  // A memory plan's table names the tier as the context does.
  memory_plan plan;
  plan.add(cxl::id, "cxl buffers", 1000);
  CHECK(plan.to_string(&ctx).find("cxl") != std::string::npos);
  CHECK_NOTHROW(plan.check(ctx, "small plan"));
  plan.add(cxl::id, "more cxl buffers", 1 << 20);
  CHECK_THROWS_AS(plan.check(ctx, "large plan"), out_of_budget);

  // The copy engine follows the table: a direct route between two host-memory tiers.
  std::vector<float> src(1000, 1.5f);
  buffer on_tier = ctx.allocate(cxl::id, src.size() * sizeof(float), "copy target");
  ctx.copy(on_tier.data(), cxl::id, src.data(), tier_id::host, src.size() * sizeof(float), "c")
      .wait();
  CHECK(static_cast<const float*>(on_tier.data())[999] == 1.5f);
}

TEST_CASE("a context without the tier refuses a tensor placed on it, by id", "[tier]") {
  context ctx(small());
  try {
    tiered_tensor<float, placement<tier::device, cxl>> t(ctx, "lost", shape{16});
    FAIL("a tier the context lacks was accepted");
  } catch (const config_error& e) {
    CHECK(std::string(e.what()).find("tier id 8") != std::string::npos);
  }
  CHECK_THROWS_AS(ctx.budget(cxl::id), config_error);
}
