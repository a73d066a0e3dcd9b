// Hundreds of MiB through the NVMe tier, with both engines: the store's round trip at an odd
// size, and a tensor's fetch to the device and write-back through the staging ring.
// ctest-timeout: 900
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/strata.hpp>

#include <cstdlib>

using namespace strata;
using namespace io_test;


TEST_CASE("a 300 MiB tensor (+ 12345 bytes) round-trips through the NVMe tier", "[nvme][slow]") {
  const std::size_t n = (std::size_t{300} << 20) + 12345;
  std::vector<std::uint8_t> data(n);
  for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 13);
  for (const auto& engine : engine_kinds()) {
    INFO("engine " << engine);
    context_config cfg;
    cfg.device_bytes = std::size_t{320} << 20;
    cfg.pinned_bytes = std::size_t{64} << 20;
    cfg.nvme_directory = test_tmpdir();
    cfg.io.kind = engine;
    context ctx(cfg);
    tiered_tensor<std::uint8_t, offloaded_to_nvme> t(ctx, "large", {n});
    t.assign(data);
    CHECK(t.to_vector() == data);
    {
      auto l = t.acquire(read_write);  // nvme -> pinned slots -> device, then back
      for (std::size_t i = 0; i < n; i += 4096) l.data()[i] ^= 0xFF;
    }
    for (std::size_t i = 0; i < n; i += 4096) data[i] ^= 0xFF;
    CHECK(t.to_vector() == data);
    for (std::size_t i = 0; i < n; i += 4096) data[i] ^= 0xFF;  // back for the next engine
  }
}
