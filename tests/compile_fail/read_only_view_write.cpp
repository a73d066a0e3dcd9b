// expect: assignment of read-only location|read-only|returns a const value
// A read_only lease hands out a const view: writing through it does not compile.
#include <strata/strata.hpp>

int main() {
  strata::context ctx;
  strata::tiered_tensor<float, strata::host_resident> t(ctx, "t", {4});
#ifndef STRATA_COMPILE_FAIL_CONTROL
  auto l = t.acquire();
#else
  auto l = t.acquire(strata::read_write);
#endif
  l.view()[0] = 1.0f;
  return 0;
}
