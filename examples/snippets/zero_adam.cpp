// docs/api.md, "With the executor": ZeRO-Infinity (shards and Adam state on NVMe), gradient
// accumulation over two micro-batches, clipping by the global norm.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

using namespace strata;

static std::string scratch_directory() {
  const char* d = std::getenv("STRATA_TEST_TMPDIR");
  return d && *d ? d : ".";
}

int main() {
  std::vector<double> norms(2);
  std::vector<float> first(2);
  comm::thread_world(2).run([&](comm::threads& comm) {
    context_config cfg;
    cfg.device_bytes = 32 << 20;
    cfg.nvme_directory = scratch_directory();
    cfg.rank = comm.rank();
    context ctx(cfg);
    const std::vector<layer_spec> layers{{"fc1", 40000}, {"fc2", 30000}};
    const float micro_batches = 2;
    auto f = [](std::size_t, const float*, std::size_t) {};
    auto g = [](std::size_t, const float*, float* dw, std::size_t n) {
      for (std::size_t j = 0; j < n; ++j) dw[j] = 1.0f;
    };

    // snippet-begin
    zero_executor<comm::threads, zero3_infinity, prefetch::lookahead<2>> ex(ctx, comm, layers);
    optim::zero_adam opt(ex, optim::adam_params{.lr = 3e-4f, .weight_decay = 0.1f});
    ex.forward(f);
    ex.backward(g);                                      // first micro-batch: gradients at home
    ex.backward(g, grad_mode::accumulate);               // later micro-batches add to them
    auto r = opt.step(ex, {.max_grad_norm = 1.0, .grad_multiplier = 1.0f / micro_batches});
    // r.norm (global, all ranks), r.coefficient, r.skipped (Inf/NaN, or the loss scaler said so)
    // snippet-end

    norms[comm.rank()] = r.norm;
    std::vector<float> p = ex.params(0);
    if (comm.rank() == 0) first = {p.front(), p.back()};
    snippet::check(!r.skipped && r.coefficient < 1.0f, "the step ran, clipped to norm 1");
  });
  // Every gradient element is 1 after averaging the two micro-batches: the norm is sqrt(70000).
  snippet::check(norms[0] == norms[1], "every rank has the same global norm");
  snippet::check(std::abs(norms[0] - std::sqrt(70000.0)) < 1e-6, "the norm over all shards");
  snippet::check(first[0] == first[1] && first[0] != 0.0f, "an update landed (Adam moves by ~lr)");
}
