// needs: nlohmann_json
// Shard files (checkpoint/shard_file.hpp): tensors of several placements — resident on the
// (emulated) device, offloaded to host, on NVMe, and sharded with padding — go through a
// checkpoint and come back bitwise; a flipped byte, a truncated or missing file, a missing
// rank's manifest are errors naming the file (and offset and tensor); a byte range reads only
// the checksum blocks that cover it.
#include "catch.hpp"

#if __has_include(<nlohmann/json.hpp>)

#include "checkpoint_test_support.hpp"

#include <strata/exec/context.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <cstring>
#include <numeric>

#include <fcntl.h>
#include <unistd.h>

using namespace ckpt_test;

namespace {

std::vector<float> iota(std::size_t n, float from) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

// Flips one bit of the byte at `offset` of `path`.
void flip_byte(const std::string& path, off_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char b = 0;
  REQUIRE(::pread(fd, &b, 1, offset) == 1);
  b ^= 0x10;
  REQUIRE(::pwrite(fd, &b, 1, offset) == 1);
  ::close(fd);
}

}  // namespace

TEST_CASE("shard files: tensor_refs of several placements come back bitwise",
          "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  context ctx({.device_bytes = 1 << 20, .pinned_bytes = 1 << 20, .staging_slot_bytes = 4096,
               .staging_slots = 4, .nvme_directory = scratch.path.string(),
               .nvme_checksum_block = 4096});
  tiered_tensor<float, resident_on_device> dev(ctx, "dev", shape{1000});
  tiered_tensor<float, offloaded_to_host> host(ctx, "host", shape{10, 33});
  tiered_tensor<float, offloaded_to_nvme> nvme(ctx, "nvme", shape{2500});
  tiered_tensor<bf16, host_resident> half(ctx, "half", shape{77});
  dev.assign(iota(1000, 1.0f));
  host.assign(iota(330, -5.0f));
  nvme.assign(iota(2500, 0.5f));
  std::vector<bf16> hv(77);
  for (std::size_t i = 0; i < hv.size(); ++i) hv[i] = to_bf16(static_cast<float>(i) * 0.25f);
  half.assign(hv);
  // 10 elements over 4 ranks: shards of 3; rank 3 holds element 9 and two of padding.
  const shard_layout layout(10, 4);
  const std::vector<float> global = iota(10, 100.0f);
  using sharded = tiered_tensor<float, sharded_placement<tier::device, tier::host>>;
  std::vector<sharded> shards;
  for (int r = 0; r < 4; ++r) {
    shards.emplace_back(ctx, "sharded", layout, r);
    std::vector<float> mine(3, 0.0f);
    for (std::size_t i = 0; i < layout.valid_in(r); ++i) mine[i] = global[layout.offset(r) + i];
    shards.back().assign(mine);
  }

  checkpoint_root root(scratch.file("ckpt"));
  {
    pending_checkpoint p = root.begin("step-1");
    for (int r = 0; r < 4; ++r) {  // four ranks' writers into one checkpoint
      manifest head;
      head.step = 1;
      head.world = 4;
      head.rank = r;
      head.zero_stage = 3;
      head.metadata = {{"note", "placements"}};
      shard_writer w(p, head, {.block_bytes = 512});
      if (r == 0) {  // replicated state: one writer
        w.add(dev);
        w.add(host);
        w.add(nvme);
        w.add(half);
      }
      w.add(shards[static_cast<std::size_t>(r)].ref(), dtype::f32);
      const manifest& m = w.finish();
      CHECK(m.tensors.back().shard->valid() == layout.valid_in(r));
      CHECK(m.tensors.back().numel == 10);
    }
    p.commit();
  }
  REQUIRE(root.latest() == "step-1");
  checkpoint_reader r(root, "step-1");
  REQUIRE(r.world() == 4);
  auto bytes_of = [&](int rank, const char* name) {
    const tensor_entry& e = r.find(rank, name);
    std::vector<std::byte> b(e.bytes);
    r.read(e, b);
    return b;
  };
  auto as_bytes_vec = [](const auto& v) {
    std::vector<std::byte> b(v.size() * sizeof(v[0]));
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  CHECK(bytes_of(0, "dev") == as_bytes_vec(dev.to_vector()));
  CHECK(bytes_of(0, "host") == as_bytes_vec(host.to_vector()));
  CHECK(bytes_of(0, "nvme") == as_bytes_vec(nvme.to_vector()));
  CHECK(bytes_of(0, "half") == as_bytes_vec(half.to_vector()));
  CHECK(r.of_rank(0).metadata["note"] == "placements");
  // The shards put back together by their layouts are the global tensor, padding zero.
  std::vector<float> joined(layout.padded_numel(), -1.0f);
  for (int k = 0; k < 4; ++k) {
    const tensor_entry& e = r.find(k, "sharded");
    REQUIRE(e.shard.has_value());
    CHECK(e.shard->rank == k);
    r.read(e, std::as_writable_bytes(std::span(joined.data() + e.shard->offset(), 3)));
  }
  CHECK(std::vector<float>(joined.begin(), joined.begin() + 10) == global);
  CHECK(joined[10] == 0.0f);
  CHECK(joined[11] == 0.0f);
}

TEST_CASE("shard files: restore brings every placement back bitwise", "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  context ctx({.device_bytes = 1 << 20, .pinned_bytes = 1 << 20, .staging_slot_bytes = 4096,
               .staging_slots = 4, .nvme_directory = scratch.path.string(),
               .nvme_checksum_block = 4096});
  const shard_layout layout(10, 1);
  auto make = [&](float from) {
    struct set {
      tiered_tensor<float, resident_on_device> dev;
      tiered_tensor<float, offloaded_to_host> host;
      tiered_tensor<float, offloaded_to_nvme> nvme;
      tiered_tensor<float, sharded_placement<tier::device, tier::host>> sh;
    } s{{ctx, "dev", shape{1000}}, {ctx, "host", shape{330}}, {ctx, "nvme", shape{2500}},
        {ctx, "sharded", layout, 0}};
    s.dev.assign(iota(1000, from));
    s.host.assign(iota(330, from * 2));
    s.nvme.assign(iota(2500, from * 3));
    s.sh.assign(iota(10, from * 4));
    return s;
  };
  auto saved = make(1.0f);
  checkpoint_root root(scratch.file("ckpt"));
  {
    pending_checkpoint p = root.begin("a");
    shard_writer w(p, manifest{}, {.block_bytes = 300});  // blocks that do not divide anything
    w.add(saved.dev);
    w.add(saved.host);
    w.add(saved.nvme);
    w.add(saved.sh);
    w.finish();
    p.commit();
  }
  auto loaded = make(-7.0f);
  checkpoint_reader r(root, *root.latest());
  r.restore(loaded.dev, 0);
  r.restore(loaded.host, 0);
  r.restore(loaded.nvme, 0);
  r.restore(loaded.sh, 0);
  CHECK(loaded.dev.to_vector() == saved.dev.to_vector());
  CHECK(loaded.host.to_vector() == saved.host.to_vector());
  CHECK(loaded.nvme.to_vector() == saved.nvme.to_vector());
  CHECK(loaded.sh.to_vector() == saved.sh.to_vector());

  // Another layout is refused (resharding on load is to come), naming both layouts.
  tiered_tensor<float, sharded_placement<tier::device, tier::host>> other(ctx, "sharded",
                                                                          shard_layout(10, 2), 1);
  const std::string msg = message_of([&] { r.restore(other.ref(), 0); });
  INFO(msg);
  CHECK(mentions(msg, "rank 0's shard of 10 elements over 1 ranks"));
  CHECK(mentions(msg, "rank 1's shard of 10 elements over 2 ranks"));
  // So is another dtype.
  tiered_tensor<bf16, host_resident> wrong(ctx, "host", shape{660});
  CHECK_THROWS_AS(r.restore(wrong, 0), config_error);
}

TEST_CASE("shard files: a flipped byte is a format_error naming file, offset and tensor",
          "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  checkpoint_root root(scratch.file("ckpt"));
  commit_known(root, 1);
  checkpoint_reader clean(root, "step-1");
  const tensor_entry& e = clean.find(0, "m.bf16");
  const std::string bin = root.path() + "/step-1/rank-0.bin";
  // Byte 1000 of the bf16 tensor lies in its only block (4096-byte blocks, 1554 bytes).
  flip_byte(bin, static_cast<off_t>(e.offset + 1000));
  checkpoint_reader r(root, "step-1");
  std::vector<std::byte> buf(e.bytes);
  const std::string msg = message_of([&] { r.read(r.find(0, "m.bf16"), buf); });
  INFO(msg);
  CHECK(mentions(msg, bin));
  CHECK(mentions(msg, "'m.bf16'"));
  CHECK(mentions(msg, "byte offset " + std::to_string(e.offset)));
  CHECK_THROWS_AS(r.read(r.find(0, "m.bf16"), buf), format_error);
  // The other tensors still read clean.
  CHECK_THROWS_AS(differing_bytes(root, "step-1", 1), format_error);
  std::vector<std::byte> w(r.find(0, "w.f32").bytes);
  CHECK_NOTHROW(r.read(r.find(0, "w.f32"), w));
}

TEST_CASE("shard files: a truncated or missing file is an error naming it", "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  checkpoint_root root(scratch.file("ckpt"));
  commit_known(root, 1);
  const std::string dir = root.path() + "/step-1";
  {
    checkpoint_reader r(root, "step-1");
    const tensor_entry& e = r.find(0, "rng.i8");  // the last tensor: it ends the file
    REQUIRE(::truncate((dir + "/rank-0.bin").c_str(), static_cast<off_t>(e.offset + 2)) == 0);
  }
  checkpoint_reader r(root, "step-1");
  std::vector<std::byte> buf(5);
  std::string msg = message_of([&] { r.read(r.find(0, "rng.i8"), buf); });
  INFO(msg);
  CHECK(mentions(msg, dir + "/rank-0.bin' is truncated"));
  CHECK(mentions(msg, "'rng.i8'"));
  CHECK_THROWS_AS(r.read(r.find(0, "rng.i8"), buf), format_error);

  REQUIRE(::unlink((dir + "/rank-0.bin").c_str()) == 0);
  checkpoint_reader r2(root, "step-1");
  msg = message_of([&] { r2.read(r2.find(0, "rng.i8"), buf); });
  INFO(msg);
  CHECK(mentions(msg, "missing file '" + dir + "/rank-0.bin'"));
  CHECK_THROWS_AS(r2.read(r2.find(0, "rng.i8"), buf), io_error);

  REQUIRE(::unlink((dir + "/rank-0.json").c_str()) == 0);
  msg = message_of([&] { checkpoint_reader r3(root, "step-1"); });
  INFO(msg);
  CHECK(mentions(msg, "missing file '" + dir + "/rank-0.json'"));
}

TEST_CASE("shard files: every rank's manifest must be there and agree", "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  checkpoint_root root(scratch.file("ckpt"));
  const std::vector<std::byte> bytes = known_bytes(1, 0, 40);
  auto write = [&](const std::string& tag, std::vector<int> ranks, int world) {
    pending_checkpoint p = root.begin(tag);
    for (int r : ranks) {
      manifest head;
      head.world = world;
      head.rank = r;
      shard_writer w(p, head);
      w.add({.name = "x", .type = dtype::f32, .numel = 10}, bytes);
      w.finish();
    }
    p.commit();
  };
  write("two", {0, 1}, 2);
  checkpoint_reader ok(root, "two");
  CHECK(ok.world() == 2);
  CHECK(ok.of_rank(1).rank == 1);
  write("half", {0}, 3);
  const std::string msg = message_of([&] { checkpoint_reader r(root, "half"); });
  INFO(msg);
  CHECK(mentions(msg, "has world size 3"));
  CHECK(mentions(msg, "half/rank-1.json' is missing"));
}

TEST_CASE("shard files: a byte range reads only the blocks that cover it", "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  checkpoint_root root(scratch.file("ckpt"));
  commit_known(root, 3, 256);  // w.f32: 12000 bytes in 47 blocks of 256 (the last 224)
  const auto want = known_bytes(3, 0, 12000);
  checkpoint_reader r(root, "step-3");
  const tensor_entry& e = r.find(0, "w.f32");
  REQUIRE(e.block_count() == 47);
  struct range {
    std::uint64_t first, n, blocks_read;
  };
  const std::vector<range> ranges = {
      {1000, 10, 1},    // inside block 3
      {1020, 10, 2},    // across blocks 3 and 4
      {256, 256, 1},    // exactly block 1 (read straight into the caller's buffer)
      {11900, 100, 1},  // the short last block
      {0, 12000, 47},   // all of it
      {5, 1, 1},
  };
  for (const range& g : ranges) {
    INFO("bytes " << g.first << " + " << g.n);
    const read_stats before = r.stats();
    std::vector<std::byte> got(g.n);
    r.read_range(e, g.first, got);
    CHECK(r.stats().reads - before.reads == 1);
    const std::uint64_t b0 = g.first / 256, b1 = (g.first + g.n - 1) / 256;
    const std::uint64_t span = std::min<std::uint64_t>((b1 + 1) * 256, 12000) - b0 * 256;
    CHECK(b1 - b0 + 1 == g.blocks_read);
    CHECK(r.stats().bytes - before.bytes == span);
    CHECK(std::memcmp(got.data(), want.data() + g.first, g.n) == 0);
  }
  // A flipped byte outside a range does not stop the range: only its blocks are read.
  flip_byte(root.path() + "/step-3/rank-0.bin", static_cast<off_t>(e.offset + 5000));
  checkpoint_reader r2(root, "step-3");
  std::vector<std::byte> got(10);
  CHECK_NOTHROW(r2.read_range(r2.find(0, "w.f32"), 1000, got));
  CHECK_THROWS_AS(r2.read_range(r2.find(0, "w.f32"), 4990, got), format_error);
  CHECK_THROWS_AS(r2.read_range(r2.find(0, "w.f32"), 11995, got), config_error);  // past the end
}

TEST_CASE("shard writer: mistakes in what is added are config_errors naming the tensor",
          "[checkpoint][shard_file]") {
  io_test::scratch_dir scratch;
  checkpoint_root root(scratch.file("ckpt"));
  pending_checkpoint p = root.begin("x");
  shard_writer w(p, manifest{});
  const auto bytes = known_bytes(1, 0, 40);
  w.add({.name = "a", .type = dtype::f32, .numel = 10}, bytes);
  std::string msg = message_of([&] { w.add({.name = "a", .type = dtype::f32, .numel = 10}, bytes); });
  CHECK(mentions(msg, "'a' is added twice"));
  msg = message_of([&] { w.add({.name = "b", .type = dtype::f32, .numel = 9}, bytes); });
  CHECK(mentions(msg, "'b': 40 bytes given, but 9 f32 elements take 36"));
  msg = message_of([&] {
    w.add({.name = "c", .type = dtype::f32, .numel = 10, .shard = shard_spec{shard_layout(10, 2), 0}},
          bytes);
  });
  CHECK(mentions(msg, "'c': 40 bytes given, but 5 f32 elements take 20"));
  // A file created and never finished blocks the commit.
  output_file loose = p.create("extra.bin");
  w.finish();
  CHECK_THROWS_AS(p.commit(), config_error);
  loose.finish();
  p.commit();
  CHECK(root.latest() == "x");
}

#else

#include <cstdio>
TEST_CASE("shard files: skipped") { std::puts("SKIP: nlohmann/json not found"); }

#endif
