// docs/inference.md, "The two types": layers streamed from NVMe through a Depth+1 ring in
// batch blocks of k micro-batches, with a KV cache on the host opened in step with the walk.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cstdlib>
#include <string>
#include <vector>

using namespace strata;

int main() {
  context_config cfg;
  const char* dir = std::getenv("STRATA_TEST_TMPDIR");
  cfg.nvme_directory = dir && *dir ? dir : ".";
  context ctx(cfg);
  comm::solo comm;
  const std::size_t layers = 4, layer_bytes = 100000, kv_bytes_per_layer = 4096, k = 3;
  std::vector<infer::weight_layer> specs;
  for (std::size_t i = 0; i < layers; ++i) specs.push_back({"h." + std::to_string(i), layer_bytes});
  auto layer_bytes_of = [&](std::size_t i) {
    return std::vector<std::byte>(layer_bytes, std::byte(i + 1));
  };
  const memory_plan kv_lines = infer::kv_cache<offloaded_to_host>::plan_for(ctx, layers, kv_bytes_per_layer);
  std::size_t seen = 0;
  auto compute = [&](std::size_t i, std::size_t, const std::byte* layer, std::byte* cache) {
    seen += layer[0] == std::byte(i + 1);
    cache[0] = std::byte(static_cast<unsigned>(cache[0]) + 1);  // "append" to the cache
  };

  // snippet-begin
  using weights_on_nvme = strata::offloaded_to_nvme;          // device <- pinned <- nvme
  strata::infer::layer_stream<strata::comm::solo, weights_on_nvme, strata::prefetch::lookahead<2>>
      w(ctx, comm, specs, "blocks",
        [&](auto&, strata::memory_plan& p) { p.add(kv_lines); });  // one plan, one check
  for (std::size_t i = 0; i < w.size(); ++i) w.set_layer(i, layer_bytes_of(i));   // at load

  strata::infer::kv_cache<strata::offloaded_to_host, strata::prefetch::lookahead<1>>
      kv(ctx, layers, kv_bytes_per_layer);

  kv.begin_pass();
  std::byte* cache = nullptr;
  w.forward(k, [&](std::size_t i, std::size_t j, const std::byte* layer) {  // j: micro-batch
    if (j == 0) cache = kv.open(i);                // layer i's cache, on the compute tier
    compute(i, j, layer, cache);                   // the model's business
    if (j + 1 == k) kv.close(i);                   // written home; its buffer takes layer i+2
  });
  kv.end_pass();
  // snippet-end

  snippet::check(seen == layers * k, "every micro-batch saw its layer's bytes");
  snippet::check(w.stats().home_bytes == w.home_bytes(), "one read of each layer for the block");
  snippet::check(kv.layer_bytes(2)[0] == std::byte{3}, "the cache kept what the walk appended");
  return 0;
}
