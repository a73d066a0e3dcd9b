// needs: nlohmann_json
// docs/checkpoints.md, "Using it": a ZeRO-Infinity run checkpointed in the background every
// two steps, then resumed by a second run from `latest`.
#include "check.hpp"

#if __has_include(<nlohmann/json.hpp>)

#include <strata/checkpoint/saver.hpp>
#include <strata/strata.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

using namespace strata;

static std::string scratch_directory() {
  const char* d = std::getenv("STRATA_TEST_TMPDIR");
  return d && *d ? d : ".";
}

// Runs steps [first saved, steps) of a toy model on 2 thread ranks; returns rank 0's first step.
static std::uint64_t run(const std::string& dir, std::uint64_t steps, std::uint64_t every) {
  std::uint64_t started_at = 0;
  comm::thread_world(2).run([&](comm::threads& comm) {
    context_config cfg;
    cfg.device_bytes = 32 << 20;
    cfg.nvme_directory = scratch_directory();
    cfg.rank = comm.rank();
    context ctx(cfg);
    const std::vector<layer_spec> layers{{"fc1", 40000}, {"fc2", 30000}};
    const optim::adam_params adam{.lr = 3e-4f};
    auto train_step = [&](auto& ex, auto& opt, std::uint64_t) {
      ex.forward([](std::size_t, const float*, std::size_t) {});
      ex.backward([](std::size_t, const float*, float* dw, std::size_t n) {
        for (std::size_t j = 0; j < n; ++j) dw[j] = 1.0f;
      });
      (void)opt.step(ex, {.max_grad_norm = 1.0});
    };
    auto report = [](const checkpoint::save_report& r) {
      snippet::check(r.committed && r.error.empty(), "every checkpoint committed");
    };

    // snippet-begin
    using Ex = zero_executor<comm::threads, zero3_infinity, prefetch::lookahead<2>>;
    Ex ex(ctx, comm, layers, "toy", [](Ex& e, memory_plan& plan) {
      plan.add(optim::zero_adam<Ex>::plan_for(e));
      plan.add(checkpoint::saver<Ex>::plan_for(e));      // the snapshot staging: planned, checked
    });
    optim::zero_adam opt(ex, adam);
    checkpoint::saver ck(ex, opt, {.directory = dir, .keep = 2});   // a collective

    std::uint64_t first = 0;
    if (auto at = ck.resume()) first = at->step;          // `latest`, if there is one
    for (std::uint64_t step = first; step < steps; ++step) {
      train_step(ex, opt, step);                          // forward, backward, opt.step(...)
      if (auto r = ck.poll()) report(*r);                 // committed, or failed with the reason
      if ((step + 1) % every == 0)
        ck.save("step-" + std::to_string(step + 1), step + 1, {{"data_position", step + 1}});
    }
    if (auto r = ck.finish()) report(*r);
    // snippet-end

    if (comm.rank() == 0) started_at = first;
  });
  return started_at;
}

int main() {
  const std::string dir = scratch_directory() + "/snippet-checkpoint-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  snippet::check(run(dir, 4, 2) == 0, "the first run starts fresh");
  snippet::check(run(dir, 6, 2) == 4, "the second run resumes at step 4");
  std::filesystem::remove_all(dir);
  return 0;
}

#else
int main() {
  std::puts("SKIP: nlohmann/json not found");
  return 0;
}
#endif
