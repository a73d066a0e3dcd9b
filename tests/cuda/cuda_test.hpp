// tests/cuda/cuda_test.hpp — the tiny harness of the GPU tests.
//
// GPU tests have their own main so they can skip cleanly: on a machine with the CUDA toolkit but
// no GPU (or no driver, which answers "insufficient driver"), they print why and exit 77, which
// CTest reports as skipped (SKIP_RETURN_CODE). Where a GPU is present every check counts.
#pragma once

#include <strata/core/cuda_check.hpp>

#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace cuda_test {

inline int failures = 0;

#define GPU_CHECK(cond)                                                                            \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      ++cuda_test::failures;                                                                       \
      std::printf("  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);                              \
    }                                                                                              \
  } while (0)

struct test_case {
  const char* name;
  std::function<void()> body;
};

/// Runs every case; returns the process exit code (77 = skipped: no usable GPU).
inline int run_all(const std::vector<test_case>& cases) {
  if (strata::cuda_device_count() == 0) {
    std::printf("no CUDA device or driver: skipping %zu GPU test cases\n", cases.size());
    return 77;
  }
  for (auto& c : cases) {
    const int before = failures;
    try {
      c.body();
    } catch (const std::exception& e) {
      ++failures;
      std::printf("  FAILED %s: exception: %s\n", c.name, e.what());
    }
    std::printf("%s %s\n", failures == before ? "passed" : "FAILED", c.name);
  }
  std::printf("%zu cases, %d failed checks\n", cases.size(), failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace cuda_test
