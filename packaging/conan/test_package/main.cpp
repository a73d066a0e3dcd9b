// The Conan package's consumer: a tensor at home in host memory is fetched to the (emulated:
// the package's default is the host build) device through the staging ring, doubled there by a
// stand-in for a kernel, and written back on release; exits 1 unless it comes back doubled.
#include <strata/strata.hpp>

#include <cstdio>
#include <vector>

int main() {
  static_assert(__cplusplus >= 202002L, "the package's CMake target should make this C++20");
  strata::context ctx({.device_bytes = 1 << 20, .pinned_bytes = 1 << 20,
                       .staging_slot_bytes = 4096, .staging_slots = 2});
  std::vector<float> values(10000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * static_cast<float>(i);

  strata::tiered_tensor<float, strata::offloaded_to_host> w(ctx, "conan.w", {100, 100});
  w.assign(values);
  {
    auto on_device = w.acquire(strata::read_write);  // fetched to the compute tier, exclusive
    float* p = on_device.data();  // the emulated device is host memory: a host "kernel"
    for (std::size_t i = 0; i < values.size(); ++i) p[i] *= 2.0f;
  }                                                  // released: written back home
  std::vector<float> expect = values;
  for (float& v : expect) v *= 2.0f;
  const std::vector<float> back = w.to_vector();
  if (back != expect) {
    std::printf("strata %d.%d.%d: round trip through the tiers differs\n", STRATA_VERSION_MAJOR,
                STRATA_VERSION_MINOR, STRATA_VERSION_PATCH);
    return 1;
  }
  std::printf("strata %d.%d.%d from Conan: %zu floats host -> device -> host, doubled on the device\n",
              STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR, STRATA_VERSION_PATCH, back.size());
  return 0;
}
