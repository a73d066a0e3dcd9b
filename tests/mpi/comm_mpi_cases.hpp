// tests/mpi/comm_mpi_cases.hpp — the comm::mpi test cases, shared by test_comm_mpi.cpp (2 ranks)
// and test_comm_mpi4.cpp (4 ranks).
//
// Every rank runs every case (MPI collectives need all ranks, in the same order). Inputs are
// seeded by rank, so each rank computes the rank-order reference for itself; results must equal
// it bitwise, and equal what the in-process communicator (comm::threads) computes from the same
// inputs. The failure cases end with every rank still able to go on and call MPI_Finalize.
#pragma once

#include "catch.hpp"

#include <strata/comm/mpi.hpp>
#include <strata/comm/threads.hpp>

#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace comm_mpi_cases {

using namespace strata;
using namespace std::chrono_literals;

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

inline std::vector<unsigned char> bytes_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(1000u * salt + static_cast<unsigned>(rank));
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

/// Magnitudes from 1e-8 to 1e8, both signs: the order of addition shows in the bits.
inline std::vector<float> floats_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(7919u * salt + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-8, 8);
  std::vector<float> v(n);
  for (auto& x : v) x = mantissa(rng) * std::pow(10.0f, static_cast<float>(exponent(rng)));
  return v;
}

/// acc = b0; acc += b1; ...; then / float(n) for mean.
inline std::vector<float> reference(int ranks, std::size_t count, std::size_t offset,
                                    std::size_t stride, unsigned salt, comm::reduce_op op) {
  std::vector<std::vector<float>> in;
  for (int r = 0; r < ranks; ++r) in.push_back(floats_of_rank(r, stride, salt));
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    float acc = in[0][offset + i];
    for (int r = 1; r < ranks; ++r) acc += in[static_cast<std::size_t>(r)][offset + i];
    if (op == comm::reduce_op::mean) acc = acc / static_cast<float>(ranks);
    out[i] = acc;
  }
  return out;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

const std::size_t byte_sizes[] = {1, 7, 4097, (std::size_t{1} << 20) + 3};
const std::size_t float_counts[] = {1, 3, 7, 1000, (std::size_t{1} << 18) + 5};

TEST_CASE("mpi: all_gather is bitwise exact for uneven sizes", "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  STATIC_REQUIRE(comm::communicator<comm::mpi>);
  const auto n = static_cast<std::size_t>(c.size());
  for (std::size_t bytes : byte_sizes) {
    INFO(bytes << " bytes per rank");
    const auto send = bytes_of_rank(c.rank(), bytes, 1);
    std::vector<unsigned char> recv(n * bytes, 0xee);
    c.all_gather(send.data(), recv.data(), bytes).wait();
    for (int r = 0; r < c.size(); ++r)
      CHECK(std::memcmp(recv.data() + static_cast<std::size_t>(r) * bytes,
                        bytes_of_rank(r, bytes, 1).data(), bytes) == 0);
  }
}

TEST_CASE("mpi: reduce_scatter and all_reduce equal the rank-order reference bitwise",
          "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  const int n = c.size();
  const auto me = static_cast<std::size_t>(c.rank());
  for (std::size_t count : float_counts)
    for (auto op : {comm::reduce_op::sum, comm::reduce_op::mean}) {
      INFO(count << " floats, " << comm::reduce_op_name(op));
      const std::size_t total = static_cast<std::size_t>(n) * count;
      const auto rs_in = floats_of_rank(c.rank(), total, 2);
      std::vector<float> rs_out(count, -1.0f);
      c.reduce_scatter(rs_in.data(), rs_out.data(), count, op).wait();
      CHECK(same_bits(rs_out, reference(n, count, me * count, total, 2, op)));

      const auto ar_in = floats_of_rank(c.rank(), count, 3);
      std::vector<float> ar_out(count, -1.0f);
      c.all_reduce(ar_in.data(), ar_out.data(), count, op).wait();
      const auto expect = reference(n, count, 0, count, 3, op);
      CHECK(same_bits(ar_out, expect));

      std::vector<float> in_place = ar_in;
      c.all_reduce(in_place.data(), in_place.data(), count, op).wait();
      CHECK(same_bits(in_place, expect));
    }
}

TEST_CASE("mpi: results equal the in-process communicator's bitwise", "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  const int n = c.size();
  const std::size_t count = 100'003;
  const auto mine = floats_of_rank(c.rank(), count, 4);
  std::vector<float> over_mpi(count);
  c.all_reduce(mine.data(), over_mpi.data(), count, comm::reduce_op::mean).wait();

  // The same n ranks again, as threads of this process.
  std::vector<std::vector<float>> over_threads(static_cast<std::size_t>(n),
                                               std::vector<float>(count));
  comm::thread_world world(n, 10s);
  world.run([&](comm::threads& t) {
    const auto in = floats_of_rank(t.rank(), count, 4);
    t.all_reduce(in.data(), over_threads[static_cast<std::size_t>(t.rank())].data(), count,
                 comm::reduce_op::mean)
        .wait();
  });
  CHECK(same_bits(over_mpi, over_threads[static_cast<std::size_t>(c.rank())]));
}

TEST_CASE("mpi: broadcast from every root, and barrier", "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  for (int root = 0; root < c.size(); ++root)
    for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, (std::size_t{1} << 20) + 3}) {
      INFO("root " << root << ", " << bytes << " bytes");
      auto buf = c.rank() == root ? bytes_of_rank(root, bytes, 5)
                                  : std::vector<unsigned char>(bytes, 0);
      c.broadcast(buf.data(), bytes, root).wait();
      CHECK(buf == bytes_of_rank(root, bytes, 5));
    }
  CHECK_THROWS_AS(c.broadcast(nullptr, 0, c.size()), config_error);

  // Barriers interleaved with all_gathers: each round sees every rank in that same round.
  for (int round = 0; round < 10; ++round) {
    c.barrier().wait();
    int mine = round * 100 + c.rank(), all[64];
    c.all_gather(&mine, all, sizeof(int)).wait();
    for (int r = 0; r < c.size(); ++r) CHECK(all[r] == round * 100 + r);
  }
}

TEST_CASE("mpi: several collectives in flight, waited in different orders or polled",
          "[comm][mpi]") {
  comm::mpi c(MPI_COMM_WORLD, 10s);
  const int n = c.size();
  const std::size_t count = 50'001;
  for (int round = 0; round < 3; ++round) {
    const auto a_in = floats_of_rank(c.rank(), count, 10 + round);
    const auto b_in = floats_of_rank(c.rank(), count, 20 + round);
    const auto g_in = bytes_of_rank(c.rank(), 1001, 30 + round);
    std::vector<float> a_out(count), b_out(count);
    std::vector<unsigned char> g_out(static_cast<std::size_t>(n) * 1001);
    comm::request a = c.all_reduce(a_in.data(), a_out.data(), count, comm::reduce_op::sum);
    comm::request b = c.all_reduce(b_in.data(), b_out.data(), count, comm::reduce_op::mean);
    comm::request g = c.all_gather(g_in.data(), g_out.data(), 1001);
    comm::request d = c.barrier();
    if (c.rank() % 3 == 0) {
      d.wait(), g.wait(), b.wait(), a.wait();
    } else if (c.rank() % 3 == 1) {
      a.wait(), b.wait(), g.wait(), d.wait();
    } else {
      while (!(a.ready() && b.ready() && g.ready() && d.ready())) {
      }
      a.wait(), b.wait(), g.wait(), d.wait();
    }
    CHECK(same_bits(a_out, reference(n, count, 0, count, 10 + round, comm::reduce_op::sum)));
    CHECK(same_bits(b_out, reference(n, count, 0, count, 20 + round, comm::reduce_op::mean)));
    for (int r = 0; r < n; ++r)
      CHECK(std::memcmp(g_out.data() + static_cast<std::size_t>(r) * 1001,
                        bytes_of_rank(r, 1001, 30 + round).data(), 1001) == 0);
  }

  // A dropped request: its collective finishes in the background, and the next one works.
  {
    std::vector<float> x(10'000, 1.0f), y(10'000);
    comm::request dropped = c.all_reduce(x.data(), y.data(), x.size(), comm::reduce_op::sum);
  }
  std::vector<float> x(7, 2.0f), y(7);
  c.all_reduce(x.data(), y.data(), 7, comm::reduce_op::sum).wait();
  CHECK(y == std::vector<float>(7, 2.0f * static_cast<float>(n)));
}

TEST_CASE("mpi: abort on rank 1 mid-step fails every other rank's collective, naming it",
          "[comm][mpi]") {
  {
    comm::mpi c(MPI_COMM_WORLD, 5s);
    std::vector<float> x(1000, 1.0f), y(1000);
    for (int step = 0; step < 5; ++step) {
      if (step == 3 && c.rank() == 1) {
        c.abort("loss is NaN in step 3");
        CHECK_THROWS_AS(c.barrier(), comm_error);  // the aborted rank's own collectives fail too
        break;
      }
      try {
        c.all_reduce(x.data(), y.data(), x.size(), comm::reduce_op::sum).wait();
        CHECK(step < 3);
      } catch (const comm_error& e) {
        INFO(e.what());
        // Rank 1 aborts after its step 2 completed, which needs every rank to have joined step
        // 2; a rank still finishing step 2 may hear of the abort there (its pending collective).
        CHECK(step >= 2);
        CHECK(contains(e.what(), "rank 1 failed: loss is NaN in step 3"));
        CHECK(contains(e.what(), "all_reduce #" + std::to_string(step)));
        CHECK_FALSE(contains(e.what(), "waited"));  // heard of it, not timed out
        // Failed stays failed.
        CHECK_THROWS_AS(c.barrier(), comm_error);
        break;
      }
    }
  }  // every rank destroys its communicator: no hang

  // The job goes on: a new communicator over the same ranks works.
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
