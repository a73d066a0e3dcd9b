// infer::layer_stream over 2 MPI ranks (mpirun): each process keeps only its slice of every
// layer on NVMe (loading just that slice with set_stored), and the walk all-gathers whole
// layers: every rank sees every layer's bytes exactly, having read half of them from disk.
// mpi-ranks: 2
// ctest-timeout: 120
#include "catch.hpp"

#include "io/io_test_support.hpp"

#include <strata/comm/mpi.hpp>
#include <strata/infer/layer_stream.hpp>

#include <mpi.h>

#include <chrono>
#include <vector>

using namespace strata;

TEST_CASE("a sharded layer stream over MPI gathers every layer's bytes", "[infer][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, std::chrono::seconds(60));
  context ctx(io_test::toy_nvme_config(c.rank()));
  const std::vector<std::size_t> sizes{1000, 4097, 3, 70000};
  std::vector<infer::weight_layer> specs;
  std::vector<std::vector<std::byte>> layers;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    specs.push_back({"h." + std::to_string(i), sizes[i]});
    layers.emplace_back(sizes[i]);
    for (std::size_t b = 0; b < sizes[i]; ++b)
      layers.back()[b] = static_cast<std::byte>((b * 131 + i * 7) & 0xff);
  }
  infer::layer_stream<comm::mpi, sharded_placement<tier::device, tier::pinned, tier::nvme>,
                      prefetch::lookahead<2>>
      s(ctx, c, specs);
  for (std::size_t i = 0; i < sizes.size(); ++i)
    s.set_stored(i, std::span<const std::byte>(layers[i]).subspan(s.stored_offset(i), s.stored_bytes(i)));
  bool same = true;
  for (int pass = 0; pass < 2; ++pass)
    s.forward(2, [&](std::size_t i, std::size_t, const std::byte* w) {
      same = same && std::equal(w, w + sizes[i], layers[i].begin());
    });
  CHECK(same);
  CHECK(s.stats().home_bytes == 2 * s.home_bytes());  // this rank's slices only
  CHECK(s.home_bytes() < (1000 + 4097 + 64 + 70000) / 2 + 4 * 64);
  CHECK(s.stats().gathered_bytes > 0);
  CHECK(s.plan().covers_peaks(ctx));
}
