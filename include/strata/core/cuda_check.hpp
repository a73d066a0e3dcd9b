// strata/core/cuda_check.hpp — turning CUDA runtime status codes into strata::cuda_error, and
// the few CUDA runtime habits every floor needs the same way.
//
// What lives here: check_cuda; device discovery (cuda_discover, cuda_device_count) and the one
// rule that says whether a run without a usable GPU is a skip or a failure (gpu_requirement,
// no_gpu_exit_code — used by every GPU test and benchmark main); cuda_query and
// cuda_query_done, which read cudaEventQuery / cudaStreamQuery without leaving "not ready"
// behind as the thread's last error.
// What does not: streams, events and memory (exec/, memory/).
// Only included when STRATA_ENABLE_CUDA is 1 (cuda-runtime and cuda-device builds).
#pragma once

#include <strata/core/error.hpp>

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <string>

STRATA_NAMESPACE_BEGIN

/// "cudaErrorInsufficientDriver (CUDA driver version is insufficient for CUDA runtime version)".
inline std::string cuda_status_text(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")";
}

/// Throws cuda_error("<what>: <cuda message>") unless `status` is cudaSuccess.
inline void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess)
    throw cuda_error(static_cast<int>(status), what + ": " + cuda_status_text(status));
}

/// What device discovery found: how many GPUs this process can use, and the error that
/// discovery stopped at (cudaSuccess when it answered, even with 0).
struct cuda_discovery {
  int devices = 0;
  cudaError_t status = cudaSuccess;

  /// Why no GPU is usable, for a skip message ("cudaGetDeviceCount: cudaErrorNoDevice (...)").
  std::string why_none() const {
    if (status != cudaSuccess) return "cudaGetDeviceCount: " + cuda_status_text(status);
    return devices == 0 ? "cudaGetDeviceCount found 0 devices" : "";
  }
};

/// Asks the runtime for its devices. Any error from discovery — including the "insufficient
/// driver" that a machine with the toolkit but no driver answers — means none; the sticky
/// status is cleared so later calls are not poisoned by it.
inline cuda_discovery cuda_discover() noexcept {
  cuda_discovery d;
  d.status = cudaGetDeviceCount(&d.devices);
  if (d.status != cudaSuccess) {
    cudaGetLastError();
    d.devices = 0;
  }
  return d;
}

/// How many GPUs this process can use (0 on any discovery error).
inline int cuda_device_count() noexcept { return cuda_discover().devices; }

/// Why this run must have a usable GPU; empty when it need not. The one place that decides
/// whether a GPU test or benchmark without a GPU is skipped or failed:
///  - STRATA_REQUIRE_GPU=1 (scripts/gpu-check sets it): required;
///  - STRATA_REQUIRE_GPU=0: not required (e.g. CUDA_VISIBLE_DEVICES= on a GPU machine);
///  - unset: required when `nvidia-smi -L` runs and lists a GPU — a GPU machine where CUDA
///    cannot reach the GPU (driver mismatch, container without the device) is broken, and a
///    skip there would hide it.
inline std::string gpu_requirement() {
  if (const char* env = std::getenv("STRATA_REQUIRE_GPU"); env && *env) {
    if (std::string(env) == "0") return "";
    return std::string("STRATA_REQUIRE_GPU=") + env + " says a GPU is required";
  }
  std::FILE* p = ::popen("nvidia-smi -L 2>/dev/null", "r");
  if (!p) return "";
  std::string first_gpu;
  char line[512];
  while (std::fgets(line, sizeof line, p))
    if (first_gpu.empty() && std::string(line).rfind("GPU ", 0) == 0) {
      first_gpu = line;
      while (!first_gpu.empty() && (first_gpu.back() == '\n' || first_gpu.back() == '\r'))
        first_gpu.pop_back();
    }
  ::pclose(p);
  if (first_gpu.empty()) return "";
  return "nvidia-smi -L lists a GPU (" + first_gpu +
         "), so CUDA should see it (set STRATA_REQUIRE_GPU=0 to allow the skip)";
}

/// For the main() of a GPU test or benchmark named `who`: -1 when a GPU is usable (run).
/// Otherwise prints why there is none (the CUDA error name and text) and returns the exit code:
/// `skip_code` (77 for tests: CTest's SKIP_RETURN_CODE), or 1 when gpu_requirement() says a GPU
/// is required, with the reason in the message.
[[nodiscard]] inline int no_gpu_exit_code(const char* who, int skip_code = 77) {
  const cuda_discovery d = cuda_discover();
  if (d.devices > 0) return -1;
  const std::string required = gpu_requirement();
  if (required.empty()) {
    std::printf("%s: no GPU: skipped (%s)\n", who, d.why_none().c_str());
    std::fflush(stdout);
    return skip_code;
  }
  std::printf("%s: no GPU (%s): FAILED, not skipped, because %s\n", who, d.why_none().c_str(),
              required.c_str());
  std::fflush(stdout);
  return 1;
}

/// Runs a completion query (cudaEventQuery, cudaStreamQuery) and returns its status.
/// cudaErrorNotReady is an answer, not a failure, but the runtime also keeps it as the thread's
/// last error, where the next cudaGetLastError() launch check would report it as a bogus launch
/// failure: it is cleared here — unless another error was already pending before the query,
/// which belongs to the check of whoever caused it.
template <class Query>
[[nodiscard]] cudaError_t cuda_query(Query&& query) {
  const bool clean_before = cudaPeekAtLastError() == cudaSuccess;
  const cudaError_t status = query();
  if (status == cudaErrorNotReady && clean_before) cudaGetLastError();
  return status;
}

/// cuda_query as "has the work ended?". Any error but "not ready" means the work will never
/// complete normally: it counts as ended, and the waiter (cudaEventSynchronize, check_cuda)
/// reports the error.
template <class Query>
[[nodiscard]] bool cuda_query_done(Query&& query) {
  return cuda_query(static_cast<Query&&>(query)) != cudaErrorNotReady;
}

STRATA_NAMESPACE_END
