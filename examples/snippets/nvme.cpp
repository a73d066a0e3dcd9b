// docs/api.md, "The NVMe tier": a context with an NVMe arena file, and layers whose home is in it.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cstdlib>
#include <string>
#include <vector>

// The test runs this in the build tree: STRATA_TEST_TMPDIR is a directory there (a real file
// system, where O_DIRECT works; /tmp may be a tmpfs). Anywhere else: the current directory.
static std::string scratch_directory() {
  const char* d = std::getenv("STRATA_TEST_TMPDIR");
  return d && *d ? d : ".";
}

int main() {
  const std::string nvme_dir = scratch_directory();
  // snippet-begin
  strata::context_config cfg;
  cfg.nvme_directory = nvme_dir;              // e.g. "/mnt/nvme0/strata": must exist; its last
                                              // component must not be a symlink
  cfg.io.kind = "auto";                       // io_uring, else the pread/pwrite pool (with a notice)
  cfg.io.block_bytes = 1 << 20;               // requests of 1 MiB ...
  cfg.io.queue_depth = 16;                    // ... 16 in flight per call
  strata::context ctx(cfg);

  strata::tensor_sequence<float, strata::offloaded_to_nvme, strata::prefetch::lookahead<2>> layers(ctx);
  // snippet-end

  for (int i = 0; i < 4; ++i) {
    auto& t = layers.emplace_back("layer" + std::to_string(i), {300, 1000});
    t.assign(std::vector<float>(t.size(), static_cast<float>(i)));
  }
  layers.forward(strata::read_write, [](std::size_t, auto w) {
    for (std::size_t j = 0; j < w.size(); ++j) w.data()[j] += 1.0f;  // host mode: a host loop
  });
  for (int i = 0; i < 4; ++i) {
    const std::vector<float> v = layers[i].to_vector();
    snippet::check(v.front() == i + 1.0f && v.back() == i + 1.0f,
                   "each layer went device -> NVMe and back, bitwise");
  }
  snippet::check(ctx.budget(strata::tier_id::nvme).used() >= 4 * 300 * 1000 * sizeof(float),
                 "the layers' bytes are counted in the nvme budget");
}
