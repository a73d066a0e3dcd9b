// expect: Depth must be at least 1; use prefetch::none
#include <strata/tensor/prefetch.hpp>

#ifndef STRATA_COMPILE_FAIL_CONTROL
constexpr auto d = strata::prefetch::lookahead<0>::depth;
#else
constexpr auto d = strata::prefetch::lookahead<1>::depth;
#endif

int main() { return d == 1 ? 0 : 1; }
