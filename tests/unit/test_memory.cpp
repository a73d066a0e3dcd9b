// Budgets, the emulated device arena, the pool and the context's allocation path.
#include "catch.hpp"

#include <strata/exec/context.hpp>

#include <cstring>
#include <string>

using namespace strata;

namespace {
std::string message_of(const std::exception& e) { return e.what(); }
}  // namespace

TEST_CASE("tier_budget reserves, releases, keeps the peak and refuses overruns", "[memory]") {
  tier_budget b(tier_id::pinned, 1000);
  b.reserve(600, "a");
  b.reserve(300, "b");
  CHECK(b.used() == 900);
  CHECK(b.available() == 100);
  b.release(600);
  CHECK(b.used() == 300);
  CHECK(b.peak() == 900);
  try {
    b.reserve(701, "layer7.weight");
    FAIL("reserve past the limit did not throw");
  } catch (const out_of_budget& e) {
    CHECK(e.requested() == 701);
    CHECK(e.available() == 700);
    CHECK(e.limit() == 1000);
    const std::string m = e.what();
    CHECK(m.find("pinned") != std::string::npos);
    CHECK(m.find("layer7.weight") != std::string::npos);
    CHECK(m.find("701") != std::string::npos);
    CHECK(m.find("700") != std::string::npos);
  }
  CHECK(b.used() == 300);  // a refused reservation takes nothing
  b.reserve(700, "exactly the rest");
  CHECK(b.available() == 0);
  b.reset_peak();
  b.release(1000);
  CHECK(b.peak() == 1000);
}

TEST_CASE("out_of_budget is a strata::error", "[memory]") {
  tier_budget b(tier_id::device, 10);
  CHECK_THROWS_AS(b.reserve(11, "x"), error);
}

TEST_CASE("emulated device arena: capacity, alignment, coalescing, ownership", "[memory]") {
  emulated_device_arena arena(4096);
  void* a = arena.allocate(1000, 256, "a");  // 1024 after alignment
  void* b = arena.allocate(1000, 256, "b");
  void* c = arena.allocate(2048, 256, "c");
  CHECK(is_aligned(a, 256));
  CHECK(is_aligned(b, 256));
  CHECK(arena.in_use() == 4096);
  CHECK(arena.owns(b, 1000));
  CHECK_FALSE(arena.owns(static_cast<char*>(b) + 1000, 100));  // past b's block end
  int on_stack = 0;
  CHECK_FALSE(arena.owns(&on_stack, sizeof on_stack));
  CHECK_THROWS_AS(arena.allocate(1, 256, "d"), out_of_budget);

  arena.deallocate(a, 1000, 256);
  arena.deallocate(c, 2048, 256);
  // 3072 bytes free but split in two: a 2048-byte request fits, a 3072-byte one does not.
  try {
    (void)arena.allocate(3072, 256, "big");
    FAIL("fragmented arena handed out a block larger than any free block");
  } catch (const out_of_budget& e) {
    CHECK(e.available() == 2048);
    CHECK(message_of(e).find("fragmented") != std::string::npos);
  }
  arena.deallocate(b, 1000, 256);
  // Everything coalesced back into one block.
  void* whole = arena.allocate(4096, 256, "whole");
  CHECK(whole == a);
  arena.deallocate(whole, 4096, 256);
  CHECK(arena.in_use() == 0);
  CHECK_THROWS_AS(arena.allocate(16, 512, "over-aligned"), config_error);
}

TEST_CASE("pool reuses freed blocks and gives idle blocks back under pressure", "[memory]") {
  emulated_device_arena arena(8192);
  pool_resource pool(arena);
  void* a = pool.allocate(4096, 256, "a");
  pool.deallocate(a, 4096, 256);
  CHECK(pool.idle_bytes() == 4096);
  void* again = pool.allocate(4096, 256, "a again");
  CHECK(again == a);  // same size: the cached block
  pool.deallocate(again, 4096, 256);
  // A different size does not fit next to the idle block; the pool frees it and retries.
  void* big = pool.allocate(8192, 256, "big");
  CHECK(pool.idle_bytes() == 0);
  pool.deallocate(big, 8192, 256);
  CHECK(pool.release_idle() == 8192);
  CHECK(arena.in_use() == 0);
}

TEST_CASE("context allocations are charged to the tier budget and named in errors", "[memory]") {
  context ctx({.device_bytes = 1 << 20, .pinned_bytes = 1 << 20, .host_bytes = 1 << 20,
               .staging_slot_bytes = 64 << 10, .staging_slots = 2});
  // The staging ring is pinned memory, charged up front.
  CHECK(ctx.budget(tier_id::pinned).used() == 2 * (64 << 10));
  {
    buffer d = ctx.allocate(tier_id::device, 300 << 10, "w1");
    CHECK(d.tier() == tier_id::device);
    CHECK(is_aligned(d.data(), tier::device::alignment));
    CHECK(ctx.budget(tier_id::device).used() == 300 << 10);
    try {
      (void)ctx.allocate(tier_id::device, 800 << 10, "layer3.mlp.weight");
      FAIL("allocation past the device budget did not throw");
    } catch (const out_of_budget& e) {
      const std::string m = e.what();
      CHECK(m.find("device") != std::string::npos);
      CHECK(m.find("layer3.mlp.weight") != std::string::npos);
      CHECK(e.requested() == 800u << 10);
      CHECK(e.available() == (1u << 20) - (300u << 10));
    }
    buffer p = ctx.allocate(tier_id::pinned, 100, "p");
    CHECK(is_aligned(p.data(), tier::pinned::alignment));
    buffer h = ctx.allocate(tier_id::host, 100, "h");
    CHECK(is_aligned(h.data(), tier::host::alignment));
  }
  CHECK(ctx.budget(tier_id::device).used() == 0);   // freed blocks leave the budget...
  CHECK(ctx.pool(tier_id::device).idle_bytes() > 0);  // ...and wait in the pool
  CHECK(ctx.budget(tier_id::device).peak() == 300 << 10);
  CHECK_THROWS_AS(ctx.allocate(tier_id::nvme, 10, "x"), config_error);
  const std::string report = ctx.memory_report();
  CHECK(report.find("device (emulated)") != std::string::npos);
  CHECK(report.find("pinned") != std::string::npos);
}

TEST_CASE("a staging ring that cannot fit its budget is refused up front", "[memory]") {
  CHECK_THROWS_AS(context({.pinned_bytes = 1 << 20, .staging_slot_bytes = 1 << 20,
                           .staging_slots = 2}),
                  out_of_budget);
  CHECK_THROWS_AS(context({.staging_slots = 0}), config_error);
}

TEST_CASE("tier traits and copy routes", "[memory]") {
  STATIC_REQUIRE(direct_copy_v<tier::device, tier::pinned>);
  STATIC_REQUIRE(direct_copy_v<tier::pinned, tier::host>);
  STATIC_REQUIRE(staged_copy_v<tier::device, tier::host>);
  STATIC_REQUIRE(staged_copy_v<tier::host, tier::nvme>);
  STATIC_REQUIRE(copy_route_v<tier::device, tier::nvme>.via == tier_id::pinned);
  STATIC_REQUIRE(direct_copy_v<tier::device, tier::device>);
  STATIC_REQUIRE(staged_copy_v<tier::nvme, tier::nvme>);
  STATIC_REQUIRE(!tier::device::host_accessible);
  STATIC_REQUIRE(tier::pinned::host_accessible);
  STATIC_REQUIRE(!tier::nvme::host_accessible);
  CHECK(std::string(tier_name(tier_id::nvme)) == "nvme");
}
