// The NVMe tier under tensors: an nvme-home walk == the resident walk (bitwise) with both
// engines; faults in a write-back lose nothing committed; a flipped byte on disk is caught.
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/io/faulty.hpp>
#include <strata/strata.hpp>

#include <cstdlib>
#include <fcntl.h>
#include <random>
#include <unistd.h>

using namespace strata;
using namespace io_test;

namespace {

context_config nvme_config(const std::string& engine, std::size_t device_bytes = 1 << 20) {
  context_config c;
  c.device_bytes = device_bytes;
  c.pinned_bytes = 16 << 20;
  c.host_bytes = 1 << 20;  // smaller than the sequences below: they must live on NVMe
  c.staging_slot_bytes = 64 << 10;
  c.staging_slots = 4;
  c.nvme_directory = test_tmpdir();
  c.nvme_checksum_block = 16 << 10;
  c.io.kind = engine;
  c.io.block_bytes = 64 << 10;
  return c;
}

std::vector<float> pattern(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Sizes straddle checksum blocks, staging slots and the file alignment.
const std::vector<std::size_t> sizes = {1, 1023, 1024, 4097, 16384, 40000, 30001, 7};

template <class Placement, class Prefetch>
std::vector<std::vector<float>> walk(context& ctx) {
  tensor_sequence<float, Placement, Prefetch> seq(ctx);
  for (std::size_t i = 0; i < sizes.size(); ++i)
    seq.emplace_back("L" + std::to_string(i), {sizes[i]}).assign(pattern(sizes[i], unsigned(i)));
  for (int step = 0; step < 2; ++step) {
    seq.forward(read_write, [&](std::size_t i, auto v) {
      for (std::size_t k = 0; k < v.size(); ++k) v.data()[k] = v.data()[k] * 0.5f + float(i);
    });
    seq.backward(read_write, [&](std::size_t, auto v) {
      for (std::size_t k = 0; k < v.size(); ++k) v.data()[k] -= 0.25f;
    });
  }
  std::vector<std::vector<float>> out;
  for (std::size_t i = 0; i < seq.size(); ++i) out.push_back(seq[i].to_vector());
  return out;
}

}  // namespace

TEST_CASE("an NVMe-home sequence walk == the resident walk, bitwise", "[nvme]") {
  context resident_ctx({.device_bytes = 8 << 20});
  const auto ref = walk<resident_on_device, prefetch::none>(resident_ctx);
  for (const auto& engine : engine_kinds()) {
    INFO("engine " << engine);
    context ctx(nvme_config(engine));
    CHECK(walk<offloaded_to_nvme, prefetch::none>(ctx) == ref);
    CHECK(walk<offloaded_to_nvme, prefetch::lookahead<2>>(ctx) == ref);
    CHECK(walk<placement<tier::pinned, tier::nvme>, prefetch::lookahead<1>>(ctx) == ref);
    CHECK(walk<placement<tier::host, tier::nvme>, prefetch::lookahead<3>>(ctx) == ref);
    CHECK(ctx.budget(tier_id::host).peak() < (1u << 20));
    const auto spans = ctx.trace().spans();
    std::size_t reads = 0, writes = 0;
    for (auto& s : spans) {
      reads += s.kind == span_kind::io_read;
      writes += s.kind == span_kind::io_write;
    }
    CHECK(reads > 0);
    CHECK(writes > 0);
  }
}

TEST_CASE("assign and read back through the NVMe tier, every size", "[nvme]") {
  for (const auto& engine : engine_kinds()) {
    context ctx(nvme_config(engine, 4 << 20));
    for (std::size_t n : {std::size_t{1}, std::size_t{4095}, std::size_t{16385},
                          std::size_t{(1 << 20) + 3}}) {
      INFO(engine << ", " << n << " bytes");
      tiered_tensor<std::uint8_t, offloaded_to_nvme> t(ctx, "bytes", {n});
      std::vector<std::uint8_t> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 131 + 7);
      t.assign(v);
      CHECK(t.to_vector() == v);
      {
        auto on_pinned = t.acquire<tier::pinned>();
        CHECK(on_pinned.view()[n - 1] == v[n - 1]);
      }
      CHECK(ctx.budget(tier_id::nvme).used() == n);
    }
    ctx.synchronize();
    CHECK(ctx.budget(tier_id::nvme).used() == 0);  // homes given back with their tensors
  }
}

TEST_CASE("a failed write-back keeps the last committed value", "[nvme]") {
  io::faulty* faults = nullptr;
  auto cfg = nvme_config("posix");
  cfg.wrap_io_engine = [&](std::unique_ptr<io::engine> e) {
    auto f = std::make_unique<io::faulty>(std::move(e));
    faults = f.get();
    return std::unique_ptr<io::engine>(std::move(f));
  };
  context ctx(cfg);
  REQUIRE(faults != nullptr);
  tiered_tensor<float, offloaded_to_nvme> t(ctx, "weights", {50000});
  const auto committed = pattern(50000, 9);
  t.assign(committed);

  faults->add_rule(io::fault_rule::nth(io::io_op::write, faults->calls(io::io_op::write)));
  {
    auto l = t.acquire(read_write);
    for (std::size_t k = 0; k < l.view().size(); ++k) l.data()[k] = -1.0f;
  }  // the write-back fails on the io-write queue
  try {
    (void)t.acquire();
    FAIL("the failed write-back was not reported");
  } catch (const io_error& e) {
    CHECK(std::string(e.what()).find(ctx.nvme().path()) != std::string::npos);
  }
  faults->clear();
  CHECK(t.to_vector() == committed);  // nothing committed was lost
  // And the tensor works on.
  t.assign(pattern(50000, 10));
  CHECK(t.to_vector() == pattern(50000, 10));
}

TEST_CASE("a flipped byte in the arena file is detected, naming the tensor", "[nvme]") {
  context ctx(nvme_config("posix"));
  tiered_tensor<float, offloaded_to_nvme> a(ctx, "victim", {10000}), b(ctx, "bystander", {100});
  a.assign(pattern(10000, 1));
  b.assign(pattern(100, 2));
  ctx.synchronize();
  const auto off = ctx.nvme().file_offset_of(a.ref().home_file());
  int fd = ::open(ctx.nvme().path().c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char byte = 0;
  REQUIRE(::pread(fd, &byte, 1, static_cast<off_t>(off + 123)) == 1);
  byte ^= 0x10;
  REQUIRE(::pwrite(fd, &byte, 1, static_cast<off_t>(off + 123)) == 1);
  ::close(fd);
  try {
    (void)a.to_vector();
    FAIL("the corrupted block was read without complaint");
  } catch (const format_error& e) {
    const std::string m = e.what();
    CHECK(m.find("victim") != std::string::npos);
    CHECK(m.find(ctx.nvme().path()) != std::string::npos);
  }
  CHECK(b.to_vector() == pattern(100, 2));
}

TEST_CASE("an nvme home needs a context with an NVMe tier", "[nvme]") {
  context ctx;
  CHECK_THROWS_AS((tiered_tensor<float, offloaded_to_nvme>(ctx, "x", {4})), config_error);
  auto cfg = nvme_config("posix");
  cfg.staging_slot_bytes = 24 << 10;  // not a multiple of the 16 KiB checksum block
  CHECK_THROWS_AS(context(cfg), config_error);
}
