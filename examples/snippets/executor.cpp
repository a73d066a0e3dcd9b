// docs/api.md, "The executor": two layers trained with ZeRO-3 across two thread ranks, the
// shards at home in host memory.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cstddef>
#include <vector>

using namespace strata;

// Stand-ins for a layer's kernels: the gradient of 0.5 |w|^2 is w. Host loops: the snippets
// build in host mode, where the emulated device is memory of this process.
static void layer_forward(std::size_t, const float*, std::size_t) {}
static void layer_backward(std::size_t, const float* w, float* dw, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) dw[j] = w[j];
}

int main() {
  const std::vector<float> w0(65536, 1.0f), w1(65536, 1.0f);
  std::vector<std::vector<float>> result(2);

  comm::thread_world(2).run([&](comm::threads& comm) {
    context ctx({.device_bytes = 16 << 20, .rank = comm.rank()});

    // snippet-begin
    zero_executor<comm::threads, zero3_offload, prefetch::lookahead<2>> ex(ctx, comm, {{"fc1", 65536}, {"fc2", 65536}});
    ex.set_params(0, w0);                                    // every rank passes the full values
    ex.set_params(1, w1);

    auto f = [&](std::size_t i, const float* w, std::size_t n) { layer_forward(i, w, n); };  // compute tier
    auto g = [&](std::size_t i, const float* w, float* dw, std::size_t n) { layer_backward(i, w, dw, n); };
    auto u = [&](std::size_t, float* w, const float* dw, std::size_t n) {  // this rank's shard
      for (std::size_t j = 0; j < n; ++j) w[j] -= 0.5f * dw[j];            // SGD, lr 0.5
    };
    ex.forward(f);
    ex.backward(g);
    ex.step(u);
    // the next step; stage 3 may fuse the update into the backward (no step())
    ex.forward(f);
    ex.backward(g, u);
    // snippet-end

    std::vector<float> p = ex.params(1);  // a collective: every rank calls it
    if (comm.rank() == 0) result[1] = std::move(p);
  });

  // Two steps of w -= 0.5 w from 1: 0.25, on every element (exact in float).
  snippet::check(result[1].size() == 65536, "the full parameters of layer fc2");
  for (float x : result[1]) snippet::check(x == 0.25f, "two SGD steps: 1 -> 0.5 -> 0.25");
}
