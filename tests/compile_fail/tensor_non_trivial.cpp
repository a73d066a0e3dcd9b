// expect: T must be a non-const trivially copyable element type
#include <strata/strata.hpp>

#include <string>

#ifndef STRATA_COMPILE_FAIL_CONTROL
using t = strata::tiered_tensor<std::string, strata::offloaded_to_host>;
#else
using t = strata::tiered_tensor<float, strata::offloaded_to_host>;
#endif

int main() { return sizeof(t) > 0 ? 0 : 1; }
