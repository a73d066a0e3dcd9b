// What only the in-process communicator (comm::threads) and the one-rank communicator
// (comm::solo) do: barrier ordering seen through shared memory, ranks on the caller's own
// threads, run()'s rethrow of the cause, timeouts naming the missing ranks, mismatched calls,
// dropped requests, bad world sizes. What every backend does — results bitwise against the
// rank-order reference, broadcast roots, requests in flight, abort — is in
// test_comm_conformance.cpp (tests/comm_conformance.hpp).
#include "catch.hpp"
#include "comm_conformance.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace strata;
using namespace std::chrono_literals;
using comm_conformance::contains;

TEST_CASE("threads: nobody leaves a barrier before everybody has entered it", "[comm]") {
  comm::thread_world world(4, 10s);
  std::atomic<int> entered{0}, bad{0};
  world.run([&](comm::threads& c) {
    for (int round = 1; round <= 20; ++round) {
      ++entered;
      c.barrier().wait();
      if (entered.load() < 4 * round) ++bad;
      c.barrier().wait();  // nobody enters the next round before everybody checked
    }
  });
  CHECK(bad.load() == 0);
}

TEST_CASE("solo: one rank, complete requests, the timeout it was given", "[comm]") {
  comm::solo c;
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  CHECK(c.timeout() == comm::default_timeout);
  CHECK(comm::solo(5ms).timeout() == 5ms);
  CHECK(c.barrier().ready());  // done before the call returned
  float x = 3.0f, y = 0.0f;
  CHECK(c.all_reduce(&x, &y, 1, comm::reduce_op::mean).ready());
  CHECK(y == 3.0f);
}

TEST_CASE("threads: ranks driven by threads of the caller's own", "[comm]") {
  comm::thread_world world(2);
  std::vector<int> values = {10, 20};
  std::vector<int> gathered(4, 0);
  std::thread other([&] {
    comm::threads& c = world.communicator(1);
    c.all_gather(&values[1], &gathered[2], sizeof(int)).wait();
  });
  comm::threads& c = world.communicator(0);
  c.all_gather(&values[0], &gathered[0], sizeof(int)).wait();
  other.join();
  CHECK(gathered == std::vector<int>{10, 20, 10, 20});
  CHECK_FALSE(world.failed());
}

TEST_CASE("threads: a rank that throws mid-sequence fails its peers fast, naming it", "[comm]") {
  comm::thread_world world(3, 2s);
  std::vector<std::string> seen(3);
  try {
    world.run([&](comm::threads& c) {
      std::vector<float> x(1000, 1.0f), y(1000);
      for (int step = 0; step < 5; ++step) {
        if (c.rank() == 1 && step == 2) throw std::runtime_error("disk on fire in step 2");
        try {
          c.all_reduce(x.data(), y.data(), x.size(), comm::reduce_op::sum).wait();
        } catch (const comm_error& e) {
          seen[static_cast<std::size_t>(c.rank())] = e.what();
          throw;
        }
      }
    });
    FAIL("run() did not rethrow");
  } catch (const comm_error& e) {
    FAIL(std::string("run() rethrew the echo, not the cause: ") + e.what());
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "disk on fire in step 2");
  }
  for (int r : {0, 2}) {
    INFO("rank " << r << ": " << seen[static_cast<std::size_t>(r)]);
    CHECK(contains(seen[static_cast<std::size_t>(r)], "rank 1 failed: disk on fire in step 2"));
    CHECK(contains(seen[static_cast<std::size_t>(r)], "all_reduce #2"));
    // The peers heard of the failure; they did not wait for the timeout.
    CHECK_FALSE(contains(seen[static_cast<std::size_t>(r)], "waited"));
  }
  CHECK(world.failed());
  // The world stays failed: a later collective throws at once.
  CHECK_THROWS_AS(world.communicator(0).barrier(), comm_error);
}

TEST_CASE("threads: a peer that never arrives is a comm_error after the timeout", "[comm]") {
  comm::thread_world world(2, 200ms);
  const auto start = std::chrono::steady_clock::now();
  try {
    world.run([&](comm::threads& c) {
      if (c.rank() == 1) return;  // never calls the collective
      std::vector<char> send(7), recv(14);
      c.all_gather(send.data(), recv.data(), 7).wait();
    });
    FAIL("run() did not throw");
  } catch (const comm_error& e) {
    INFO(e.what());
    CHECK(contains(e.what(), "rank 0 waited 200 ms for all_gather #0 (7 bytes per rank)"));
    CHECK(contains(e.what(), "rank 1 never called it"));
  }
  CHECK(std::chrono::steady_clock::now() - start >= 200ms);
}

TEST_CASE("threads: mismatched calls fail every rank, naming both calls", "[comm]") {
  comm::thread_world world(2, 5s);
  try {
    world.run([&](comm::threads& c) {
      std::vector<char> buf(64);
      c.barrier().wait();
      if (c.rank() == 0)
        c.all_gather(buf.data(), buf.data(), 8).wait();
      else
        c.broadcast(buf.data(), 16, 0).wait();
    });
    FAIL("run() did not throw");
  } catch (const comm_error& e) {
    INFO(e.what());
    CHECK(contains(e.what(), "collective mismatch"));
    CHECK(contains(e.what(), "all_gather #1 (8 bytes per rank)"));
    CHECK(contains(e.what(), "broadcast #1 (16 bytes from rank 0)"));
  }
}

TEST_CASE("threads: a dropped request is finished when everyone is there, else fails", "[comm]") {
  // Everyone has posted the all_gather before rank 0 drops its request: the drop finishes it.
  std::vector<std::vector<int>> out(3, std::vector<int>(3, -1));
  comm::thread_world world(3, 5s);
  world.run([&](comm::threads& c) {
    const int mine = 100 + c.rank();
    auto& recv = out[static_cast<std::size_t>(c.rank())];
    {
      comm::request gather = c.all_gather(&mine, recv.data(), sizeof(int));
      c.barrier().wait();  // every rank posted the all_gather before this barrier
      if (c.rank() != 0) gather.wait();
    }
  });
  for (const auto& recv : out) CHECK(recv == std::vector<int>{100, 101, 102});

  // Rank 0 drops its request before rank 1 arrives: the collective can never complete.
  comm::thread_world early(2, 5s);
  std::atomic<bool> dropped{false};
  try {
    early.run([&](comm::threads& c) {
      int v = c.rank(), recv[2];
      if (c.rank() == 0) {
        { comm::request r = c.all_gather(&v, recv, sizeof v); }
        dropped = true;
      } else {
        while (!dropped) std::this_thread::yield();
        c.all_gather(&v, recv, sizeof v).wait();
      }
    });
    FAIL("run() did not throw");
  } catch (const comm_error& e) {
    INFO(e.what());
    CHECK(contains(e.what(), "rank 0 dropped its request for all_gather #0"));
  }
}

TEST_CASE("threads: bad world sizes and ranks are config errors", "[comm]") {
  CHECK_THROWS_AS(comm::thread_world(0), config_error);
  CHECK_THROWS_AS(comm::thread_world(-3), config_error);
  comm::thread_world world(2);
  CHECK_THROWS_AS(world.communicator(2), config_error);
  CHECK_THROWS_AS(world.communicator(-1), config_error);
  CHECK_FALSE(world.failed());
}
