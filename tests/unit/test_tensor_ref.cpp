// tensor_ref, the public handle: what higher floors may do with a tensor — identity, shard
// layout, fetch into a caller's buffer, lease there, give the buffer back through last-use
// events, write the home from a caller's buffer, evict — and the errors for tiers outside the
// placement.
#include "catch.hpp"

#include <strata/strata.hpp>

#include <numeric>
#include <string>
#include <vector>

using namespace strata;

namespace {
context_config small() {
  return {.device_bytes = 1 << 20, .pinned_bytes = 1 << 20, .staging_slot_bytes = 4096,
          .staging_slots = 4};
}
std::vector<float> iota(std::size_t n, float from) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}
}  // namespace

TEST_CASE("tensor_ref: identity and placement of the tensor it refers to", "[tensor_ref]") {
  context ctx(small());
  tiered_tensor<float, placement<tier::device, tier::pinned, tier::host>> t(ctx, "w", shape{100});
  tensor_ref r = t.ref();
  CHECK(r.name() == "w");
  CHECK(r.bytes() == 400);
  CHECK(r.shape().numel() == 100);
  REQUIRE(r.tier_count() == 3);
  CHECK(r.compute_tier() == tier_id::device);
  CHECK(r.tier(1) == tier_id::pinned);
  CHECK(r.home_tier() == tier_id::host);
  CHECK(r.has_tier(tier_id::pinned));
  CHECK(!r.has_tier(tier_id::nvme));
  CHECK(!r.shard().has_value());
  CHECK(r.holds(tier_id::host));
  CHECK(!r.holds(tier_id::device));

  // A ref stays valid when the tensor moves: the state does not.
  auto moved = std::move(t);
  CHECK(r == moved.ref());
  CHECK(r.name() == "w");

  // A tier outside the placement is refused naming the tensor and the tier.
  try {
    r.fetch(tier_id::nvme);
    FAIL("fetch to a tier outside the placement was accepted");
  } catch (const access_error& e) {
    CHECK(std::string(e.what()).find("'w'") != std::string::npos);
    CHECK(std::string(e.what()).find("nvme") != std::string::npos);
  }
}

TEST_CASE("tensor_ref: fetch into a caller's buffer, lease it, take the buffer back",
          "[tensor_ref]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> t(ctx, "w", shape{1000});
  t.assign(iota(1000, 1.0f));
  tensor_ref r = t.ref();

  buffer mine = ctx.allocate(tier_id::device, r.bytes(), "caller's buffer");
  const std::size_t device_used = ctx.budget(tier_id::device).used();
  r.fetch_into(tier_id::device, mine.data(), {});
  CHECK(r.holds(tier_id::device));
  CHECK(r.data(tier_id::device) == mine.data());
  // The tensor borrowed the buffer: it allocated nothing on the device.
  CHECK(ctx.budget(tier_id::device).used() == device_used);
  {
    auto l = r.acquire<float, tier::device>();  // read_write: written back when it ends
    CHECK(l.data() == mine.data());
    float* p = l.data();
    ctx.compute("scale", [&] {
      std::vector<float> host(1000);
      ctx.copy(host.data(), tier_id::host, p, tier_id::device, 4000, "out").wait();
      for (auto& x : host) x *= 2;
      ctx.copy(p, tier_id::device, host.data(), tier_id::host, 4000, "in").wait();
    });
  }
  CHECK(!r.holds(tier_id::device));  // the last lease ended: written back and dropped
  std::vector<event> free_after = r.take_last_use(tier_id::device);
  CHECK(!free_after.empty());
  for (auto& e : free_after) e.wait();
  CHECK(t.to_vector() == [] {
    auto v = iota(1000, 1.0f);
    for (auto& x : v) x *= 2;
    return v;
  }());
  ctx.retire(std::move(mine), {});
}

TEST_CASE("tensor_ref: write the home from a caller's buffer; evict; read", "[tensor_ref]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_pinned> t(ctx, "g", shape{256});
  tensor_ref r = t.ref();
  r.fetch(tier_id::device);
  CHECK(r.holds(tier_id::device));
  r.evict(tier_id::device);
  CHECK(!r.holds(tier_id::device));

  const std::vector<float> src = iota(256, -3.0f);
  buffer staged = ctx.allocate(tier_id::device, r.bytes(), "source");
  ctx.copy(staged.data(), tier_id::device, src.data(), tier_id::host, r.bytes(), "stage").wait();
  event done = r.write_from(staged.data(), tier_id::device, {});
  done.wait();
  std::vector<float> back(256);
  r.read(back.data());
  CHECK(back == src);
}

TEST_CASE("a sharded placement's tensor is a rank's shard, and its handle says which",
          "[tensor_ref]") {
  context ctx(small());
  const shard_layout layout(10, 4);  // shards of 3, the last holding 1 real element
  using shard_tensor = tiered_tensor<float, sharded_placement<tier::device, tier::host>>;
  shard_tensor last(ctx, "p", layout, 3);
  CHECK(last.size() == 3);
  const auto& s = last.ref().shard();
  REQUIRE(s.has_value());
  CHECK(s->layout.numel() == 10);
  CHECK(s->layout.world() == 4);
  CHECK(s->rank == 3);
  CHECK(s->offset() == 9);
  CHECK(s->valid() == 1);
  CHECK_THROWS_AS(shard_tensor(ctx, "bad", layout, 4), config_error);
  CHECK_THROWS_AS(shard_tensor(ctx, "bad", layout, -1), config_error);
}
