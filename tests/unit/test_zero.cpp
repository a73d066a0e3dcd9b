// ZeRO stages 0-3 on the threads communicator: a sharded training step gives bitwise the same
// parameters as the unsharded step; the memory plan bounds the measured peaks; a plan that
// does not fit is refused up front; a rank that fails mid-step fails its peers cleanly.
// ctest-timeout: 600
#include "catch.hpp"

#include "zero_toy_model.hpp"

#include <strata/comm/threads.hpp>

#include <atomic>
#include <mutex>

using namespace strata;

namespace {

using namespace zero_toy;

template <class Bundle, std::size_t Depth>
result run(int world, int steps, bool fused) {
  comm::thread_world tw(world, std::chrono::seconds(20));
  result out;
  std::mutex m;
  tw.run([&](comm::threads& c) {
    context ctx({.device_bytes = 8 << 20});
    auto r = train<Bundle, Depth>(c, ctx, steps, fused);
    std::lock_guard lock(m);
    out.peaks_within_plan = out.peaks_within_plan && r.peaks_within_plan;
    if (c.rank() == 0) {
      out.weights = std::move(r.weights);
      out.plan = std::move(r.plan);
    }
  });
  return out;
}

template <class Bundle, std::size_t Depth>
void check_equivalence(int world, bool fused = false) {
  INFO("stage " << Bundle::stage << ", home " << tier_name(Bundle::home_tier::id) << ", depth "
                << Depth << ", world " << world << (fused ? ", optimizer fused in backward" : ""));
  const auto ref = reference(world, 2);
  const auto got = run<Bundle, Depth>(world, 2, fused);
  REQUIRE(got.weights.size() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO("layer " << i);
    CHECK(got.weights[i] == ref[i]);  // bitwise: the reduction order is fixed (rank order)
  }
  INFO(got.plan);
  CHECK(got.peaks_within_plan);
}

}  // namespace

TEST_CASE("ZeRO stages 0-3 == unsharded step, bitwise, world sizes 1-4", "[zero]") {
  for (int world = 1; world <= 4; ++world) {
    check_equivalence<zero0, 1>(world);
    check_equivalence<zero1, 1>(world);
    check_equivalence<zero2, 1>(world);
    check_equivalence<zero3, 1>(world);
  }
}

TEST_CASE("ZeRO with host homes (ZeRO-Offload) and deeper lookahead == unsharded", "[zero]") {
  for (int world : {2, 3}) {
    check_equivalence<zero_bundle<2, tier::host>, 2>(world);
    check_equivalence<zero3_offload, 1>(world);
    check_equivalence<zero3_offload, 3>(world);
    check_equivalence<zero_bundle<3, tier::pinned>, 2>(world);
  }
}

TEST_CASE("ZeRO with prefetch::none (each layer brought when reached) == unsharded", "[zero]") {
  for (int world : {1, 3}) {
    check_equivalence<zero3, 0>(world);
    check_equivalence<zero3_offload, 0>(world);
    check_equivalence<zero1, 0>(world);
    check_equivalence<zero3_offload, 0>(world, true);
  }
}

TEST_CASE("the optimizer fused into backward == backward then step, bitwise", "[zero]") {
  for (int world = 1; world <= 4; ++world) {
    check_equivalence<zero3, 1>(world, true);
    check_equivalence<zero3_offload, 2>(world, true);
    check_equivalence<zero_bundle<3, tier::pinned>, 1>(world, true);
    check_equivalence<zero2, 1>(world, true);  // stages 0-2: backward(g) then step(u)
  }
}

// Catch2's assertions are not thread-safe: rank threads record what they saw, the test thread
// checks it.
TEST_CASE("a plan that does not fit the device is refused before the first step", "[zero]") {
  comm::thread_world tw(2, std::chrono::seconds(20));
  std::mutex m;
  std::vector<std::string> messages;
  std::vector<std::size_t> device_peaks;
  tw.run([&](comm::threads& c) {
    context ctx({.device_bytes = 64 << 10});
    std::vector<layer_spec> layers = {{"big", 1 << 16}};  // 256 KiB of parameters
    std::string message = "(accepted)";
    try {
      zero_executor<comm::threads, zero3_offload, prefetch::lookahead<1>> ex(ctx, c, layers, "tiny-gpu");
    } catch (const out_of_budget& e) {
      message = e.what();
    }
    std::lock_guard lock(m);
    messages.push_back(message);
    device_peaks.push_back(ctx.budget(tier_id::device).peak());
  });
  REQUIRE(messages.size() == 2);
  for (std::size_t r = 0; r < 2; ++r) {
    CHECK(messages[r].find("tiny-gpu") != std::string::npos);
    CHECK(messages[r].find("gathered-parameter buffers") != std::string::npos);
    CHECK(messages[r].find("device") != std::string::npos);
    CHECK(device_peaks[r] == 0);  // nothing was allocated
  }
}

TEST_CASE("a rank that throws mid-step fails its peers with comm_error, no hang", "[zero]") {
  comm::thread_world tw(3, std::chrono::seconds(20));
  std::mutex m;
  std::vector<std::string> peer_errors;
  CHECK_THROWS_WITH(
      tw.run([&](comm::threads& c) {
        context ctx({.device_bytes = 8 << 20});
        std::vector<layer_spec> layers = {{"a", 100}, {"b", 200}, {"c", 300}};
        zero_executor<comm::threads, zero3, prefetch::lookahead<1>> ex(ctx, c, layers);
        try {
          ex.forward([&](std::size_t i, const float*, std::size_t) {
            if (c.rank() == 1 && i == 1) throw std::runtime_error("rank 1 ran out of patience");
          });
          ex.backward([&](std::size_t, const float*, float* dw, std::size_t n) {
            std::fill(dw, dw + n, 1.0f);
          });
          ex.sync();
        } catch (const comm_error& e) {
          std::lock_guard lock(m);
          peer_errors.push_back(e.what());
          throw;
        }
      }),
      "rank 1 ran out of patience");
  REQUIRE(peer_errors.size() == 2);
  for (auto& e : peer_errors) CHECK(e.find("rank 1") != std::string::npos);
}
