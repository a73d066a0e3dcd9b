// A program that uses strata the way a consumer would: one include, one symbol, exit 0.
// Built by tests/consumer/run_consumer.cmake against an installed package (find_package),
// the source tree (add_subdirectory) and the single header; the script checks what it prints.
#include <strata/strata.hpp>

#include <cstdio>

int main() {
  std::printf("strata %d.%d.%d cuda_enabled=%d\n", STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR,
              STRATA_VERSION_PATCH, strata::cuda_enabled ? 1 : 0);
  return 0;
}
