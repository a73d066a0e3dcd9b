// expect: this tier is not in the tensor's placement
// offloaded_to_host lists device and host; a lease on pinned needs pinned in the placement.
#include <strata/strata.hpp>

int main() {
  strata::context ctx;
  strata::tiered_tensor<float, strata::offloaded_to_host> t(ctx, "t", {4});
#ifndef STRATA_COMPILE_FAIL_CONTROL
  auto l = t.acquire<strata::tier::pinned>();
#else
  auto l = t.acquire<strata::tier::host>();
#endif
  return l.shape().numel() == 4 ? 0 : 1;
}
