// docs/architecture.md, "Where a new tier goes": a CXL-like memory expander, defined by the
// program, given a budget and walked through like any tier (tests/unit/test_extra_tier.cpp
// tests the same thing in depth).
#include "check.hpp"

#include <strata/strata.hpp>

#include <string>
#include <vector>

// snippet-begin
struct cxl {                                        // host-addressable, pageable, between
  static constexpr strata::tier_id id{8};           // pinned and host memory in speed
  static constexpr const char* name = "cxl";
  static constexpr strata::tier_kind kind = strata::tier_kind::host_memory;
  static constexpr bool host_accessible = true;
  static constexpr bool dma_capable = false;        // so device <-> cxl stages through pinned
  static constexpr int speed_rank = 15;             // pinned is 10, host 20
  static constexpr std::size_t alignment = 64;
};
static_assert(strata::memory_tier<cxl>);
static_assert(strata::staged_copy_v<cxl, strata::tier::device>);   // the default rule's route

using with_cxl = strata::tier_list<strata::tier::device, strata::tier::pinned, cxl,
                                   strata::tier::host, strata::tier::nvme>;
using offloaded_to_cxl = strata::placement<strata::tier::device, cxl>;
// snippet-end

int main() {
  // What the page says in words: a budget for the tier, a context built from the list, and the
  // placement used like any other.
  strata::context_config cfg;
  cfg.tier_bytes = {{cxl::id, 64 << 20}};
  strata::context ctx(cfg, with_cxl{});

  strata::tensor_sequence<float, offloaded_to_cxl, strata::prefetch::lookahead<2>> layers(ctx);
  for (int i = 0; i < 8; ++i) layers.emplace_back("layer" + std::to_string(i), {256, 256});
  for (auto& t : layers) t.assign(std::vector<float>(t.size(), 2.0f));
  layers.forward(strata::read_write, [](std::size_t, auto w) {
    for (std::size_t j = 0; j < w.size(); ++j) w.data()[j] *= 2.0f;  // host mode: a host loop
  });
  for (auto& t : layers) snippet::check(t.to_vector()[100] == 4.0f, "the walk came home via cxl");
  snippet::check(ctx.budget(cxl::id).used() == 8 * 256 * 256 * sizeof(float),
                 "the layers are charged to cxl's own budget");
  snippet::check(ctx.budget(cxl::id).limit() == (64u << 20), "cxl's budget as configured");
}
