// expect: view: this tier is not host-accessible
// Host code cannot index device memory: it goes to kernels through data().
#include <strata/strata.hpp>

int main() {
  strata::context ctx;
  strata::tiered_tensor<float, strata::offloaded_to_host> t(ctx, "t", {4});
#ifndef STRATA_COMPILE_FAIL_CONTROL
  auto l = t.acquire<strata::tier::device>();
  return static_cast<int>(l.view()[0]);
#else
  auto l = t.acquire<strata::tier::host>();
  return static_cast<int>(l.view()[0]);
#endif
}
