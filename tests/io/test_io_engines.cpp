// IO floor below the store: CRC-32C, io::file, the posix and io_uring engines, make_engine's
// choice (config and STRATA_IO_ENGINE), engine_config's one validation and queue_depth's one
// meaning, and io::faulty's rules.
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/io/crc32c.hpp>
#include <strata/io/faulty.hpp>
#include <strata/io/file.hpp>
#include <strata/io/make_engine.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

using namespace strata;
using namespace io_test;

namespace {

std::string message_of(const std::exception& e) { return e.what(); }



// Page-aligned bytes: what O_DIRECT wants of memory.
struct aligned_bytes {
  std::unique_ptr<char, decltype(&std::free)> p{nullptr, &std::free};
  std::size_t n = 0;
  explicit aligned_bytes(std::size_t bytes) : n(bytes) {
    // Throws rather than REQUIRE: worker threads make these too, and Catch2's assertions
    // belong to the test's thread.
    void* q = nullptr;
    if (::posix_memalign(&q, 4096, bytes ? bytes : 1) != 0)
      throw std::runtime_error("aligned_bytes: no memory for " + std::to_string(bytes) + " bytes");
    p.reset(static_cast<char*>(q));
  }
  char* data() const { return p.get(); }
};

void fill_random(char* p, std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<char>(rng() & 0xFF);
}

std::unique_ptr<io::engine> make(const std::string& kind, io::engine_config c = {}) {
  env_guard env("STRATA_IO_ENGINE", nullptr);
  c.kind = kind;
  std::string notice;
  auto e = io::make_engine(c, notice);
  REQUIRE(std::string(e->name()) == kind);
  return e;
}

// A buffered (no O_DIRECT) file: any size, offset and address goes.
io::file buffered_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  return io::file(fd, path, false);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CRC-32C
// ---------------------------------------------------------------------------------------------

TEST_CASE("crc32c matches the published check value and RFC 3720's test patterns", "[io][crc]") {
  auto both = [](const void* p, std::size_t n) {
    const std::uint32_t a = io::crc32c(p, n), b = io::crc32c_portable(p, n);
    CHECK(a == b);
    return a;
  };
  CHECK(both("", 0) == 0u);
  CHECK(both("123456789", 9) == 0xE3069283u);

  unsigned char buf[48];
  std::memset(buf, 0, 32);
  CHECK(both(buf, 32) == 0x8A9136AAu);  // 32 bytes of zeros
  std::memset(buf, 0xFF, 32);
  CHECK(both(buf, 32) == 0x62A8AB43u);  // 32 bytes of ones
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(i);
  CHECK(both(buf, 32) == 0x46DD794Eu);  // incrementing 00..1f
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(31 - i);
  CHECK(both(buf, 32) == 0x113FDB5Cu);  // decrementing 1f..00
  const unsigned char iscsi_read_pdu[48] = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  CHECK(both(iscsi_read_pdu, 48) == 0xD9963A56u);
}

TEST_CASE("crc32c: the hardware path equals the table for every length and alignment",
          "[io][crc]") {
  if (!io::crc32c_hardware()) WARN("no SSE4.2 CRC32 here: only the table path is exercised");
  std::vector<char> buf(70000 + 64);
  fill_random(buf.data(), buf.size(), 42);
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (std::size_t n : {511u, 512u, 513u, 1000u, 4095u, 4096u, 4097u, 65535u, 65536u, 70000u})
    lengths.push_back(n);
  for (std::size_t align = 0; align < 16; ++align)
    for (std::size_t n : lengths) {
      const char* p = buf.data() + align;
      const std::uint32_t hw = io::crc32c(p, n, 0x1234u * static_cast<std::uint32_t>(align));
      const std::uint32_t sw = io::crc32c_portable(p, n, 0x1234u * static_cast<std::uint32_t>(align));
      if (hw != sw) {
        INFO("length " << n << ", misalignment " << align);
        CHECK(hw == sw);
      }
    }
}

TEST_CASE("crc32c chains: crc(b, crc(a)) == crc(a+b)", "[io][crc]") {
  std::vector<char> buf(100000);
  fill_random(buf.data(), buf.size(), 7);
  const std::uint32_t whole = io::crc32c(buf.data(), buf.size());
  std::mt19937 rng(3);
  for (int i = 0; i < 50; ++i) {
    const std::size_t cut = rng() % buf.size();
    const std::uint32_t a = io::crc32c(buf.data(), cut);
    CHECK(io::crc32c(buf.data() + cut, buf.size() - cut, a) == whole);
    CHECK(io::crc32c_portable(buf.data() + cut, buf.size() - cut,
                              io::crc32c_portable(buf.data(), cut)) == whole);
  }
  // Three pieces, one of them empty.
  const std::uint32_t s1 = io::crc32c(buf.data(), 10);
  const std::uint32_t s2 = io::crc32c(buf.data() + 10, 0, s1);
  CHECK(io::crc32c(buf.data() + 10, buf.size() - 10, s2) == whole);
}

// ---------------------------------------------------------------------------------------------
// io::file
// ---------------------------------------------------------------------------------------------

TEST_CASE("io::file::open_for_arena creates a new 0600 file with O_DIRECT where it can",
          "[io][file]") {
  scratch_dir dir;
  std::string notice;
  const std::string path = dir.file("arena");
  {
    io::file f = io::file::open_for_arena(path, notice);
    CHECK(f);
    CHECK(f.path() == path);
    CHECK(is_pow2(f.alignment()));
    CHECK(f.alignment() >= 512);
    if (f.direct()) {
      CHECK(notice.empty());
      CHECK((::fcntl(f.fd(), F_GETFL) & O_DIRECT) != 0);
    } else {
      CHECK(notice.find("O_DIRECT") != std::string::npos);
    }
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK((::fcntl(f.fd(), F_GETFD) & FD_CLOEXEC) != 0);

    // O_EXCL: never an existing file.
    std::string n2;
    try {
      (void)io::file::open_for_arena(path, n2);
      FAIL("opened an existing file");
    } catch (const io_error& e) {
      CHECK(message_of(e).find(path) != std::string::npos);
      CHECK(message_of(e).find("EEXIST") != std::string::npos);
    }
  }
  // O_NOFOLLOW: never through a symbolic link.
  const std::string link = dir.file("link");
  REQUIRE(::symlink(dir.file("target").c_str(), link.c_str()) == 0);
  CHECK_THROWS_AS(io::file::open_for_arena(link, notice), io_error);
  CHECK(!std::filesystem::exists(dir.file("target")));
}

// ---------------------------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------------------------

TEST_CASE("engines round-trip aligned transfers on an O_DIRECT file, split into blocks",
          "[io][engine]") {
  scratch_dir dir;
  for (const std::string& kind : engine_kinds()) {
    INFO("engine " << kind);
    io::engine_config c;
    c.block_bytes = 256 << 10;  // 8 MiB in 32 pieces, 4 in flight: the splitting is exercised
    c.queue_depth = 4;
    c.posix_threads = 3;
    auto e = make(kind, c);
    std::string notice;
    io::file f = io::file::open_for_arena(dir.file("direct-" + kind), notice);
    const std::size_t a = f.alignment();
    const std::size_t n = (8u << 20) + 3 * a;
    aligned_bytes src(n), dst(n);
    fill_random(src.data(), n, 11);
    e->write(f, src.data(), n, a);
    std::memset(dst.data(), 0, n);
    e->read(f, dst.data(), n, a);
    CHECK(std::memcmp(src.data(), dst.data(), n) == 0);
    // A piece from the middle.
    std::memset(dst.data(), 0, n);
    e->read(f, dst.data(), 5 * a, a + (1u << 20));
    CHECK(std::memcmp(src.data() + (1u << 20), dst.data(), 5 * a) == 0);
    e->write(f, src.data(), 0, 0);  // nothing to do, nothing done
  }
}

TEST_CASE("engines move any size at any offset and address on a buffered file",
          "[io][engine]") {
  scratch_dir dir;
  for (const std::string& kind : engine_kinds()) {
    INFO("engine " << kind);
    io::engine_config c;
    c.block_bytes = 64 << 10;
    c.queue_depth = 3;
    auto e = make(kind, c);
    io::file f = buffered_file(dir.file("buffered-" + kind));
    for (std::size_t n : {std::size_t{1}, std::size_t{4095}, std::size_t{4097},
                          std::size_t{(1u << 20) - 1}, std::size_t{(1u << 20) + 1},
                          std::size_t{3 * (64u << 10) + 17}}) {
      INFO("bytes " << n);
      std::vector<char> src(n + 7), dst(n + 5);
      fill_random(src.data(), src.size(), static_cast<std::uint32_t>(n));
      const std::uint64_t off = 12345 + n;
      e->write(f, src.data() + 7, n, off);
      e->read(f, dst.data() + 5, n, off);
      CHECK(std::memcmp(src.data() + 7, dst.data() + 5, n) == 0);
    }
  }
}

TEST_CASE("engine errors name the file, offset, size and reason", "[io][engine]") {
  scratch_dir dir;
  for (const std::string& kind : engine_kinds()) {
    INFO("engine " << kind);
    auto e = make(kind);
    const std::string path = dir.file("short-" + kind);
    io::file f = buffered_file(path);
    std::vector<char> buf(10000, 'x');
    e->write(f, buf.data(), 1000, 0);
    // Reading past the end: a short read that cannot be continued.
    try {
      e->read(f, buf.data(), 4000, 0);
      FAIL("read past the end of file succeeded");
    } catch (const io_error& err) {
      const std::string m = message_of(err);
      CHECK(m.find(path) != std::string::npos);
      CHECK(m.find("end of file") != std::string::npos);
      CHECK(m.find("offset 0") != std::string::npos);
    }
    // A descriptor that is not open.
    io::file closed(-1, dir.file("not-open"), false);
    try {
      e->read(closed, buf.data(), 4096, 12288);
      FAIL("read from a closed descriptor succeeded");
    } catch (const io_error& err) {
      const std::string m = message_of(err);
      CHECK(m.find(dir.file("not-open")) != std::string::npos);
      CHECK(m.find("offset 12288") != std::string::npos);
      CHECK(m.find("4096 bytes") != std::string::npos);
      CHECK(m.find("EBADF") != std::string::npos);
    }
  }
}

TEST_CASE("engines take concurrent calls from two threads", "[io][engine]") {
  scratch_dir dir;
  for (const std::string& kind : engine_kinds()) {
    INFO("engine " << kind);
    io::engine_config c;
    c.block_bytes = 128 << 10;
    c.rings = 1;  // io_uring: the two callers share one ring and take turns
    auto e = make(kind, c);
    std::string notice;
    io::file f = io::file::open_for_arena(dir.file("concurrent-" + kind), notice);
    const std::size_t n = 1u << 20;
    std::vector<std::string> failures(2);
    // The workers only record what went wrong; the test thread asserts after the joins.
    auto worker = [&](int t) {
      try {
        aligned_bytes src(n), dst(n);
        for (int i = 0; i < 20; ++i) {
          fill_random(src.data(), n, static_cast<std::uint32_t>(t * 1000 + i));
          const std::uint64_t off = static_cast<std::uint64_t>(t) * n;
          e->write(f, src.data(), n, off);
          e->read(f, dst.data(), n, off);
          if (std::memcmp(src.data(), dst.data(), n) != 0) {
            failures[t] = "data mismatch in round " + std::to_string(i);
            return;
          }
        }
      } catch (const std::exception& ex) {
        failures[t] = ex.what();
      }
    };
    std::thread t0(worker, 0), t1(worker, 1);
    t0.join();
    t1.join();
    CHECK(failures[0] == "");
    CHECK(failures[1] == "");
  }
}

#if STRATA_HAVE_URING
TEST_CASE("io_uring: registered buffers and SQPOLL keep IO correct", "[io][engine][uring]") {
  const auto kinds = engine_kinds();
  if (kinds.size() < 2) return;  // io_uring unavailable here (warned above)
  scratch_dir dir;
  std::string notice;
  io::file f = io::file::open_for_arena(dir.file("fixed"), notice);

  io::engine_config c;
  c.block_bytes = 64 << 10;
  io::uring_engine e(c);
  const std::size_t n = 1u << 20;
  aligned_bytes pool(2 * n), plain(n);
  iovec iov{pool.data(), 2 * n};
  const bool registered = e.register_buffers({&iov, 1});
  CHECK(e.buffers_registered() == registered);
  // Inside the registered buffer (fixed requests), at an offset into it, and outside it.
  fill_random(pool.data(), 2 * n, 5);
  e.write(f, pool.data() + n, n, 0);
  std::memset(plain.data(), 0, n);
  e.read(f, plain.data(), n, 0);
  CHECK(std::memcmp(plain.data(), pool.data() + n, n) == 0);
  std::memset(pool.data(), 0, n);
  e.read(f, pool.data(), n, 0);
  CHECK(std::memcmp(plain.data(), pool.data(), n) == 0);
  e.unregister_buffers();
  CHECK(!e.buffers_registered());
  std::memset(pool.data(), 0, n);
  e.read(f, pool.data(), n, 0);
  CHECK(std::memcmp(plain.data(), pool.data(), n) == 0);
  // A buffer too large for the locked-memory limit is refused quietly; IO still works.
  aligned_bytes big(64u << 20);
  iovec big_iov{big.data(), 64u << 20};
  (void)e.register_buffers({&big_iov, 1});
  std::memset(big.data(), 0, n);
  e.read(f, big.data(), n, 0);
  CHECK(std::memcmp(plain.data(), big.data(), n) == 0);
  e.unregister_buffers();

  io::engine_config sq = c;
  sq.sqpoll = true;
  sq.rings = 1;
  io::uring_engine polled(sq);
  if (!polled.sqpoll()) WARN("SQPOLL refused: " << polled.notice());
  std::memset(pool.data(), 0, n);
  polled.read(f, pool.data(), n, 0);
  CHECK(std::memcmp(plain.data(), pool.data(), n) == 0);
}
#endif

// ---------------------------------------------------------------------------------------------
// make_engine
// ---------------------------------------------------------------------------------------------

TEST_CASE("make_engine follows the config, and STRATA_IO_ENGINE overrides it", "[io][engine]") {
  std::string notice = "stale";
  io::engine_config c;
  {
    env_guard env("STRATA_IO_ENGINE", nullptr);
    c.kind = "posix";
    CHECK(std::string(io::make_engine(c, notice)->name()) == "posix");
    CHECK(notice.empty());

    c.kind = "fastest";
    try {
      (void)io::make_engine(c, notice);
      FAIL("unknown engine kind accepted");
    } catch (const config_error& e) {
      CHECK(message_of(e).find("fastest") != std::string::npos);
    }
    c.kind = "posix";
    c.block_bytes = 1000;
    CHECK_THROWS_AS(io::make_engine(c, notice), config_error);
    c.block_bytes = 1 << 20;
    c.queue_depth = 0;
    CHECK_THROWS_AS(io::make_engine(c, notice), config_error);
    c.queue_depth = 16;
  }
  {
    env_guard env("STRATA_IO_ENGINE", "posix");
    c.kind = "uring";  // the environment wins
    CHECK(std::string(io::make_engine(c, notice)->name()) == "posix");
  }
  {
    env_guard env("STRATA_IO_ENGINE", "bogus");
    c.kind = "posix";
    try {
      (void)io::make_engine(c, notice);
      FAIL("unknown STRATA_IO_ENGINE accepted");
    } catch (const config_error& e) {
      CHECK(message_of(e).find("STRATA_IO_ENGINE") != std::string::npos);
    }
  }
  const bool uring_works = engine_kinds().size() == 2;
  for (const char* how : {"config", "env"}) {
    INFO("uring asked for through " << how);
    std::optional<env_guard> env;
    if (std::string(how) == "env") {
      env.emplace("STRATA_IO_ENGINE", "uring");
      c.kind = "posix";
    } else {
      env.emplace("STRATA_IO_ENGINE", nullptr);
      c.kind = "uring";
    }
    if (uring_works) {
      CHECK(std::string(io::make_engine(c, notice)->name()) == "uring");
    } else {
      // Not compiled in, or refused by the kernel: asked for by name, that is an error.
      CHECK_THROWS_AS(io::make_engine(c, notice), config_error);
    }
  }
  {
    env_guard env("STRATA_IO_ENGINE", "auto");
    c.kind = "posix";
    auto e = io::make_engine(c, notice);
    if (uring_works) {
      CHECK(std::string(e->name()) == "uring");
    } else {
      CHECK(std::string(e->name()) == "posix");
      CHECK(notice.find("posix") != std::string::npos);  // and why
      if (!io::uring_compiled) CHECK(notice.find("liburing") != std::string::npos);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// engine_config: one validation, the same queue_depth in both engines
// ---------------------------------------------------------------------------------------------

namespace {

struct bad_field {
  const char* what;
  void (*spoil)(io::engine_config&);
  const char* field;  // as the message names it
  const char* value;  // as the message prints it
};

const bad_field bad_fields[] = {
    {"block_bytes 0", [](io::engine_config& c) { c.block_bytes = 0; }, "engine_config.block_bytes", "is 0"},
    {"block_bytes 1000", [](io::engine_config& c) { c.block_bytes = 1000; }, "engine_config.block_bytes", "is 1000"},
    {"block_bytes 2 GiB", [](io::engine_config& c) { c.block_bytes = std::size_t{2} << 30; },
     "engine_config.block_bytes", "is 2147483648"},
    {"queue_depth 0", [](io::engine_config& c) { c.queue_depth = 0; }, "engine_config.queue_depth", "is 0"},
    {"queue_depth 5000", [](io::engine_config& c) { c.queue_depth = 5000; }, "engine_config.queue_depth", "is 5000"},
    {"rings 0", [](io::engine_config& c) { c.rings = 0; }, "engine_config.rings", "is 0"},
    {"posix_threads 2000", [](io::engine_config& c) { c.posix_threads = 2000; },
     "engine_config.posix_threads", "is 2000"},
    {"kind", [](io::engine_config& c) { c.kind = "fastest"; }, "engine_config.kind", "is 'fastest'"},
};

// Runs `make` and returns the config_error's message ("" if it did not throw one).
template <class Make>
std::string refusal(Make&& make) {
  try {
    make();
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a bad engine_config is refused by every engine and make_engine, naming the field",
          "[io][engine]") {
  env_guard env("STRATA_IO_ENGINE", nullptr);
  for (const bad_field& b : bad_fields) {
    INFO(b.what);
    io::engine_config c;
    b.spoil(c);
    std::vector<std::pair<std::string, std::string>> refusals;
    refusals.emplace_back("posix_engine", refusal([&] { io::posix_engine e(c); }));
#if STRATA_HAVE_URING
    // Refused before any ring is set up, so this holds where io_uring itself is refused.
    refusals.emplace_back("uring_engine", refusal([&] { io::uring_engine e(c); }));
#endif
    std::string notice;
    refusals.emplace_back("make_engine", refusal([&] { (void)io::make_engine(c, notice); }));
    for (const auto& [who, m] : refusals) {
      INFO(who << ": " << m);
      CHECK(m.find(b.field) != std::string::npos);
      CHECK(m.find(b.value) != std::string::npos);
      CHECK(m.find("allowed") != std::string::npos);
    }
  }
  // The message says what is allowed, not only that the value is wrong.
  io::engine_config c;
  c.queue_depth = 0;
  CHECK(refusal([&] { io::posix_engine e(c); }).find("1 .. 4096") != std::string::npos);
  c = {};
  c.block_bytes = 1000;
  CHECK(refusal([&] { io::posix_engine e(c); }).find("multiple of 4096") != std::string::npos);
  // A kind set by STRATA_IO_ENGINE is named as such.
  env_guard bogus("STRATA_IO_ENGINE", "bogus");
  c = {};
  std::string notice;
  const std::string m = refusal([&] { (void)io::make_engine(c, notice); });
  CHECK(m.find("STRATA_IO_ENGINE is 'bogus'") != std::string::npos);
  CHECK(m.find("auto, uring or posix") != std::string::npos);
}

TEST_CASE("request_bytes cuts a transfer into block_bytes requests and the rest",
          "[io][engine]") {
  io::engine_config c;
  c.block_bytes = 64 << 10;
  CHECK(io::request_bytes(c) == (64u << 10));
  CHECK(io::request_bytes(c, 1u << 20) == (64u << 10));
  CHECK(io::request_bytes(c, 64u << 10) == (64u << 10));
  CHECK(io::request_bytes(c, 5) == 5);
}

namespace {

// A posix_engine request mover that counts the requests in flight and holds each one until
// `target` are in flight at once (or, after that has happened once, not at all): if the engine
// admitted more than `target`, the extra ones would arrive while the first are held. The hold
// is bounded so a broken engine fails the test instead of hanging it.
struct in_flight_gate {
  std::mutex mutex;
  std::condition_variable cv;
  unsigned target = 1;
  unsigned in_flight = 0, most = 0, requests = 0;
  bool opened = false, timed_out = false;

  int move(io::io_op op, int fd, char* p, std::size_t bytes, std::uint64_t offset,
           std::size_t& done) {
    {
      std::unique_lock lock(mutex);
      ++requests;
      most = std::max(most, ++in_flight);
      if (in_flight >= target) opened = true;
      cv.notify_all();
      if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return opened; })) timed_out = true;
    }
    const int err = io::posix_engine::move_piece(op, fd, p, bytes, offset, done);
    std::lock_guard lock(mutex);
    --in_flight;
    return err;
  }
};

}  // namespace

TEST_CASE("posix_engine keeps at most queue_depth requests of a call in flight", "[io][engine]") {
  scratch_dir dir;
  io::file f = buffered_file(dir.file("queue-depth"));
  struct shape {
    unsigned threads, queue_depth, requests, expected;
  };
  for (const shape s : {shape{8, 3, 32, 3},    // queue_depth bounds it
                        shape{2, 16, 32, 2},   // the pool bounds it
                        shape{8, 16, 5, 5},    // the call's own requests bound it
                        shape{8, 1, 16, 1},    // one at a time, on the caller's thread
                        shape{0, 8, 16, 1}}) { // no pool: the caller's thread
    INFO("threads " << s.threads << ", queue_depth " << s.queue_depth << ", requests "
                    << s.requests);
    io::engine_config c;
    c.block_bytes = 4096;
    c.queue_depth = s.queue_depth;
    c.posix_threads = s.threads;
    in_flight_gate gate;
    gate.target = s.expected;
    io::posix_engine e(c, [&](io::io_op op, int fd, char* p, std::size_t bytes,
                              std::uint64_t offset, std::size_t& done) {
      return gate.move(op, fd, p, bytes, offset, done);
    });
    const std::size_t n = std::size_t{s.requests} * 4096 - 100;  // the last request is short
    std::vector<char> src(n), dst(n);
    fill_random(src.data(), n, s.requests);
    e.write(f, src.data(), n, 0);
    CHECK(gate.most == s.expected);
    CHECK(gate.requests == s.requests);
    gate.most = gate.requests = 0;
    gate.opened = false;
    e.read(f, dst.data(), n, 0);
    CHECK(gate.most == s.expected);
    CHECK(gate.requests == s.requests);
    CHECK(!gate.timed_out);
    CHECK(std::memcmp(src.data(), dst.data(), n) == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// io::faulty
// ---------------------------------------------------------------------------------------------

TEST_CASE("faulty injects EIO, ENOSPC and short transfers by call, op and offset",
          "[io][faulty]") {
  scratch_dir dir;
  const std::string path = dir.file("faulty");
  io::file f = buffered_file(path);
  io::faulty e(make("posix"));
  CHECK(std::string(e.name()) == "faulty(posix)");
  std::vector<char> a(8192), b(8192);
  fill_random(a.data(), a.size(), 1);

  // The third write (n = 2) fails; the others go through.
  e.add_rule(io::fault_rule::nth(io::io_op::write, 2));
  e.write(f, a.data(), 4096, 0);
  e.write(f, a.data() + 4096, 4096, 4096);
  try {
    e.write(f, a.data(), 100, 20000);
    FAIL("the injected EIO did not happen");
  } catch (const io_error& err) {
    const std::string m = message_of(err);
    CHECK(m.find(path) != std::string::npos);
    CHECK(m.find("offset 20000") != std::string::npos);
    CHECK(m.find("EIO") != std::string::npos);
    CHECK(m.find("(injected)") != std::string::npos);
  }
  e.write(f, a.data(), 100, 20000);  // n = 3: fine again
  CHECK(e.writes() == 4);
  CHECK(e.injected() == 1);
  e.read(f, b.data(), 8192, 0);
  CHECK(std::memcmp(a.data(), b.data(), 8192) == 0);
  CHECK(e.reads() == 1);
  e.clear();

  // Reads touching [5000, 5001) fail with ENOSPC-worded errors; others do not.
  const std::size_t id = e.add_rule(io::fault_rule::range(io::io_op::read, 5000, 5001,
                                                          io::fault_kind::enospc));
  CHECK_NOTHROW(e.read(f, b.data(), 4096, 0));
  try {
    e.read(f, b.data(), 4096, 4096);
    FAIL("the injected ENOSPC did not happen");
  } catch (const io_error& err) {
    CHECK(message_of(err).find("ENOSPC") != std::string::npos);
    CHECK(message_of(err).find("offset 4096") != std::string::npos);
  }
  CHECK_NOTHROW(e.write(f, a.data(), 4096, 4096));  // writes are not selected
  e.remove_rule(id);
  CHECK_NOTHROW(e.read(f, b.data(), 4096, 4096));

  // Short then fail: the first half lands, the error names where the rest failed.
  std::vector<char> c(4000, 'c');
  e.add_rule(io::fault_rule::nth(io::io_op::write, e.writes(), io::fault_kind::short_then_fail));
  try {
    e.write(f, c.data(), 4000, 0);
    FAIL("the injected short write did not fail");
  } catch (const io_error& err) {
    CHECK(message_of(err).find("offset 2000") != std::string::npos);
    CHECK(message_of(err).find("(injected)") != std::string::npos);
  }
  e.clear();
  e.read(f, b.data(), 4000, 0);
  CHECK(std::memcmp(b.data(), c.data(), 2000) == 0);              // the half that moved
  CHECK(std::memcmp(b.data() + 2000, a.data() + 2000, 2000) == 0);  // the old bytes after it

  // A rule limited to two firings, for either operation.
  io::fault_rule twice;
  twice.times = 2;
  e.add_rule(twice);
  CHECK_THROWS_AS(e.read(f, b.data(), 10, 0), io_error);
  CHECK_THROWS_AS(e.write(f, b.data(), 10, 0), io_error);
  CHECK_NOTHROW(e.read(f, b.data(), 10, 0));
}

TEST_CASE("faulty delays calls without changing what they do", "[io][faulty]") {
  scratch_dir dir;
  io::file f = buffered_file(dir.file("delays"));
  auto inner = make("posix");
  io::faulty e(*inner);  // by reference: the engine stays the caller's
  e.add_rule(io::fault_rule::delayed(std::chrono::milliseconds(2)));
  std::vector<char> a(100000), b(100000);
  fill_random(a.data(), a.size(), 9);
  std::thread other([&] {
    std::vector<char> x(5000, 'x'), y(5000);
    for (int i = 0; i < 5; ++i) {
      e.write(f, x.data(), x.size(), 200000);
      e.read(f, y.data(), y.size(), 200000);
    }
  });
  for (int i = 0; i < 5; ++i) {
    e.write(f, a.data(), a.size(), 0);
    e.read(f, b.data(), b.size(), 0);
    CHECK(std::memcmp(a.data(), b.data(), a.size()) == 0);
  }
  other.join();
  CHECK(e.delayed_calls() == 20);
  CHECK(e.injected() == 0);
}
