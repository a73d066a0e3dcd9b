// expect: placement: list each tier once
#include <strata/tensor/placement.hpp>

#ifndef STRATA_COMPILE_FAIL_CONTROL
using p = strata::placement<strata::tier::device, strata::tier::host, strata::tier::host>;
#else
using p = strata::placement<strata::tier::device, strata::tier::pinned, strata::tier::host>;
#endif
constexpr auto n = p::tier_count;

int main() { return n == 3 ? 0 : 1; }
