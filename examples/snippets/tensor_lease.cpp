// README.md, "Tensors and leases": a tensor with its home in host memory, leased on the device.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cstddef>
#include <vector>

// Stand-ins for the caller's kernels. The snippets build in host mode (strata::strata), where
// the emulated device is memory of this process, so a host loop may play the kernel; in a CUDA
// build these would be kernels launched on ctx.compute_stream().
static float first_seen = 0;
static void my_kernel(strata::context&, const float* w, std::size_t) { first_seen = w[0]; }
static void launch_update(float* w) {
  for (std::size_t i = 0; i < 1024 * 1024; ++i) w[i] += 1.0f;
}

int main() {
  strata::context ctx;
  const std::vector<float> host_values(1024 * 1024, 0.5f);

  // snippet-begin
  strata::tiered_tensor<float, strata::offloaded_to_host> w(ctx, "layer0.weight", {1024, 1024});
  w.assign(host_values);                        // from host memory, to the home tier

  {
    auto l = w.acquire();                       // read-only lease on the compute tier (device):
                                                // fetched now, stays while the lease lives
    my_kernel(ctx, l.data(), l.view().size());  // your kernel, on ctx.compute_stream()
  }                                             // released: clean data is dropped

  {
    auto l = w.acquire(strata::read_write);     // exclusive; marks the data dirty
    ctx.compute("update", [&] { launch_update(l.data()); });
  }                                             // released: written back to the home tier, dropped

  auto on_host = w.acquire<strata::tier::host>();  // a lease on another listed tier
  float x = on_host.view()[0];                     // checked indexing: host-accessible tiers only
  std::vector<float> all = w.to_vector();          // waits for pending write-backs
  // snippet-end

  snippet::check(first_seen == 0.5f, "the read lease saw the assigned values on the device");
  snippet::check(x == 1.5f && all.front() == 1.5f && all.back() == 1.5f,
                 "the read_write lease's update was written back home");
  snippet::check(!w.holds<strata::tier::device>(), "no copy left on the device after the leases");
}
