// tiered_tensor and its leases: fetch on acquire, eviction on release, write-back of dirty data
// only, exclusivity, views that cannot outlive their lease.
#include "catch.hpp"

#include <strata/strata.hpp>

#include <numeric>
#include <vector>

using namespace strata;

namespace {
context_config small() {
  return {.device_bytes = 1 << 20, .pinned_bytes = 4 << 20, .staging_slot_bytes = 4096,
          .staging_slots = 2};
}
std::vector<float> iota(std::size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}
std::size_t count_spans(context& ctx, const std::string& prefix) {
  std::size_t n = 0;
  for (auto& s : ctx.trace().spans()) n += s.label.rfind(prefix, 0) == 0;
  return n;
}
// A "kernel": in the host build the emulated device's memory is plain host memory, reached only
// through the pointer a lease hands out — as a CUDA kernel would get it.
void add_kernel(float* p, std::size_t n, float x) {
  for (std::size_t i = 0; i < n; ++i) p[i] += x;
}
}  // namespace

TEST_CASE("a read lease fetches to the compute tier and release drops clean data", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> t(ctx, "w", {1000});
  t.assign(iota(1000, 0));
  CHECK(ctx.budget(tier_id::device).used() == 0);  // home is host: nothing on the device yet
  CHECK(ctx.budget(tier_id::host).used() == 4000);
  {
    auto l = t.acquire();  // compute tier, read-only
    STATIC_REQUIRE(std::is_same_v<decltype(l), lease<const float, tier::device>>);
    CHECK(ctx.budget(tier_id::device).used() == 4000);
    CHECK(t.holds<tier::device>());
    CHECK(l.view().data()[999] == 999.0f);
  }
  CHECK_FALSE(t.holds<tier::device>());
  CHECK(ctx.budget(tier_id::device).used() == 0);
  CHECK(count_spans(ctx, "fetch w") == 1);
  CHECK(count_spans(ctx, "write back w") == 0);  // clean data is not written back
  CHECK(t.to_vector() == iota(1000, 0));
}

TEST_CASE("a read_write lease is written back to the home tier when it ends", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> t(ctx, "w", {3000});  // spans several staging slots
  t.assign(iota(3000, 0));
  {
    auto l = t.acquire(read_write);
    STATIC_REQUIRE(std::is_same_v<decltype(l), lease<float, tier::device>>);
    ctx.compute("add", [&] { add_kernel(l.data(), l.view().size(), 0.5f); });
  }
  CHECK(t.to_vector() == iota(3000, 0.5f));  // waits for the write-back
  CHECK(count_spans(ctx, "write back w") == 1);
  // The next read fetches the written-back value.
  {
    auto l = t.acquire();
    CHECK(l.data()[2999] == 2999.5f);
  }
}

TEST_CASE("an evicted slot's memory is back as soon as its write-back has ended", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> t(ctx, "w", {3000});
  t.assign(iota(3000, 0));
  // Hold the d2h queue, where write-backs run in order, until the test lets it go: the
  // write-back is then certainly still running when the lease ends, whatever the machine's load.
  buffer source = ctx.allocate(tier_id::pinned, 64, "gate source");
  std::vector<char> sink(64);
  event gate = event::pending();
  struct opener {  // opens the gate on every way out, so the context can drain its queues
    event g;
    ~opener() { g.complete(); }
  } open_on_exit{gate};
  event held = ctx.copy(sink.data(), tier_id::host, source.data(), tier_id::pinned, 64, "held",
                        {gate});
  {
    auto l = t.acquire(read_write);
    ctx.compute("add", [&] { add_kernel(l.data(), l.view().size(), 0.5f); });
  }
  CHECK_FALSE(held.ready());
  CHECK(ctx.budget(tier_id::device).used() == 3000 * sizeof(float));  // the write-back reads it
  gate.complete();
  CHECK(t.to_vector() == iota(3000, 0.5f));  // waits for the write-back...
  // ... and nothing else: no allocation or synchronize is needed for the slot to be given back,
  // which is what a GPU run sees too (CUDA memory cannot be freed from the copy's callback).
  CHECK(ctx.budget(tier_id::device).used() == 0);
  // memory_report is a touch too: on a second context it is the first thing asked.
  const std::string report = ctx.memory_report();
  CHECK(report.substr(0, report.find('\n')).find("in use 0 bytes") != std::string::npos);
}

TEST_CASE("leases on intermediate and home tiers", "[tensor]") {
  context ctx(small());
  using P = placement<tier::device, tier::pinned, tier::host>;
  tiered_tensor<int, P> t(ctx, "x", {64});
  std::vector<int> v(64, 7);
  t.assign(v);
  {
    auto home = t.acquire<tier::host>(read_write);  // host-accessible: checked indexing
    for (std::size_t i = 0; i < 64; ++i) home.view()[i] = static_cast<int>(i);
  }
  {
    auto pinned = t.acquire<tier::pinned>();
    CHECK(pinned.view()[63] == 63);
    auto device = t.acquire<tier::device>();  // two read leases on two tiers at once
    CHECK(device.data()[10] == 10);
  }
  {
    auto pinned = t.acquire<tier::pinned>(read_write);
    pinned.view()[0] = -1;
  }
  CHECK(t.to_vector()[0] == -1);
}

TEST_CASE("a read_write lease is exclusive", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> t(ctx, "exclusive", {16});
  auto r = t.acquire();
  try {
    (void)t.acquire(read_write);
    FAIL("a read_write lease was granted while a read lease was held");
  } catch (const access_error& e) {
    CHECK(std::string(e.what()).find("exclusive") != std::string::npos);
  }
  r.release();
  auto w = t.acquire(read_write);
  CHECK_THROWS_AS(t.acquire(), access_error);
  CHECK_THROWS_AS(t.acquire<tier::host>(), access_error);
  CHECK_THROWS_AS(t.evict(), access_error);  // cannot evict what is leased
  CHECK_THROWS_AS(t.assign(std::vector<float>(16)), access_error);
}

TEST_CASE("a view does not outlive its lease", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, placement<tier::pinned, tier::host>> t(ctx, "v", {8});
  t.assign(std::vector<float>(8, 1.0f));
  view<const float, tier::pinned> kept;
  {
    auto l = t.acquire();
    kept = l.view();
    CHECK(kept.alive());
    CHECK(kept[3] == 1.0f);
    CHECK(kept.span().size() == 8);
  }
  CHECK_FALSE(kept.alive());
  CHECK_THROWS_AS(kept[3], access_error);
  CHECK_THROWS_AS(kept.span(), access_error);
  // An explicit release kills the views too.
  auto l = t.acquire();
  auto v = l.view();
  l.release();
  CHECK_FALSE(v.alive());
  CHECK_FALSE(static_cast<bool>(l));
}

TEST_CASE("prefetch starts the copy early; evict drops it", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_pinned> t(ctx, "p", {256});
  t.assign(iota(256, 1));
  t.prefetch();
  CHECK(t.holds<tier::device>());
  CHECK(ctx.budget(tier_id::device).used() == 1024);
  t.evict();
  CHECK_FALSE(t.holds<tier::device>());
  ctx.synchronize();
  CHECK(ctx.budget(tier_id::device).used() == 0);
  t.prefetch();
  {
    auto l = t.acquire();  // finds the prefetched copy: no second fetch
    CHECK(l.data()[255] == 256.0f);
  }
  CHECK(count_spans(ctx, "fetch p") == 2);
}

TEST_CASE("a resident tensor never moves", "[tensor]") {
  context ctx(small());
  tiered_tensor<float> t(ctx, "resident", {100});  // resident_on_device by default
  t.assign(iota(100, 0));
  CHECK(ctx.budget(tier_id::device).used() == 400);
  {
    auto l = t.acquire(read_write);
    add_kernel(l.data(), 100, 1.0f);
  }
  CHECK(t.to_vector() == iota(100, 1));
  CHECK(count_spans(ctx, "fetch") == 0);
  CHECK(count_spans(ctx, "write back") == 0);
}

TEST_CASE("a tensor larger than its home budget is refused with its name", "[tensor]") {
  context ctx(small());
  try {
    tiered_tensor<float> t(ctx, "embedding", {1 << 20});  // 4 MiB on a 1 MiB device
    FAIL("no out_of_budget");
  } catch (const out_of_budget& e) {
    CHECK(std::string(e.what()).find("embedding") != std::string::npos);
    CHECK(e.requested() == 4u << 20);
  }
  tiered_tensor<float, offloaded_to_host> big(ctx, "big", {1 << 19});  // 2 MiB on the host
  CHECK_THROWS_AS(big.acquire(), out_of_budget);  // does not fit the device to compute on
  CHECK(ctx.budget(tier_id::device).used() == 0);
  CHECK(big.to_vector().size() == 1u << 19);  // and the tensor is still usable
}

TEST_CASE("assign and copy_to check sizes", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> t(ctx, "sized", {2, 3});
  CHECK(t.size() == 6);
  CHECK(t.shape() == shape{2, 3});
  CHECK_THROWS_AS(t.assign(std::vector<float>(5)), config_error);
  std::vector<float> out(7);
  CHECK_THROWS_AS(t.copy_to(out), config_error);
}

TEST_CASE("moving a tensor keeps its data and leases", "[tensor]") {
  context ctx(small());
  tiered_tensor<float, offloaded_to_host> a(ctx, "m", {4});
  a.assign(std::vector<float>{1, 2, 3, 4});
  auto l = a.acquire();
  tiered_tensor<float, offloaded_to_host> b = std::move(a);
  CHECK(l.data()[3] == 4.0f);
  l.release();
  CHECK(b.to_vector() == std::vector<float>{1, 2, 3, 4});
}
