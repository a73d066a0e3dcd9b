// Tests for strata/exec/thread_pool.hpp: parallel_for covers [0, n) exactly once with chunks
// that obey min_chunk, max_chunks and align; chunks really run at the same time; exceptions
// reach the caller and leave the pool usable; many callers at once and nested calls finish.
// Worker threads only record what they saw; the assertions run on the test thread.
#include "catch.hpp"

#include <strata/exec/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using strata::parallel_for_options;
using strata::thread_pool;

struct chunk {
  std::size_t begin, end;
};

/// Runs parallel_for and returns its chunks, sorted, with a per-index visit count.
std::vector<chunk> chunks_of(thread_pool& pool, std::size_t n, std::size_t min_chunk,
                             parallel_for_options opt, std::vector<int>& visits) {
  std::mutex mutex;
  std::vector<chunk> out;
  visits.assign(n, 0);
  pool.parallel_for(n, min_chunk, opt, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) ++visits[i];  // chunks are disjoint: no race
    std::lock_guard lock(mutex);
    out.push_back({b, e});
  });
  std::sort(out.begin(), out.end(),
            [](const chunk& a, const chunk& b) { return a.begin < b.begin; });
  return out;
}

TEST_CASE("parallel_for covers [0, n) once, in chunks that obey its options") {
  thread_pool pool(4);
  REQUIRE(pool.concurrency() == 4);
  const std::size_t sizes[] = {0, 1, 7, 31, 32, 33, 1000, 4096, 100003};
  const std::size_t min_chunks[] = {1, 16, 1000};
  const parallel_for_options opts[] = {{0, 1}, {3, 1}, {0, 32}, {7, 16}, {64, 1}, {2, 1024}};
  for (std::size_t n : sizes)
    for (std::size_t min_chunk : min_chunks)
      for (const auto& opt : opts) {
        std::vector<int> visits;
        const auto chunks = chunks_of(pool, n, min_chunk, opt, visits);
        INFO("n " << n << ", min_chunk " << min_chunk << ", max_chunks " << opt.max_chunks
                  << ", align " << opt.align << ": " << chunks.size() << " chunks");
        CHECK(std::all_of(visits.begin(), visits.end(), [](int c) { return c == 1; }));
        if (n == 0) {
          CHECK(chunks.empty());
          continue;
        }
        const std::size_t max_chunks = opt.max_chunks ? opt.max_chunks : pool.concurrency();
        CHECK(chunks.size() >= 1);
        CHECK(chunks.size() <= max_chunks);
        for (std::size_t c = 0; c < chunks.size(); ++c) {
          CHECK(chunks[c].begin < chunks[c].end);
          if (c > 0) CHECK(chunks[c].begin == chunks[c - 1].end);
          if (c > 0) CHECK(chunks[c].begin % opt.align == 0);
          if (chunks.size() > 1) CHECK(chunks[c].end - chunks[c].begin >= min_chunk);
        }
        // It does split when it may: room for two chunks of min_chunk rounded up to align.
        const std::size_t unit = (min_chunk + opt.align - 1) / opt.align * opt.align;
        if (n >= 2 * unit && max_chunks > 1) CHECK(chunks.size() > 1);
      }
}

TEST_CASE("one chunk runs inline on the calling thread") {
  thread_pool pool(3);
  std::thread::id ran_on;
  pool.parallel_for(100, 100,
                    [&](std::size_t, std::size_t) { ran_on = std::this_thread::get_id(); });
  CHECK(ran_on == std::this_thread::get_id());
  thread_pool solo(1);
  CHECK(solo.concurrency() == 1);
  std::vector<int> visits;
  const auto chunks = chunks_of(solo, 1000, 1, {}, visits);
  CHECK(chunks.size() == 1);
}

TEST_CASE("chunks run at the same time on the workers and the caller") {
  // Each chunk waits until all four have started: this only finishes (before the deadline)
  // if four threads run chunks at once.
  thread_pool pool(4);
  std::atomic<int> arrived{0};
  std::mutex mutex;
  std::vector<std::thread::id> threads;
  bool all_met = true;
  pool.parallel_for(4, 1, [&](std::size_t, std::size_t) {
    arrived.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (arrived.load() < 4 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    std::lock_guard lock(mutex);
    if (arrived.load() < 4) all_met = false;
    threads.push_back(std::this_thread::get_id());
  });
  CHECK(all_met);
  std::sort(threads.begin(), threads.end());
  CHECK(std::unique(threads.begin(), threads.end()) == threads.end());
  CHECK(std::find(threads.begin(), threads.end(), std::this_thread::get_id()) != threads.end());
}

TEST_CASE("an exception in a chunk reaches the caller, and the pool stays usable") {
  thread_pool pool(3);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> ran{0};
    std::string caught;
    try {
      pool.parallel_for(64, 1, parallel_for_options{16, 1}, [&](std::size_t b, std::size_t) {
        ran.fetch_add(1);
        if (b == 12) throw std::runtime_error("chunk at 12 failed");
      });
    } catch (const std::runtime_error& e) {
      caught = e.what();
    }
    INFO("round " << round << ": " << ran.load() << " chunks ran");
    CHECK(caught == "chunk at 12 failed");
    CHECK(ran.load() >= 1);
    CHECK(ran.load() <= 16);
  }
  std::vector<int> visits;
  const auto chunks = chunks_of(pool, 1000, 1, {}, visits);
  CHECK(chunks.size() == 3);
  CHECK(std::all_of(visits.begin(), visits.end(), [](int c) { return c == 1; }));
}

TEST_CASE("many callers at once, and parallel_for inside parallel_for, all finish") {
  thread_pool pool(3);
  constexpr int callers = 4, rounds = 200;
  std::vector<long long> sums(callers, 0);
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c)
    threads.emplace_back([&, c] {
      for (int r = 0; r < rounds; ++r) {
        std::atomic<long long> sum{0};
        pool.parallel_for(1000, 10, [&](std::size_t b, std::size_t e) {
          long long s = 0;
          for (std::size_t i = b; i < e; ++i) s += static_cast<long long>(i);
          sum.fetch_add(s);
        });
        sums[static_cast<std::size_t>(c)] += sum.load();
      }
    });
  for (auto& t : threads) t.join();
  for (int c = 0; c < callers; ++c) CHECK(sums[static_cast<std::size_t>(c)] == rounds * 499500LL);

  // Nested: every outer chunk runs an inner parallel_for on the same pool; the inner callers
  // work through their own chunks, so this cannot deadlock even with every worker busy.
  std::atomic<long long> total{0};
  pool.parallel_for(8, 1, parallel_for_options{8, 1}, [&](std::size_t b, std::size_t e) {
    for (std::size_t o = b; o < e; ++o)
      pool.parallel_for(100, 1, [&](std::size_t ib, std::size_t ie) {
        total.fetch_add(static_cast<long long>(ie - ib));
      });
  });
  CHECK(total.load() == 800);
}

TEST_CASE("the default pool has the hardware's concurrency; pools start and stop cleanly") {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  CHECK(strata::default_thread_pool().concurrency() == hw);
  CHECK(&strata::default_thread_pool() == &strata::default_thread_pool());
  for (int i = 0; i < 50; ++i) {
    thread_pool pool(4);
    if (i % 2) {
      std::atomic<int> n{0};
      pool.parallel_for(4, 1, [&](std::size_t b, std::size_t e) { n.fetch_add(int(e - b)); });
      CHECK(n.load() == 4);
    }
  }
}

}  // namespace
