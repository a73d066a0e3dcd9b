// expect: placement: list at least one tier
// A placement with no tiers has neither a compute tier nor a home.
#include <strata/tensor/placement.hpp>

#ifndef STRATA_COMPILE_FAIL_CONTROL
using bad = strata::placement<>;
constexpr auto n = bad::tier_count;
#else
using good = strata::placement<strata::tier::host>;
constexpr auto n = good::tier_count;
#endif

int main() { return static_cast<int>(n) - 1; }
