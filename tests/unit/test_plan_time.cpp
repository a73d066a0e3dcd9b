// The planner's time model: plan::timeline places tasks as in-order queues do (lanes serialise,
// different lanes overlap, the disk is shared by reads and writes, waits are kept, a cycle is an
// error); plan::predict_step's structure — a resident step is its compute exactly, an NVMe step
// moves the bytes the executor moves, the IO bound bounds it from below, the deferred step is
// never slower than the step at once and hides IO behind the forward, a missing rate is named.
#include "catch.hpp"

#include <strata/plan/train_time.hpp>

#include <cmath>

using namespace strata;
using namespace strata::plan;

TEST_CASE("timeline: lanes serialise, lanes overlap, waits hold, the disk is shared",
          "[plan]") {
  timeline t;
  const auto a = t.add(lane::compute, 2.0, {}, "a");
  const auto b = t.add(lane::h2d, 1.0, {}, "b");          // overlaps a
  const auto c = t.add(lane::compute, 1.0, {}, "c");      // after a on its lane
  const auto d = t.add(lane::collectives, 0.5, {b, c}, "d");
  const auto r = t.add(lane::io_read, 1.0, {}, "r", holds_disk);
  const auto w = t.add(lane::io_write, 1.0, {}, "w", holds_disk);  // another lane, the same disk
  t.run();
  CHECK(t.start(a) == 0.0);
  CHECK(t.start(b) == 0.0);
  CHECK(t.start(c) == 2.0);
  CHECK(t.start(d) == 3.0);
  CHECK(t.end(d) == 3.5);
  CHECK(t.start(r) == 0.0);
  CHECK(t.start(w) == 1.0);  // the disk was held by r
  CHECK(t.makespan() == 3.5);
  CHECK(t.busy(lane::compute) == 3.0);
  CHECK(t.busy(lane::compute, 1.0, 2.5) == 1.5);
  CHECK(t.held_busy(holds_disk) == 2.0);
  const auto path = t.critical_path(d);
  REQUIRE(path.size() == 3);
  CHECK(path[0] == a);
  CHECK(path[1] == c);
  CHECK(path[2] == d);
}

TEST_CASE("timeline: a task waits on another lane, and bad tasks are refused", "[plan]") {
  timeline t;
  const auto x = t.add(lane::optimizer, 1.0, {}, "x");
  const auto y = t.add(lane::compute, 1.0, {x}, "y");
  const auto z = t.add(lane::optimizer, 1.0, {y}, "z");
  const auto w = t.add(lane::optimizer, 0.5, {}, "w");  // behind z on its lane: waits for it
  t.run();
  CHECK(t.start(y) == 1.0);
  CHECK(t.start(z) == 2.0);
  CHECK(t.start(w) == 3.0);
  CHECK(t.makespan() == 3.5);
  // Every wait is on a task added before (so the tasks always form a DAG), durations >= 0.
  CHECK_THROWS_WITH(t.add(lane::compute, 1.0, {7}, "late"), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(t.add(lane::compute, -1.0, {}, "neg"), Catch::Contains("'neg'"));
  timeline fresh;
  fresh.add(lane::compute, 1.0, {}, "a");
  CHECK_THROWS_WITH(fresh.end(0), Catch::Contains("run()"));
}

TEST_CASE("timeline: the disk serves the request that was ready first", "[plan]") {
  // A stream of disk pieces on the optimizer lane and a read that becomes ready while the
  // first piece runs: the read goes next, before the stream's second piece.
  timeline t;
  const auto p0 = t.add(lane::optimizer, 1.0, {}, "piece 0", holds_disk);
  const auto p1 = t.add(lane::optimizer, 1.0, {p0}, "piece 1", holds_disk);
  const auto c = t.add(lane::compute, 0.5, {}, "compute");
  const auto r = t.add(lane::io_read, 0.25, {c}, "read", holds_disk);
  t.run();
  CHECK(t.start(r) == 1.0);
  CHECK(t.start(p1) == 1.25);
}

namespace {

calibration machine() {
  calibration c;
  c.gemm_flops = 1e11;
  c.triad_bytes_s = 20e9;
  c.copy_bytes_s = 16e9;  // 8 GB/s of copy
  c.nvme_read_bytes_s = 2e9;
  c.nvme_write_bytes_s = 1e9;
  c.allgather_bytes_s = {{2, 4e9}};
  return c;
}

std::vector<layer_cost> model(std::size_t layers, std::size_t numel, double fwd, double bwd) {
  return std::vector<layer_cost>(layers, layer_cost{numel, fwd, bwd});
}

}  // namespace

TEST_CASE("predict_step: a resident host-build step is its compute, its copies and Adam, in turn",
          "[plan]") {
  train_schedule s;
  s.stage = 0;
  s.home = state_home::compute;
  s.deferred = false;
  const auto layers = model(4, 1000, 0.1, 0.2);
  const auto p = predict_step(layers, s, machine());
  // Compute 4 x 0.3 s, four Adam passes over 1000 elements (28 bytes each) at 20 GB/s, and
  // per layer the gradient's one-rank all-reduce (a copy of 2 x 4000 bytes) and its write home
  // (4000 bytes) at 8 GB/s: in a host build all of it runs on the same cores, one after another.
  const double adam = 4 * 1000 * 28.0 / 20e9, copies = 4 * 12000 / 8e9;
  CHECK(p.compute_bound_s == Approx(1.2));
  CHECK(p.seconds == Approx(1.2 + adam + copies).epsilon(1e-12));
  CHECK(p.io_bound_s == 0.0);
  CHECK(p.nvme_read_bytes == 0);
  CHECK(p.bound == "compute-bound");
}

TEST_CASE("predict_step: an NVMe step moves the executor's bytes and is bounded by them",
          "[plan]") {
  const std::size_t n = 1 << 20, L = 6;
  for (std::size_t wb : {std::size_t{4}, std::size_t{2}})
    for (int world : {1, 2}) {
      INFO("working bytes " << wb << ", world " << world);
      train_schedule s;
      s.home = state_home::nvme;
      s.world = world;
      s.working_bytes = wb;
      const auto layers = model(L, n, 1e-4, 2e-4);  // tiny compute: IO decides
      const auto p = predict_step(layers, s, machine());
      const std::size_t shard = n / std::size_t(world);
      // The backward reads each shard's working copy (the forward, under the deferred
      // update, takes it from the update); the update reads shard, grad, m, v (16 bytes) and
      // writes shard, m, v (12) and the bf16 copy (2); grads are written.
      // Every write also writes its checksum table: 4 bytes per 1 MiB block (alignment 1).
      auto crc = [](std::size_t bytes) { return (bytes + (1 << 20) - 1) / (1 << 20) * 4; };
      const std::size_t writes = 4 * (shard * 4 + crc(shard * 4)) +
                                 (wb == 2 ? shard * 2 + crc(shard * 2) : 0);
      REQUIRE(s.deferred);
      CHECK(p.nvme_read_bytes == L * shard * (wb + 16));
      CHECK(p.nvme_write_bytes == L * writes);
      CHECK(p.io_bound_s == Approx(double(p.nvme_read_bytes) / 2e9 + double(p.nvme_write_bytes) / 1e9));
      CHECK(p.seconds >= p.io_bound_s * (1 - 1e-9));
      CHECK(p.seconds < p.io_bound_s * 1.25);  // the disk is the one busy resource
      CHECK_THAT(p.bound, Catch::Contains("IO-bound"));
    }
}

TEST_CASE("predict_step: the deferred step hides its IO behind the next forward", "[plan]") {
  // Compute and IO of the same size: at once, forward + backward + update run one after the
  // other; deferred, the update's IO runs under the forward.
  train_schedule s;
  s.home = state_home::nvme;
  const std::size_t n = 1 << 22;
  const double update_io = n * 16.0 / 2e9 + n * 12.0 / 1e9;
  const auto layers = model(8, n, update_io, update_io);
  s.deferred = false;
  const auto at_once = predict_step(layers, s, machine());
  s.deferred = true;
  const auto deferred = predict_step(layers, s, machine());
  CHECK(deferred.seconds < at_once.seconds * 0.85);
  CHECK(deferred.seconds >= deferred.best_s() * (1 - 1e-9));
  // The same work, later — less the forward's reads: it takes each layer from its update.
  CHECK(at_once.nvme_read_bytes == deferred.nvme_read_bytes + 8 * n * 4);
  CHECK(at_once.nvme_write_bytes == deferred.nvme_write_bytes);
  // The steady state's lanes: the optimizer lane is busy in the deferred step, compute is not
  // busier than the compute bound.
  CHECK(deferred.busy[static_cast<std::size_t>(lane::optimizer)] > 0);
  CHECK(deferred.busy[static_cast<std::size_t>(lane::compute)] <= deferred.compute_bound_s * (1 + 1e-9));
}

TEST_CASE("predict_step: a calibration without a needed rate is named", "[plan]") {
  train_schedule s;
  s.home = state_home::nvme;
  calibration c = machine();
  c.nvme_write_bytes_s = 0;
  const auto layers = model(2, 100, 0.1, 0.1);
  CHECK_THROWS_WITH(predict_step(layers, s, c), Catch::Contains("nvme_write_bytes_s"));
  s.home = state_home::host;
  s.world = 4;
  c.allgather_bytes_s.clear();
  CHECK_THROWS_WITH(predict_step(layers, s, c), Catch::Contains("all-gather"));
  s.stage = 2;
  CHECK_THROWS_WITH(predict_step(layers, s, c), Catch::Contains("stage"));
}
