// expect: the compute tier \(first\) must be addressable memory; nvme can only be a home tier
#include <strata/tensor/placement.hpp>

#ifndef STRATA_COMPILE_FAIL_CONTROL
using p = strata::placement<strata::tier::nvme>;
#else
using p = strata::offloaded_to_nvme;
#endif
constexpr auto n = p::tier_count;

int main() { return n >= 1 ? 0 : 1; }
