// examples/01_tiered_tensor/main.cpp — strata's central type, on a device of 8 MiB.
//
// What this is: a walk, top to bottom, through what a tiered_tensor does and where its bytes go.
//   1. a context: the budget of each memory tier
//   2. one tensor that lives in host memory and is leased on the device: fetch, drop, write-back
//   3. what happens when something does not fit: out_of_budget, with the numbers
//   4. twelve "layers" (18.75 MiB) walked forward and backward through the 8 MiB device with
//      lookahead prefetch: the device never holds more than Depth+1 of them
//   5. the picture of that walk: a Chrome trace JSON to open in Perfetto
//   6. the same walk without prefetch, and what the overlap bought
//
// What this is not: a model. The "kernels" below do some arithmetic so that there is compute to
// overlap, and add 1 to the weights so that every result can be checked exactly. The mini-GPT
// in examples/gpt/ is the real thing. In the host build the device is emulated (a bounded host
// arena with its own budget and copy queues), so the timings say how well copies overlap compute
// on this machine, and nothing about a GPU.
//
// Build and run (host build, no GPU needed):
//   g++ -std=c++20 -O2 -I include -I examples/common examples/01_tiered_tensor/main.cpp -pthread
//       -o ex01 && ./ex01                                      (one command line)
//
// Shapes in comments are written // (rows, cols).

#include <strata/strata.hpp>

#include "example_support.hpp"  // examples/common/: mib, section, indented, checks
#include "toy_layers.hpp"       // examples/common/: run_kernel, the synthetic layers

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

using strata::tier_id;
using namespace example;

// ---------------------------------------------------------------------------------------------
// "Kernels". On a GPU each of these is a CUDA kernel launched on ctx.compute_stream(), reading
// and writing device memory through the pointer a lease hands out (lease.data()). Here they are
// plain loops over that pointer, run through run_kernel (toy_layers.hpp: on the memory itself
// in the host build, on a host copy of it in a CUDA build). The forward one, y = x W^T then
// W += 1, is layer_forward_kernel in toy_layers.hpp; example 02 walks its layers with it too.

// x *= factor, elementwise.
void scale_kernel(float* x, std::size_t n, float factor) {
  for (std::size_t i = 0; i < n; ++i) x[i] *= factor;
}

// dx = dy W, read-only on W (a backward pass reads the weights its forward pass used).
float layer_backward_kernel(const float* w, std::size_t rows, std::size_t cols) {
  std::vector<float> dy(toy_tokens * rows), dx(toy_tokens * cols, 0.0f);  // (tokens, rows) (tokens, cols)
  for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = 1e-3f * static_cast<float>(i % 89);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t t = 0; t < toy_tokens; ++t) {
      const float g = dy[t * rows + r];
      for (std::size_t c = 0; c < cols; ++c) dx[t * cols + c] += g * w[r * cols + c];
    }
  float sum = 0;
  for (float v : dx) sum += v;
  return sum;
}

volatile float g_checksum = 0;  // where the kernels' checksums go, so their work is kept

std::size_t device_in_use(strata::context& ctx) { return ctx.budget(tier_id::device).used(); }

// ---------------------------------------------------------------------------------------------
// The layer sequence of sections 4 and 6.

constexpr std::size_t layer_count = 12;
constexpr std::size_t layer_rows = 640, layer_cols = 640;  // 1.56 MiB of float per layer

// Weights initial_weight(l, j) (toy_layers.hpp): exact in float before and after "+= 1", so the
// checks can be bitwise.
template <class Sequence>
void make_layers(Sequence& seq) {
  for (std::size_t l = 0; l < layer_count; ++l) {
    auto& w = seq.emplace_back("layer" + std::to_string(l), {layer_rows, layer_cols});
    std::vector<float> init(w.size());
    for (std::size_t j = 0; j < init.size(); ++j) init[j] = initial_weight(l, j);
    w.assign(init);  // host -> home tier (host memory); nothing reaches the device yet
  }
}

// Forward (read_write: each layer is written back to its home after its compute), then backward
// (read-only: each layer is dropped from the device, nothing is written). With `verbose`, one
// line per layer and where every layer is (residency_map: '#' leased for compute, '+' on the
// device or on its way, '.' at home only); otherwise one progress mark per layer.
template <class Sequence>
void walk_layers(strata::context& ctx, Sequence& seq, bool verbose) {
  auto progress = [&](const char* pass, std::size_t i) {
    if (verbose) {
      std::printf("  %-8s layer %2zu   device [%s]   device in use %5.2f MiB\n", pass, i,
                  residency_map(seq, i).c_str(), mib(device_in_use(ctx)));
    } else {
      std::printf("#");
      std::fflush(stdout);
    }
  };

  if (!verbose) std::printf("  forward  ");
  seq.forward(strata::read_write, [&](std::size_t i, const auto& w) {
    run_kernel(ctx, w.data(), w.size(), [&](float* p) {
      g_checksum = g_checksum + layer_forward_kernel(p, w.shape()[0], w.shape()[1]);
    });
    progress("forward", i);
  });
  if (!verbose) std::printf("\n  backward ");
  seq.backward([&](std::size_t i, const auto& w) {
    run_kernel(ctx, w.data(), w.size(), [&](const float* p) {
      g_checksum = g_checksum + layer_backward_kernel(p, w.shape()[0], w.shape()[1]);
    });
    progress("backward", i);
  });
  if (!verbose) std::printf("\n");
  ctx.synchronize();  // the last write-backs may still be in flight; the trace should hold them
}

// Afterwards every weight at home must be its initial value + 1 (layers_are_correct,
// toy_layers.hpp): the forward pass's write-backs arrived, and the read-only backward pass
// changed nothing.

int run() {
  // Each check prints one aligned line; any failure makes the program exit non-zero.
  checks check;

  // -------------------------------------------------------------------------------------------
  section("1. A context: the budget of each memory tier");
  // Everything with state lives in the context: budgets, memory pools, the pinned staging ring,
  // the copy queues, the trace. An 8 MiB device makes the offloading below necessary. The pinned
  // tier already holds the staging ring (4 slots x 4 MiB) that host <-> device copies stream
  // through, because pageable host memory cannot be DMA'd asynchronously.
  strata::context_config config;
  config.device_bytes = std::size_t{8} << 20;
  config.pinned_bytes = std::size_t{64} << 20;
  strata::context ctx(config);
  std::printf("%s", ctx.memory_report().c_str());

  // -------------------------------------------------------------------------------------------
  section("2. One tensor: home in host memory, leased on the device");
  // offloaded_to_host = placement<tier::device, tier::host>: computed on the device (first tier),
  // living in host memory (last tier). It takes device memory only while it is leased there.
  strata::tiered_tensor<float, strata::offloaded_to_host> t(ctx, "t", {512, 512});  // (rows, cols)
  {
    std::vector<float> init(t.size());
    for (std::size_t i = 0; i < init.size(); ++i) init[i] = static_cast<float>(i % 1000);
    t.assign(init);
  }
  auto state = [&](const char* what) {
    std::printf("  %-38s device in use %5.2f MiB   copy on device: %-3s   home current: %s\n",
                what, mib(device_in_use(ctx)), t.holds<strata::tier::device>() ? "yes" : "no",
                t.holds<strata::tier::host>() ? "yes" : "no");
  };
  std::printf("  tensor '%s' %s, %.2f MiB of float, home tier: host\n", t.name().c_str(),
              t.shape().to_string().c_str(), mib(t.size_bytes()));
  state("after assign:");
  {
    // A read-only lease on the compute tier: fetches host -> pinned ring -> device, and waits.
    auto lease = t.acquire();
    state("read-only lease on the device:");
    // float x = lease.view()[0];  // does not compile: "view: this tier is not host-accessible;
    //                             //  host code cannot index device or nvme memory. ..."
  }
  // The last lease ended and the data was clean: the device copy is dropped and its memory
  // freed; nothing is copied back.
  state("released (clean: dropped):");
  {
    // A read_write lease is exclusive, and leaves the home copy stale until it is written back.
    auto lease = t.acquire(strata::read_write);
    state("read_write lease on the device:");
    ctx.compute("scale", [&] {
      const std::size_t n = lease.view().size();
      run_kernel(ctx, lease.data(), n, [&](float* x) { scale_kernel(x, n, 2.0f); });
    });
  }
  // Releasing a dirty lease queues the write-back device -> host (ordered after the compute on
  // it) and drops the device copy, whose memory is freed once the write-back has read it. We wait
  // here only so that the numbers printed are final; to_vector() waits by itself.
  ctx.synchronize();
  state("released (dirty: written back):");
  {
    const std::vector<float> back = t.to_vector();
    bool scaled = true;
    for (std::size_t i = 0; i < back.size(); ++i)
      scaled = scaled && back[i] == 2.0f * static_cast<float>(i % 1000);
    std::printf("  read back from home (to_vector): t[0..3] = %g %g %g %g\n", double(back[0]),
                double(back[1]), double(back[2]), double(back[3]));
    check("the write-back reached home: every element is its initial value x 2", scaled);
  }

  // -------------------------------------------------------------------------------------------
  section("3. Too big for the device: out_of_budget, with the numbers");
  // A tensor that lives on the device must fit there when it is made...
  try {
    strata::tiered_tensor<float, strata::resident_on_device> big(ctx, "big", {3072, 1024});
    std::printf("  FAILED: a 12 MiB tensor fit in an 8 MiB device\n");
    check.fail();
  } catch (const strata::out_of_budget& e) {
    std::printf("  a resident_on_device tensor of 12 MiB, made:\n    %s\n", e.what());
  }
  // ...one offloaded to host memory can be made, but not leased whole on the device. That is
  // what sequences are for: a model is walked layer by layer (section 4).
  {
    strata::tiered_tensor<float, strata::offloaded_to_host> big(ctx, "big", {3072, 1024});
    try {
      auto lease = big.acquire();
      std::printf("  FAILED: a 12 MiB tensor was leased on an 8 MiB device\n");
      check.fail();
    } catch (const strata::out_of_budget& e) {
      std::printf("  an offloaded_to_host tensor of 12 MiB, made (at home in host memory), then "
                  "acquired on the device:\n    %s\n",
                  e.what());
    }
  }

  // -------------------------------------------------------------------------------------------
  section("4. Twelve layers through an 8 MiB device, with lookahead prefetch");
  // While layer i is computed, layers i+1 and i+2 are already being fetched into a ring of
  // Depth+1 = 3 device buffers; when i is done (and written back), its buffer takes layer i+3.
  using lookahead_layers =
      strata::tensor_sequence<float, strata::offloaded_to_host, strata::prefetch::lookahead<2>>;
  lookahead_layers layers(ctx);
  make_layers(layers);
  std::printf("  %zu layers of (%zu, %zu) float, %.2f MiB each, %.2f MiB in all; device budget "
              "%.2f MiB\n",
              layers.size(), layer_rows, layer_cols, mib(layers[0].size_bytes()),
              mib(layers.size() * layers[0].size_bytes()), mib(config.device_bytes));
  std::printf("  map: '#' leased for compute, '+' on the device or on its way (prefetched), "
              "'.' at home only\n");

  ctx.trace().clear();  // the trace should show this walk only
  auto& device = ctx.budget(tier_id::device);
  const std::size_t before_walk = device.used();
  device.reset_peak();
  walk_layers(ctx, layers, /*verbose=*/true);
  const strata::trace_summary with_lookahead = ctx.trace().summarize();

  const std::size_t added = device.peak() - before_walk;
  const bool bounded = added <= layers.ring_bytes();
  std::printf("  device peak during the walk:     %.2f MiB (above the %.2f MiB in use before it)\n",
              mib(added), mib(before_walk));
  std::printf("  the ring, Depth+1 = %zu layers:  %.2f MiB\n", lookahead_layers::depth + 1,
              mib(layers.ring_bytes()));
  check("the device never held more than Depth+1 layers", bounded);
  ctx.trace().set_enabled(false);  // reading every layer back for the check is not part of the walk
  const bool correct = layers_are_correct(layers);
  ctx.trace().set_enabled(true);
  check("every weight at home is its initial value + 1 (to_vector)", correct);

  // -------------------------------------------------------------------------------------------
  section("5. The picture: a trace of that walk");
  // One row per queue (compute, h2d, d2h): with lookahead, the fetches of the next layers run
  // under the compute of this one.
  const std::string trace_path = "01_tiered_tensor.trace.json";
  ctx.trace().write_chrome_json(trace_path);
  std::printf("  wrote %s (%zu spans): open it in https://ui.perfetto.dev or chrome://tracing\n",
              trace_path.c_str(), ctx.trace().spans().size());

  // -------------------------------------------------------------------------------------------
  section("6. The same walk without prefetch");
  // prefetch::none: one device buffer; each layer is fetched when its lease is taken, once the
  // previous layer's write-back has emptied the buffer, so the compute waits for every copy.
  using on_demand_layers =
      strata::tensor_sequence<float, strata::offloaded_to_host, strata::prefetch::none>;
  on_demand_layers plain(ctx);
  make_layers(plain);
  ctx.trace().clear();
  walk_layers(ctx, plain, /*verbose=*/false);
  const strata::trace_summary on_demand = ctx.trace().summarize();
  ctx.trace().set_enabled(false);
  const bool plain_correct = layers_are_correct(plain);
  ctx.trace().set_enabled(true);
  check("every weight at home is its initial value + 1 (to_vector)", plain_correct);

  std::printf("\n  with prefetch::lookahead<2>:\n%s", indented(with_lookahead.to_string()).c_str());
  std::printf("  with prefetch::none:\n%s", indented(on_demand.to_string()).c_str());
  // On a GPU, the compute-busy fraction is the number overlap is judged by: near 100% means the
  // walk cost only its compute. On the emulated device the copies (memcpy on worker threads) and
  // the "kernels" compete for the same CPU cores, so overlap shortens the walk only as far as
  // cores are free, and the kernels themselves slow down while copies run beside them.
  std::printf("\n  wall time of the walk: %.1f ms with lookahead<2>, %.1f ms without (%+.0f%%), on "
              "%u CPU cores\n",
              with_lookahead.wall_us / 1000.0, on_demand.wall_us / 1000.0,
              100.0 * (with_lookahead.wall_us / on_demand.wall_us - 1.0),
              std::thread::hardware_concurrency());

  std::printf("\n  tiers at the end (both sequences still hold their rings: 3 + 1 layers):\n%s",
              ctx.memory_report().c_str());
  return verdict(check.ok());
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const strata::error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
