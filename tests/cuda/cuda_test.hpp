// tests/cuda/cuda_test.hpp — the tiny harness of the GPU tests.
//
// GPU tests have their own main so they can skip cleanly: on a machine with the CUDA toolkit but
// no GPU (or no driver, which answers "insufficient driver"), they print why — the CUDA error
// name and text — and exit 77, which CTest reports as skipped (SKIP_RETURN_CODE). Where a GPU is
// required (STRATA_REQUIRE_GPU=1, or nvidia-smi lists one: strata::gpu_requirement) the same
// run exits 1 instead, so a broken GPU machine cannot pass as "skipped". Where a GPU is present
// every check counts.
#pragma once

#include <strata/core/cuda_check.hpp>

#include <cerrno>  // program_invocation_short_name (glibc)
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

/// The exit code of a test program without a usable GPU (77 skipped, or 1 where a GPU is
/// required), or -1 when there is one. For mains that set up more before run_all.
[[nodiscard]] inline int no_gpu_exit_code() {
  const char* self = "GPU test";
#if defined(__GLIBC__)
  self = program_invocation_short_name;
#endif
  return strata::no_gpu_exit_code(self, 77);
}

/// Runs every case; returns the process exit code (77 = skipped: no usable GPU; 1 when a
/// check failed, or when there is no usable GPU but one is required).
inline int run_all(const std::vector<test_case>& cases) {
  if (const int rc = no_gpu_exit_code(); rc >= 0) return rc;
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
