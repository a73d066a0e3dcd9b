// expect: lookahead prefetch needs a home tier below the compute tier
// A resident tensor has nowhere to prefetch from.
#include <strata/strata.hpp>

#ifndef STRATA_COMPILE_FAIL_CONTROL
using t = strata::tiered_tensor<float, strata::resident_on_device, strata::prefetch::lookahead<2>>;
#else
using t = strata::tiered_tensor<float, strata::offloaded_to_host, strata::prefetch::lookahead<2>>;
#endif

int main() {
  strata::context ctx;
  t x(ctx, "x", {4});
  return x.size() == 4 ? 0 : 1;
}
