// The ZeRO executor over MPI ranks (mpirun, 4 ranks): stages 0-3 and ZeRO-Offload give bitwise
// the parameters of the unsharded step, as with the threads communicator.
// mpi-ranks: 4
// ctest-timeout: 300
#include "catch.hpp"
#include "zero_toy_model.hpp"

#include <strata/comm/mpi.hpp>

using namespace strata;
using namespace zero_toy;

namespace {
template <class Bundle, std::size_t Depth>
void check() {
  comm::mpi c(MPI_COMM_WORLD, std::chrono::seconds(60));
  INFO("rank " << c.rank() << " of " << c.size() << ", stage " << Bundle::stage << ", home "
                << tier_name(Bundle::home_tier::id));
  context ctx({.device_bytes = 8 << 20});
  const auto got = train<Bundle, Depth>(c, ctx, 2);
  CHECK(got.weights == reference(c.size(), 2));
  CHECK(got.peaks_within_plan);
}
}  // namespace

TEST_CASE("ZeRO stages over MPI == unsharded step, bitwise", "[zero][mpi]") {
  check<zero0, 1>();
  check<zero1, 1>();
  check<zero2, 1>();
  check<zero3, 1>();
  check<zero3_offload, 2>();
}
