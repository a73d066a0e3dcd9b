// docs/api.md, "The public handle": what the floors above the tensor (schedule, optim,
// checkpoint, infer) do with a tensor, through tensor_ref.
#include "check.hpp"

#include <strata/strata.hpp>

#include <vector>

using namespace strata;

int main() {
  context ctx;
  // Rank 1's shard of a 10-element tensor split over 4 ranks: 3 elements, 3 of them real.
  tiered_tensor<float, sharded_placement<tier::device, tier::host>> t(ctx, "w", shard_layout(10, 4), 1);
  t.assign(std::vector<float>{1, 2, 3});
  const std::vector<float> new_values{7, 8, 9};
  float seen = 0;

  // snippet-begin
  tensor_ref r = t.ref();                                  // a non-owning handle, cheap to copy
  // r.name(), r.shape(), r.bytes(), r.compute_tier(), r.home_tier(), r.tier(k) for k < r.tier_count()
  const shard_spec& s = *r.shard();                        // sharded placements: which part is this
  // s.layout.numel() (global), s.layout.world(), s.rank, s.offset(), s.valid()

  buffer slot = ctx.allocate(tier_id::device, r.bytes(), "caller's slot");
  r.fetch_into(tier_id::device, slot.data(), {});          // borrow the caller's device memory
  {
    auto l = r.acquire<const float, tier::device>();       // lease it there (waits for the fetch)
    seen = l.data()[0];
  }                                                        // last lease over: the copy is dropped
  std::vector<event> slot_free = r.take_last_use(tier_id::device);  // slot is the caller's again
                                                                    // once these have completed
  event written = r.write_from(new_values.data(), tier_id::host, {});  // overwrite the home
  written.wait();
  // snippet-end

  for (auto& e : slot_free) e.wait();
  snippet::check(seen == 1.0f, "the borrowed slot held the tensor's value");
  snippet::check(s.layout.numel() == 10 && s.layout.world() == 4 && s.rank == 1 &&
                     s.offset() == 3 && s.valid() == 3,
                 "the handle reports the shard's place in the global tensor");
  snippet::check(r.home_tier() == tier_id::host && r.compute_tier() == tier_id::device &&
                     r.bytes() == 3 * sizeof(float),
                 "the handle reports tiers and bytes");
  snippet::check(t.to_vector() == new_values, "write_from replaced the home's value");
}
