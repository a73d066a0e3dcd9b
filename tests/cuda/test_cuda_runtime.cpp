// The cuda-runtime build (g++ with CUDA headers and cudart, no nvcc, no kernels): a program
// that only moves data must work on the GPU without being compiled by nvcc. Reads each element
// of an offloaded sequence back from the device on the compute stream and checks it.
// Skips (exit 77) without a GPU.
#include "cuda_test.hpp"

#include <strata/strata.hpp>

using namespace strata;

namespace {

void sequence_reads_back() {
  context ctx({.device_bytes = 32 << 20, .staging_slot_bytes = 1 << 20, .staging_slots = 2});
  tensor_sequence<float, offloaded_to_host, prefetch::lookahead<2>> seq(ctx);
  for (int i = 0; i < 8; ++i) {
    std::vector<float> v((1 << 19) + static_cast<std::size_t>(i));
    for (std::size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(k % 97 + i);
    seq.emplace_back("L" + std::to_string(i), {v.size()}).assign(v);
  }
  bool ok = true;
  seq.forward([&](std::size_t i, auto v) {
    std::vector<float> host(v.size());
    check_cuda(cudaMemcpyAsync(host.data(), v.data(), v.size_bytes(), cudaMemcpyDeviceToHost,
                               ctx.compute_stream()),
               "read back");
    check_cuda(cudaStreamSynchronize(ctx.compute_stream()), "read back");
    for (std::size_t k = 0; k < host.size(); ++k)
      ok = ok && host[k] == static_cast<float>(k % 97 + i);
  });
  GPU_CHECK(ok);
  GPU_CHECK(ctx.budget(tier_id::device).peak() == seq.ring_bytes());
}

}  // namespace

int main() {
  return cuda_test::run_all({
      {"an offloaded sequence reads back exactly on the GPU", sequence_reads_back},
  });
}
