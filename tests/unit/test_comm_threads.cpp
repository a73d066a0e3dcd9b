// The in-process communicator (comm::threads) and the one-rank communicator (comm::solo):
// collectives bitwise against plain references for world sizes 1-4 and uneven sizes, the
// rank-order reductions, and failure: aborts, timeouts, mismatches, dropped requests.
#include "catch.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace strata;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::vector<unsigned char> bytes_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(1000u * salt + static_cast<unsigned>(rank));
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

/// Floats where the order of addition shows in the result: magnitudes from 1e-8 to 1e8 with
/// both signs, so a + b + c != a + (b + c) for many elements.
std::vector<float> floats_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(7919u * salt + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-8, 8);
  std::vector<float> v(n);
  for (auto& x : v) x = mantissa(rng) * std::pow(10.0f, static_cast<float>(exponent(rng)));
  return v;
}

/// The definition: acc = b0; acc += b1; ...; then / float(n) for mean.
float reference(const std::vector<std::vector<float>>& inputs, std::size_t i, comm::reduce_op op) {
  float acc = inputs[0][i];
  for (std::size_t r = 1; r < inputs.size(); ++r) acc += inputs[r][i];
  if (op == comm::reduce_op::mean) acc = acc / static_cast<float>(inputs.size());
  return acc;
}

bool same_bits(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// ---- checks written once for any communicator: each rank runs them with its own c ----------

template <comm::communicator C>
bool all_gather_ok(C& c, std::size_t bytes, unsigned salt) {
  const auto send = bytes_of_rank(c.rank(), bytes, salt);
  std::vector<unsigned char> recv(bytes * static_cast<std::size_t>(c.size()), 0xee);
  c.all_gather(send.data(), recv.data(), bytes).wait();
  for (int r = 0; r < c.size(); ++r) {
    const auto expect = bytes_of_rank(r, bytes, salt);
    if (std::memcmp(recv.data() + static_cast<std::size_t>(r) * bytes, expect.data(), bytes) != 0)
      return false;
  }
  return true;
}

template <comm::communicator C>
bool reduce_scatter_ok(C& c, std::size_t count, comm::reduce_op op, unsigned salt) {
  const auto n = static_cast<std::size_t>(c.size());
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < c.size(); ++r) inputs.push_back(floats_of_rank(r, n * count, salt));
  std::vector<float> recv(count, -1.0f);
  c.reduce_scatter(inputs[static_cast<std::size_t>(c.rank())].data(), recv.data(), count, op)
      .wait();
  std::vector<float> expect(count);
  for (std::size_t i = 0; i < count; ++i)
    expect[i] = reference(inputs, static_cast<std::size_t>(c.rank()) * count + i, op);
  return same_bits(recv.data(), expect.data(), count);
}

template <comm::communicator C>
bool all_reduce_ok(C& c, std::size_t count, comm::reduce_op op, unsigned salt, bool in_place) {
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < c.size(); ++r) inputs.push_back(floats_of_rank(r, count, salt));
  std::vector<float> mine = inputs[static_cast<std::size_t>(c.rank())];
  std::vector<float> recv(count, -1.0f);
  float* out = in_place ? mine.data() : recv.data();
  c.all_reduce(mine.data(), out, count, op).wait();
  std::vector<float> expect(count);
  for (std::size_t i = 0; i < count; ++i) expect[i] = reference(inputs, i, op);
  return same_bits(out, expect.data(), count);
}

template <comm::communicator C>
bool broadcast_ok(C& c, std::size_t bytes, int root, unsigned salt) {
  std::vector<unsigned char> buf =
      c.rank() == root ? bytes_of_rank(root, bytes, salt) : std::vector<unsigned char>(bytes, 0);
  c.broadcast(buf.data(), bytes, root).wait();
  return buf == bytes_of_rank(root, bytes, salt);
}

/// Runs fn on every rank of an n-rank world and counts the ranks where it returned false.
template <class F>
int failures_on(int n, F fn, std::chrono::milliseconds timeout = 10s) {
  comm::thread_world world(n, timeout);
  std::atomic<int> bad{0};
  world.run([&](comm::threads& c) {
    if (!fn(c)) ++bad;
  });
  return bad.load();
}

const std::size_t byte_sizes[] = {1, 7, 4097, (std::size_t{1} << 20) + 3};
const std::size_t float_counts[] = {1, 7, 1000, (std::size_t{1} << 18) + 5};

}  // namespace

TEST_CASE("threads: all_gather is bitwise exact for 1-4 ranks and uneven sizes", "[comm]") {
  for (int n = 1; n <= 4; ++n)
    for (std::size_t bytes : byte_sizes) {
      INFO(n << " ranks, " << bytes << " bytes per rank");
      CHECK(failures_on(n, [&](comm::threads& c) { return all_gather_ok(c, bytes, 1); }) == 0);
    }
}

TEST_CASE("threads: reduce_scatter and all_reduce equal the rank-order reference bitwise",
          "[comm]") {
  for (int n = 1; n <= 4; ++n)
    for (std::size_t count : float_counts)
      for (auto op : {comm::reduce_op::sum, comm::reduce_op::mean}) {
        INFO(n << " ranks, " << count << " floats, " << comm::reduce_op_name(op));
        const auto all_ok = [&](comm::threads& c) {
          return reduce_scatter_ok(c, count, op, 2) && all_reduce_ok(c, count, op, 3, false) &&
                 all_reduce_ok(c, count, op, 4, true);
        };
        CHECK(failures_on(n, all_ok) == 0);
      }
}

TEST_CASE("threads: the reference really depends on the order (the test can tell)", "[comm]") {
  // 1e8 - 1e8 + 1 is 1 in float when added left to right, 0 when the last two go first.
  std::vector<std::vector<float>> inputs = {{1e8f}, {-1e8f}, {1.0f}};
  CHECK(reference(inputs, 0, comm::reduce_op::sum) == 1.0f);
  volatile float b = -1e8f, c = 1.0f;  // volatile: computed at run time, in float
  CHECK(1e8f + (b + c) == 0.0f);
  comm::thread_world world(3);
  std::vector<float> results(3, -1.0f);
  world.run([&](comm::threads& c) {
    float mine = inputs[static_cast<std::size_t>(c.rank())][0];
    c.all_reduce(&mine, &results[static_cast<std::size_t>(c.rank())], 1, comm::reduce_op::sum)
        .wait();
  });
  CHECK(results == std::vector<float>{1.0f, 1.0f, 1.0f});
}

TEST_CASE("threads: in-place all_gather and reduce_scatter", "[comm]") {
  const std::size_t count = 4099;
  CHECK(failures_on(3, [&](comm::threads& c) {
          const auto rank = static_cast<std::size_t>(c.rank());
          // all_gather with the shard already in its place inside the full buffer
          std::vector<float> full(3 * count, 0.0f);
          const auto mine = floats_of_rank(c.rank(), count, 5);
          std::memcpy(full.data() + rank * count, mine.data(), count * sizeof(float));
          c.all_gather(full.data() + rank * count, full.data(), count * sizeof(float)).wait();
          bool ok = true;
          for (int r = 0; r < 3; ++r)
            ok = ok && same_bits(full.data() + static_cast<std::size_t>(r) * count,
                                 floats_of_rank(r, count, 5).data(), count);
          // reduce_scatter whose result lands on this rank's own block
          std::vector<std::vector<float>> inputs;
          for (int r = 0; r < 3; ++r) inputs.push_back(floats_of_rank(r, 3 * count, 6));
          std::vector<float> buf = inputs[rank];
          float* out = buf.data() + rank * count;
          c.reduce_scatter(buf.data(), out, count, comm::reduce_op::sum).wait();
          for (std::size_t i = 0; i < count && ok; ++i) {
            const float e = reference(inputs, rank * count + i, comm::reduce_op::sum);
            ok = std::memcmp(&out[i], &e, sizeof e) == 0;
          }
          return ok;
        }) == 0);
}

TEST_CASE("threads: broadcast from every root, and barrier", "[comm]") {
  for (int n = 1; n <= 4; ++n)
    for (int root = 0; root < n; ++root)
      for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, (std::size_t{1} << 20) + 3}) {
        INFO(n << " ranks, root " << root << ", " << bytes << " bytes");
        CHECK(failures_on(n, [&](comm::threads& c) { return broadcast_ok(c, bytes, root, 7); }) ==
              0);
      }

  // Nobody leaves a barrier before everybody has entered it.
  std::atomic<int> entered{0};
  CHECK(failures_on(4, [&](comm::threads& c) {
          bool ok = true;
          for (int round = 1; round <= 20; ++round) {
            ++entered;
            c.barrier().wait();
            ok = ok && entered.load() >= 4 * round;
            c.barrier().wait();  // nobody enters the next round before everybody checked
          }
          return ok;
        }) == 0);
}

TEST_CASE("solo: the same API and results as a one-rank world", "[comm]") {
  comm::solo c;
  STATIC_REQUIRE(comm::communicator<comm::solo>);
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  CHECK(c.timeout() == comm::default_timeout);
  for (std::size_t bytes : byte_sizes) CHECK(all_gather_ok(c, bytes, 8));
  for (std::size_t count : float_counts)
    for (auto op : {comm::reduce_op::sum, comm::reduce_op::mean}) {
      CHECK(reduce_scatter_ok(c, count, op, 9));
      CHECK(all_reduce_ok(c, count, op, 10, false));
      CHECK(all_reduce_ok(c, count, op, 11, true));
    }
  CHECK(broadcast_ok(c, 4097, 0, 12));
  CHECK_THROWS_AS(c.broadcast(nullptr, 0, 1), config_error);
  CHECK(c.barrier().ready());

  c.abort("out of patience");
  try {
    c.barrier();
    FAIL("a collective after abort did not throw");
  } catch (const comm_error& e) {
    CHECK(contains(e.what(), "rank 0"));
    CHECK(contains(e.what(), "out of patience"));
  }
}

TEST_CASE("threads: ranks may wait in different orders, or only poll ready()", "[comm]") {
  const std::size_t count = 5000;
  CHECK(failures_on(3, [&](comm::threads& c) {
          const auto n = static_cast<std::size_t>(c.size());
          const auto gather_in = floats_of_rank(c.rank(), count, 13);
          std::vector<float> gathered(n * count);
          std::vector<std::vector<float>> inputs;
          for (int r = 0; r < c.size(); ++r) inputs.push_back(floats_of_rank(r, count, 14));
          std::vector<float> reduced(count);

          comm::request a = c.all_gather(gather_in.data(), gathered.data(), count * sizeof(float));
          comm::request b = c.all_reduce(inputs[static_cast<std::size_t>(c.rank())].data(),
                                         reduced.data(), count, comm::reduce_op::mean);
          comm::request d = c.barrier();
          if (c.rank() == 0) {
            a.wait(), b.wait(), d.wait();
          } else if (c.rank() == 1) {
            d.wait(), b.wait(), a.wait();
          } else {
            while (!(a.ready() && b.ready() && d.ready())) std::this_thread::yield();
          }
          bool ok = true;
          for (int r = 0; r < c.size(); ++r)
            ok = ok && same_bits(gathered.data() + static_cast<std::size_t>(r) * count,
                                 floats_of_rank(r, count, 13).data(), count);
          for (std::size_t i = 0; i < count && ok; ++i) {
            const float e = reference(inputs, i, comm::reduce_op::mean);
            ok = std::memcmp(&reduced[i], &e, sizeof e) == 0;
          }
          return ok;
        }) == 0);
}

TEST_CASE("threads: ranks driven by threads of the caller's own", "[comm]") {
  comm::thread_world world(2);
  STATIC_REQUIRE(comm::communicator<comm::threads>);
  CHECK_THROWS_AS(world.communicator(2), config_error);
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

TEST_CASE("threads: bad arguments are config errors", "[comm]") {
  CHECK_THROWS_AS(comm::thread_world(0), config_error);
  comm::thread_world world(2);
  char b = 0;
  CHECK_THROWS_AS(world.communicator(0).broadcast(&b, 1, 2), config_error);
  CHECK_THROWS_AS(world.communicator(0).broadcast(&b, 1, -1), config_error);
  CHECK_FALSE(world.failed());
}
