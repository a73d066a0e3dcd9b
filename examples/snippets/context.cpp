// README.md, "The context": budgets, the staging ring, the memory report.
#include "check.hpp"

#include <strata/strata.hpp>

#include <iostream>

int main() {
  // snippet-begin
  strata::context ctx({
      .device_bytes = 8 << 20,        // budget of tier::device (the emulated arena in the host build)
      .pinned_bytes = 64 << 20,       // budget of tier::pinned, which includes the staging ring
      .staging_slot_bytes = 4 << 20,  // host <-> device copies stream through slots x slot_bytes
      .staging_slots = 4,
  });
  std::cout << ctx.memory_report();   // in use / peak / budget per tier
  // snippet-end

  using strata::tier_id;
  snippet::check(ctx.budget(tier_id::device).limit() == (8u << 20), "device budget as configured");
  snippet::check(ctx.budget(tier_id::pinned).limit() == (64u << 20), "pinned budget as configured");
  snippet::check(ctx.budget(tier_id::pinned).used() >= (16u << 20),
                 "the 4 x 4 MiB staging ring is counted in the pinned budget");
  snippet::check(ctx.budget(tier_id::device).used() == 0, "nothing on the device yet");
}
