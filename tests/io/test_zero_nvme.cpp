// ZeRO-Infinity (stage 3, shards at home on NVMe) == the same step with shards on the device,
// bitwise, for both IO engines; the plan bounds the peaks; the trace shows IO, collectives and
// compute.
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/comm/threads.hpp>
#include <strata/schedule/executor.hpp>

#include <cmath>
#include <cstdlib>

using namespace strata;
using namespace io_test;

namespace {

const std::vector<std::size_t> sizes = {5000, 17, 70001, 4096, 3333};

float init(std::size_t i, std::size_t k) { return std::cos(0.01f * float(k) + float(i)); }
float input(int rank, std::size_t k) { return std::sin(0.3f * float(k) + 1.7f * float(rank)); }

template <class Bundle>
std::vector<std::vector<float>> train(int world, const std::string& engine, bool& within_plan,
                                      std::vector<span>* spans = nullptr, bool fused = false) {
  comm::thread_world tw(world, std::chrono::seconds(30));
  std::vector<std::vector<float>> out;
  std::mutex m;
  within_plan = true;
  tw.run([&](comm::threads& c) {
    context ctx(toy_nvme_config(c.rank(), engine));
    std::vector<layer_spec> layers;
    for (std::size_t i = 0; i < sizes.size(); ++i) layers.push_back({"L" + std::to_string(i), sizes[i]});
    zero_executor<comm::threads, Bundle, prefetch::lookahead<2>> ex(ctx, c, layers);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<float> w(sizes[i]);
      for (std::size_t k = 0; k < w.size(); ++k) w[k] = init(i, k);
      ex.set_params(i, w);
    }
    for (int step = 0; step < 2; ++step) {
      float act = 0;
      ex.forward([&](std::size_t, const float* w, std::size_t n) {
        for (std::size_t k = 0; k < n; ++k) act = std::tanh(act + 1e-3f * w[k] * input(c.rank(), k));
      });
      auto g = [&](std::size_t, const float* w, float* dw, std::size_t n) {
        for (std::size_t k = 0; k < n; ++k) dw[k] = w[k] * act + input(c.rank(), k);
      };
      auto u = [](std::size_t, float* w, const float* dw, std::size_t n) {
        for (std::size_t k = 0; k < n; ++k) w[k] -= 0.05f * dw[k];
      };
      if (fused) {
        ex.backward(g, u);
      } else {
        ex.backward(g);
        ex.step(u);
      }
    }
    std::vector<std::vector<float>> w;
    for (std::size_t i = 0; i < sizes.size(); ++i) w.push_back(ex.params(i));
    ex.sync();
    std::lock_guard lock(m);
    within_plan = within_plan && ex.plan().covers_peaks(ctx);
    if (c.rank() == 0) {
      out = std::move(w);
      if (spans) *spans = ctx.trace().spans();
    }
  });
  return out;
}

}  // namespace

TEST_CASE("ZeRO-Infinity (nvme homes) == ZeRO-3 on the device, bitwise", "[zero][nvme]") {
  for (int world : {1, 2, 4}) {
    bool within = false;
    const auto ref = train<zero3>(world, "posix", within);
    CHECK(within);
    for (const auto& engine : engine_kinds()) {
      INFO("world " << world << ", engine " << engine);
      std::vector<span> spans;
      const auto got = train<zero3_infinity>(world, engine, within, &spans);
      CHECK(got == ref);
      CHECK(within);
      std::size_t io = 0, gathers = 0, scatters = 0;
      for (auto& s : spans) {
        io += s.kind == span_kind::io_read || s.kind == span_kind::io_write;
        gathers += s.kind == span_kind::all_gather;
        scatters += s.kind == span_kind::reduce_scatter;
      }
      CHECK(io > 0);
      CHECK(gathers >= 2 * 2 * sizes.size());  // forward and backward re-gather, two steps
      CHECK(scatters == 2 * sizes.size());
      INFO("optimizer fused into backward");
      CHECK(train<zero3_infinity>(world, engine, within, nullptr, true) == ref);
      CHECK(within);
    }
  }
}
