// tests/mpi/zero_mpi_cases.hpp — the ZeRO executor over MPI ranks: stages 0-3, ZeRO-Offload and
// the fused optimizer give bitwise the parameters of the unsharded step, as with the threads
// communicator. Included by the 2-rank and the 4-rank test programs.
#pragma once

#include "catch.hpp"
#include "zero_toy_model.hpp"

#include <strata/comm/mpi.hpp>

namespace zero_mpi {

template <class Bundle, std::size_t Depth>
void check(bool fused = false) {
  using namespace strata;
  comm::mpi c(MPI_COMM_WORLD, std::chrono::seconds(60));
  INFO("rank " << c.rank() << " of " << c.size() << ", stage " << Bundle::stage << ", home "
                << tier_name(Bundle::home_tier::id) << (fused ? ", fused" : ""));
  context ctx({.device_bytes = 8 << 20});
  const auto got = zero_toy::train<Bundle, Depth>(c, ctx, 2, fused);
  CHECK(got.weights == zero_toy::reference(c.size(), 2));
  CHECK(got.peaks_within_plan);
}

}  // namespace zero_mpi

TEST_CASE("ZeRO stages over MPI == unsharded step, bitwise", "[zero][mpi]") {
  using namespace strata;
  zero_mpi::check<zero0, 1>();
  zero_mpi::check<zero1, 1>();
  zero_mpi::check<zero2, 1>();
  zero_mpi::check<zero3, 1>();
  zero_mpi::check<zero3_offload, 2>();
  zero_mpi::check<zero3_offload, 2>(true);
}
