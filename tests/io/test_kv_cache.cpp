// tests/io/test_kv_cache.cpp — infer::kv_cache: a cache streamed per layer from any home tier
// holds what a resident one holds, bitwise, after passes that read and append to it; a walk
// out of order or a failed walk is refused or recovered cleanly.
#include "catch.hpp"
#include "io_test_support.hpp"

#include <strata/infer/kv_cache.hpp>

#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

using namespace strata;

namespace {

constexpr std::size_t layers = 4, bytes = 3000;

template <std::size_t Depth>
using depth_policy = std::conditional_t<Depth == 0, prefetch::none, prefetch::lookahead<Depth>>;

// Each pass, layer l's cache: every byte += (l + pass) and byte `pass` of it is set to what
// the layer read at byte pass-1 — a step that depends on what earlier passes wrote home.
template <class Placement, std::size_t Depth>
std::vector<std::vector<std::byte>> run(int passes, std::size_t* fetches = nullptr) {
  context ctx(io_test::toy_nvme_config(0));
  infer::kv_cache<Placement, depth_policy<Depth>> kv(ctx, layers, bytes);
  for (int pass = 0; pass < passes; ++pass) {
    kv.begin_pass();
    for (std::size_t l = 0; l < layers; ++l) {
      std::byte* c = kv.open(l);
      for (std::size_t b = 0; b < bytes; ++b)
        c[b] = static_cast<std::byte>(static_cast<unsigned>(c[b]) + l + pass);
      if (pass > 0) c[pass] = c[pass - 1];
      kv.close(l);
    }
    kv.end_pass();
  }
  if (fetches) *fetches = kv.fetches();
  std::vector<std::vector<std::byte>> out;
  for (std::size_t l = 0; l < layers; ++l) out.push_back(kv.layer_bytes(l));
  return out;
}

}  // namespace

TEST_CASE("a KV cache streamed from any home == the resident cache, bitwise", "[infer]") {
  const auto ref = run<placement<tier::device>, 0>(5);
  auto check = [&](const auto& got, const char* what) {
    INFO(what);
    CHECK(got == ref);
  };
  check(run<placement<tier::device, tier::host>, 0>(5), "host, depth 0");
  check(run<placement<tier::device, tier::host>, 1>(5), "host, depth 1");
  check(run<offloaded_to_pinned, 2>(5), "pinned, depth 2");
  check(run<offloaded_to_nvme, 1>(5), "nvme, depth 1");
  check(run<offloaded_to_nvme, 3>(5), "nvme, depth 3");
  std::size_t fetches = 0;
  run<offloaded_to_nvme, 1>(5, &fetches);
  CHECK(fetches == 5 * layers);  // one fetch per layer and pass
}

TEST_CASE("KV cache walks out of order are refused; a failed walk is recovered", "[infer]") {
  context ctx(io_test::toy_nvme_config(0));
  infer::kv_cache<offloaded_to_host, prefetch::lookahead<1>> kv(ctx, layers, bytes);
  CHECK_THROWS_WITH(kv.open(0), Catch::Contains("after begin_pass()"));
  kv.begin_pass();
  CHECK_THROWS_WITH(kv.open(1), Catch::Contains("the walk expects layer 0"));
  std::byte* c = kv.open(0);
  c[0] = std::byte{42};
  kv.close(0);
  (void)kv.open(1);
  CHECK_THROWS_WITH(kv.end_pass(), Catch::Contains("after 1 of 4 layers"));
  kv.abandon_pass();  // layer 1's lease ends, 2's prefetch is dropped
  CHECK(ctx.budget(tier_id::device).used() == 2 * bytes);  // only the ring stays
  kv.begin_pass();
  for (std::size_t l = 0; l < layers; ++l) {
    std::byte* p = kv.open(l);
    if (l == 0) CHECK(p[0] == std::byte{42});  // what the closed layer appended was kept
    kv.close(l);
  }
  kv.end_pass();
}

TEST_CASE("kv_cache::plan_for is what the cache holds", "[infer]") {
  context ctx(io_test::toy_nvme_config(0));
  const std::size_t before = ctx.budget(tier_id::device).used();
  const auto plan = infer::kv_cache<offloaded_to_nvme, prefetch::lookahead<2>>::plan_for(ctx, layers, bytes);
  infer::kv_cache<offloaded_to_nvme, prefetch::lookahead<2>> kv(ctx, layers, bytes);
  CHECK(ctx.budget(tier_id::device).used() - before == plan.peak(tier_id::device));
  CHECK(plan.peak(tier_id::device) == 3 * bytes);
  CHECK(plan.peak(tier_id::nvme) == layers * bytes);
  CHECK(plan.peak(tier_id::pinned) > 0);  // the NVMe store's bounce buffers
}
