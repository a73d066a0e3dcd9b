// comm::solo and comm::threads (1-4 ranks) keep the contract of comm/communicator.hpp: the cases
// of tests/comm_conformance.hpp (the same ones the MPI and GPU tests run), each on a fresh
// communicator, bitwise against the rank-order reference. The backends' own cases live in
// test_comm_threads.cpp.
#include "catch.hpp"
#include "comm_conformance.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <chrono>

using namespace strata;
using namespace std::chrono_literals;
namespace cc = comm_conformance;

TEST_CASE("comm conformance: solo", "[comm]") {
  STATIC_REQUIRE(comm::communicator<comm::solo>);
  for (const auto& k : cc::cases<comm::solo>()) {
    comm::solo c(10s);
    cc::verdict v;
    cc::run_case(k, c, v, cc::rank_order());
    INFO(k.name << "\n" << v.report());
    CHECK(v.passed());
  }
}

TEST_CASE("comm conformance: threads, 1 to 4 ranks", "[comm]") {
  STATIC_REQUIRE(comm::communicator<comm::threads>);
  for (int n = 1; n <= 4; ++n)
    for (const auto& k : cc::cases<comm::threads>()) {
      comm::thread_world world(n, 10s);
      cc::verdict v;
      try {
        world.run([&](comm::threads& c) { cc::run_case(k, c, v, cc::rank_order()); });
      } catch (const std::exception& e) {
        v.expect(false, std::string("thread_world::run threw: ") + e.what());
      }
      INFO(n << " ranks: " << k.name << "\n" << v.report());
      CHECK(v.passed());
    }
}
