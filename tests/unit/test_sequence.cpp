// tensor_sequence: an offloaded walk gives bitwise the same results as a resident walk, keeps at
// most Depth+1 elements on the compute tier, and overlaps fetches with compute when Depth >= 1.
#include "catch.hpp"

#include <strata/strata.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

using namespace strata;

namespace {

// Uneven element sizes: the ring is sized by the largest.
std::vector<std::size_t> layer_sizes() {
  return {3000, 3001, 17, 2048, 999, 4096, 1, 2500, 640, 4000, 3500, 4096, 1234, 3333, 4095, 2222};
}

// A "layer": read the weights, update them in a way that depends on the layer index and on a
// running activation, so any stale or misplaced data changes the result.
void layer_forward(std::size_t i, float* w, std::size_t n, double& act) {
  for (std::size_t k = 0; k < n; ++k) {
    act = std::fmod(act * 1.0001 + w[k], 1000.0);
    w[k] = static_cast<float>(w[k] * 0.5 + static_cast<double>(i) + act * 1e-3);
  }
}
void layer_backward(std::size_t i, const float* w, std::size_t n, double& grad) {
  for (std::size_t k = 0; k < n; ++k) grad = std::fmod(grad * 0.999 + w[k] * (1.0 + i), 1e6);
}

std::vector<std::vector<float>> initial_weights() {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<std::vector<float>> w;
  for (auto n : layer_sizes()) {
    w.emplace_back(n);
    for (auto& x : w.back()) x = u(rng);
  }
  return w;
}

struct result {
  std::vector<std::vector<float>> weights;
  double act = 0.25, grad = 0.5;
  std::size_t device_peak = 0, ring_bytes = 0;
};

template <class Placement, class Prefetch>
result run_walks(int steps) {
  context ctx({.device_bytes = 512 << 10, .pinned_bytes = 4 << 20, .staging_slot_bytes = 4096,
               .staging_slots = 4});
  tensor_sequence<float, Placement, Prefetch> seq(ctx);
  auto init = initial_weights();
  for (std::size_t i = 0; i < init.size(); ++i)
    seq.emplace_back("layer" + std::to_string(i), {init[i].size()}).assign(init[i]);
  result r;
  for (int s = 0; s < steps; ++s) {
    seq.forward(read_write, [&](std::size_t i, auto v) {
      layer_forward(i, v.data(), v.size(), r.act);
    });
    seq.backward([&](std::size_t i, auto v) { layer_backward(i, v.data(), v.size(), r.grad); });
  }
  for (std::size_t i = 0; i < seq.size(); ++i) r.weights.push_back(seq[i].to_vector());
  r.device_peak = ctx.budget(tier_id::device).peak();
  r.ring_bytes = seq.ring_bytes();
  return r;
}

std::size_t largest_layer_bytes() {
  std::size_t m = 0;
  for (auto n : layer_sizes()) m = std::max(m, n * sizeof(float));
  return m;
}

}  // namespace

TEST_CASE("offloaded walks == resident walk, bitwise, for every depth and home tier",
          "[sequence]") {
  const result ref = run_walks<placement<tier::host>, prefetch::none>(3);  // no movement at all

  auto same = [&](const result& r) {
    CHECK(r.act == ref.act);
    CHECK(r.grad == ref.grad);
    REQUIRE(r.weights.size() == ref.weights.size());
    for (std::size_t i = 0; i < r.weights.size(); ++i) {
      INFO("layer " << i);
      CHECK(r.weights[i] == ref.weights[i]);
    }
  };
  SECTION("resident on the device") { same(run_walks<resident_on_device, prefetch::none>(3)); }
  SECTION("host home, on demand") { same(run_walks<offloaded_to_host, prefetch::none>(3)); }
  SECTION("host home, lookahead 1") { same(run_walks<offloaded_to_host, prefetch::lookahead<1>>(3)); }
  SECTION("host home, lookahead 2") { same(run_walks<offloaded_to_host, prefetch::lookahead<2>>(3)); }
  SECTION("host home, lookahead 5") { same(run_walks<offloaded_to_host, prefetch::lookahead<5>>(3)); }
  SECTION("pinned home, lookahead 3") {
    same(run_walks<offloaded_to_pinned, prefetch::lookahead<3>>(3));
  }
  SECTION("device+pinned+host, lookahead 2") {
    same(run_walks<placement<tier::device, tier::pinned, tier::host>, prefetch::lookahead<2>>(3));
  }
  SECTION("lookahead deeper than the sequence") {
    same(run_walks<offloaded_to_host, prefetch::lookahead<20>>(3));
  }
}

TEST_CASE("the compute tier never holds more than Depth+1 elements", "[sequence]") {
  const std::size_t big = largest_layer_bytes();
  auto r0 = run_walks<offloaded_to_host, prefetch::none>(2);
  CHECK(r0.ring_bytes == 1 * big);
  CHECK(r0.device_peak == r0.ring_bytes);
  auto r1 = run_walks<offloaded_to_host, prefetch::lookahead<1>>(2);
  CHECK(r1.device_peak == 2 * big);
  auto r3 = run_walks<offloaded_to_host, prefetch::lookahead<3>>(2);
  CHECK(r3.device_peak == 4 * big);
  // Deeper than the sequence: one buffer per element, no more.
  auto r20 = run_walks<offloaded_to_host, prefetch::lookahead<20>>(1);
  CHECK(r20.ring_bytes == layer_sizes().size() * big);
  CHECK(r20.device_peak == r20.ring_bytes);
  // The whole sequence is larger than 4 rings' worth: it never sat on the device at once.
  std::size_t total = 0;
  for (auto n : layer_sizes()) total += n * sizeof(float);
  CHECK(total > r3.device_peak);
}

namespace {
// Waits until a span with this label has been recorded (the copy it names has finished), for at
// most a minute; returns whether it came. A bound, not a measurement: a schedule that works is
// done in microseconds, one that does not (the copy waits for this compute) never finishes.
bool wait_for_span(context& ctx, const std::string& label) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (std::chrono::steady_clock::now() < give_up) {
    for (auto& s : ctx.trace().spans())
      if (s.label == label) return true;
    std::this_thread::yield();
  }
  return false;
}

span find_span(const std::vector<span>& spans, const std::string& label) {
  for (auto& s : spans)
    if (s.label == label) return s;
  FAIL("no span " << label);
  return span{};
}
}  // namespace

// The schedule is proven, not timed: while element i is computed, elements i+1 and i+2 must
// already be on their way (held on the device), and element i+1's fetch must be able to finish
// while the compute on i waits for it. Without prefetch that fetch would only start after the
// compute returned, so the wait would run out and the test fail; how fast or loaded the machine
// is changes nothing.
TEST_CASE("with lookahead, fetching the next elements overlaps compute on this one",
          "[sequence][trace]") {
  constexpr std::size_t n = 6, depth = 2;
  context ctx({.device_bytes = 1 << 20});
  tensor_sequence<float, offloaded_to_host, prefetch::lookahead<depth>> seq(ctx);
  for (std::size_t i = 0; i < n; ++i) seq.emplace_back("L" + std::to_string(i), {4096});
  ctx.trace().clear();
  std::vector<int> ahead(n, 0);           // elements after i held on the device during compute i
  std::vector<bool> next_arrived(n, false);  // i+1's fetch finished during compute i
  seq.forward([&](std::size_t i, auto) {
    for (std::size_t j = i + 1; j <= std::min(i + depth, n - 1); ++j)
      ahead[i] += seq[j].template holds<tier::device>();
    if (i + 1 < n) next_arrived[i] = wait_for_span(ctx, "fetch L" + std::to_string(i + 1));
  });
  const auto spans = ctx.trace().spans();
  for (std::size_t i = 0; i + 1 < n; ++i) {
    INFO("compute on element " << i);
    CHECK(ahead[i] == static_cast<int>(std::min(depth, n - 1 - i)));
    CHECK(next_arrived[i]);
    // So the fetch of i+1 began, and ended, before the compute on i did.
    const span fetch = find_span(spans, "fetch L" + std::to_string(i + 1));
    const span compute = find_span(spans, "compute L" + std::to_string(i));
    CHECK(fetch.begin_us <= compute.end_us);
    CHECK(fetch.end_us <= compute.end_us);
  }
  const auto summary = ctx.trace().summarize();
  CHECK(summary.busy_us_by_queue.count("h2d") == 1);
  CHECK(summary.busy_us_by_queue.count("compute") == 1);
}

TEST_CASE("without prefetch, fetch and compute never overlap", "[sequence][trace]") {
  constexpr std::size_t n = 6;
  context ctx({.device_bytes = 1 << 20});
  tensor_sequence<float, offloaded_to_host, prefetch::none> seq(ctx);
  for (std::size_t i = 0; i < n; ++i) seq.emplace_back("L" + std::to_string(i), {4096});
  ctx.trace().clear();
  int held_ahead = 0;  // elements after i on the device during compute i: none without prefetch
  seq.forward([&](std::size_t i, auto) {
    for (std::size_t j = i + 1; j < n; ++j) held_ahead += seq[j].template holds<tier::device>();
  });
  CHECK(held_ahead == 0);
  // Each fetch is waited for before its compute starts, so the spans cannot overlap.
  auto spans = ctx.trace().spans();
  CHECK(trace_recorder::overlap_us(spans, span_kind::h2d, span_kind::compute) == 0);
  std::size_t fetches = 0;
  for (auto& s : spans) fetches += s.kind == span_kind::h2d;
  CHECK(fetches == n);
}

TEST_CASE("a failure in compute mid-walk loses nothing committed and the walk can rerun",
          "[sequence]") {
  context ctx({.device_bytes = 1 << 20});
  tensor_sequence<float, offloaded_to_host, prefetch::lookahead<2>> seq(ctx);
  for (int i = 0; i < 5; ++i)
    seq.emplace_back("L" + std::to_string(i), {100}).assign(std::vector<float>(100, 0.0f));
  auto add_one = [](std::size_t, auto v) {
    for (std::size_t k = 0; k < v.size(); ++k) v.data()[k] += 1;
  };
  CHECK_THROWS_WITH(seq.forward(read_write,
                                [&](std::size_t i, auto v) {
                                  if (i == 2) throw std::runtime_error("kernel failed");
                                  add_one(i, v);
                                }),
                    "kernel failed");
  // Layers 0 and 1 were committed, layer 2's lease ended dirty (its partial work is written
  // back as a lease always is), 3 and 4 were only prefetched and dropped.
  CHECK(seq[0].to_vector() == std::vector<float>(100, 1.0f));
  CHECK(seq[1].to_vector() == std::vector<float>(100, 1.0f));
  CHECK(seq[3].to_vector() == std::vector<float>(100, 0.0f));
  CHECK(seq[4].to_vector() == std::vector<float>(100, 0.0f));
  ctx.synchronize();
  CHECK(ctx.budget(tier_id::device).used() == seq.ring_bytes());  // only the ring is left
  seq.forward(read_write, add_one);
  CHECK(seq[4].to_vector() == std::vector<float>(100, 1.0f));
  CHECK(seq[0].to_vector() == std::vector<float>(100, 2.0f));
}

TEST_CASE("a sequence whose ring does not fit the device is refused with the numbers",
          "[sequence]") {
  context ctx({.device_bytes = 64 << 10});
  tensor_sequence<float, offloaded_to_host, prefetch::lookahead<3>> seq(ctx);
  for (int i = 0; i < 4; ++i) seq.emplace_back("L" + std::to_string(i), {8192});  // 32 KiB each
  try {
    seq.forward([](std::size_t, auto) {});
    FAIL("a 4 x 32 KiB ring was placed on a 64 KiB device");
  } catch (const out_of_budget& e) {
    CHECK(std::string(e.what()).find("sequence ring buffer") != std::string::npos);
  }
}
