// expect: placement: list each tier once, fastest first
// Tiers go from the compute tier to the home tier; host before device is backwards.
#include <strata/tensor/placement.hpp>

#ifndef STRATA_COMPILE_FAIL_CONTROL
using p = strata::placement<strata::tier::host, strata::tier::device>;
#else
using p = strata::placement<strata::tier::device, strata::tier::host>;
#endif
constexpr auto n = p::tier_count;

int main() { return static_cast<int>(n) - 2; }
