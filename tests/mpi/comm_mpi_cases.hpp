// tests/mpi/comm_mpi_cases.hpp — the comm::mpi test cases, shared by test_comm_mpi.cpp (2 ranks)
// and test_comm_mpi4.cpp (4 ranks).
//
// Every rank runs every case (MPI collectives need all ranks, in the same order). First the
// contract every backend keeps (tests/comm_conformance.hpp: results bitwise against the
// rank-order reference, roots, requests in flight, abort), then what is MPI's own: results
// equal to the in-process communicator's, a dropped request finishing in the background, a
// new communicator after a failed one, the timeout. The failure cases end with every rank
// still able to go on and call MPI_Finalize.
#pragma once

#include "catch.hpp"
#include "comm_conformance.hpp"

#include <strata/comm/mpi.hpp>
#include <strata/comm/threads.hpp>

#include <mpi.h>

#include <chrono>
#include <string>
#include <vector>

namespace comm_mpi_cases {

using namespace strata;
using namespace std::chrono_literals;
namespace cc = comm_conformance;
using cc::contains;

TEST_CASE("comm conformance: mpi", "[comm][mpi]") {
  STATIC_REQUIRE(comm::communicator<comm::mpi>);
  for (const auto& k : cc::cases<comm::mpi>()) {
    cc::verdict v;
    {
      comm::mpi c(MPI_COMM_WORLD, 10s);
      cc::run_case(k, c, v, cc::rank_order());
    }  // every rank destroys its communicator, also a failed one: no hang
    INFO(k.name << "\n" << v.report());
    CHECK(v.passed());
  }
}

TEST_CASE("mpi: results equal the in-process communicator's bitwise", "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  const int n = c.size();
  const std::size_t count = 100'003;
  const auto mine = cc::floats_of_rank(c.rank(), count, 4, cc::rank_order());
  std::vector<float> over_mpi(count);
  c.all_reduce(mine.data(), over_mpi.data(), count, comm::reduce_op::mean).wait();

  // The same n ranks again, as threads of this process.
  std::vector<std::vector<float>> over_threads(static_cast<std::size_t>(n),
                                               std::vector<float>(count));
  comm::thread_world world(n, 10s);
  world.run([&](comm::threads& t) {
    const auto in = cc::floats_of_rank(t.rank(), count, 4, cc::rank_order());
    t.all_reduce(in.data(), over_threads[static_cast<std::size_t>(t.rank())].data(), count,
                 comm::reduce_op::mean)
        .wait();
  });
  CHECK(cc::matches(over_mpi, over_threads[static_cast<std::size_t>(c.rank())], cc::rank_order()));
}

TEST_CASE("mpi: a dropped request finishes in the background; the next collective works",
          "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  const int n = c.size();
  {
    std::vector<float> x(10'000, 1.0f), y(10'000);
    comm::request dropped = c.all_reduce(x.data(), y.data(), x.size(), comm::reduce_op::sum);
  }
  std::vector<float> x(7, 2.0f), y(7);
  c.all_reduce(x.data(), y.data(), 7, comm::reduce_op::sum).wait();
  CHECK(y == std::vector<float>(7, 2.0f * static_cast<float>(n)));
}

TEST_CASE("mpi: after an abort every rank destroys its communicator and a new one works",
          "[comm][mpi]") {
  {
    comm::mpi c(MPI_COMM_WORLD, 5s);
    if (c.rank() == 0) c.abort("stopping on purpose");
    CHECK_THROWS_AS(c.barrier().wait(), comm_error);
  }
  comm::mpi fresh(MPI_COMM_WORLD, 10s);
  int mine = fresh.rank(), sum_of_ranks = 0;
  std::vector<int> all(static_cast<std::size_t>(fresh.size()));
  fresh.all_gather(&mine, all.data(), sizeof(int)).wait();
  for (int v : all) sum_of_ranks += v;
  CHECK(sum_of_ranks == fresh.size() * (fresh.size() - 1) / 2);
}

TEST_CASE("mpi: a peer that never arrives is a comm_error after the timeout", "[comm][mpi]") {
  {
    comm::mpi c(MPI_COMM_WORLD, 300ms);
    c.barrier().wait();
    if (c.rank() == 0) {
      const auto start = std::chrono::steady_clock::now();
      try {
        c.barrier().wait();  // the others never call it
        FAIL("the barrier completed without the other ranks");
      } catch (const comm_error& e) {
        INFO(e.what());
        CHECK(contains(e.what(), "rank 0 waited 300 ms for barrier #1"));
      }
      CHECK(std::chrono::steady_clock::now() - start >= 300ms);
    }
    MPI_Barrier(MPI_COMM_WORLD);  // the others stay until rank 0 has given up
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace comm_mpi_cases
