// strata/plan/infer_time.hpp — how long a streamed inference pass takes: infer::layer_stream's
// ring, modelled layer by layer.
//
// What lives here: infer_layer (a layer's stored bytes and the compute of one pass through it,
// every micro-batch of the block included), infer_schedule (where the weights live, the
// lookahead), pass_prediction and predict_pass(), which lays a few passes (one per generated
// token: every layer, in order) onto a plan::timeline — each layer fetched into a ring of
// Depth+1 buffers (an NVMe home read through the store, then copied to the compute tier; a host
// or pinned home copied) once the buffer that layer i-Depth-1 used is free, and computed once
// it has arrived — and reads a pass off the steady state. Beside it, the IO bound (a pass's
// NVMe bytes at the calibrated read rate for tensors of their size) and the compute bound.
// A KV cache off the compute tier (infer::kv_cache) moves each layer's cache whole, in before
// the layer's compute (a ring of kv_depth + 1: after the slot's previous layer went home) and
// home after it.
// What does not: the layers' compute (the model's: examples/gpt/gpt_plan.hpp from its kernels'
// calibrated rates), memory (layer_stream's and kv_cache's plans).
#pragma once

#include <strata/io/nvme_store.hpp>
#include <strata/plan/calibration.hpp>
#include <strata/plan/timeline.hpp>
#include <strata/plan/train_time.hpp>  // state_home

#include <cmath>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace plan {

struct infer_layer {
  std::size_t bytes = 0;     // stored bytes (the layer's packing: f32, bf16, 4-bit groups ...)
  double compute_s = 0;      // one pass: every micro-batch of the block through the layer
  std::size_t kv_bytes = 0;  // the layer's KV cache (it moves whole: in before, home after)
};

struct infer_schedule {
  state_home home = state_home::nvme;  // compute: resident weights, nothing is fetched
  int depth = 1;                       // prefetch::lookahead<Depth>
  state_home kv_home = state_home::compute;  // where the KV cache lives (kv_cache's home)
  int kv_depth = 1;                          // its lookahead (a ring of kv_depth + 1)
  bool gpu = false;                    // copies at the calibrated h2d rate, compute off the CPU
  std::size_t nvme_align = 1;          // the store's transfer alignment and checksum block
  std::size_t checksum_block = std::size_t{1} << 20;
  void validate() const {
    if (depth < 0 || kv_depth < 0)
      throw config_error("plan::infer_schedule: depth and kv_depth must be >= 0, got " +
                         std::to_string(depth) + " and " + std::to_string(kv_depth));
  }
};

struct pass_prediction {
  double seconds = 0;          // one steady-state pass (a generated token for every row)
  double compute_bound_s = 0;  // the layers' compute, summed
  double io_bound_s = 0;       // a pass's NVMe bytes at the calibrated read rate
  std::size_t nvme_read_bytes = 0, nvme_write_bytes = 0;
  std::string bound;
};

inline pass_prediction predict_pass(const std::vector<infer_layer>& layers,
                                    const infer_schedule& s, const calibration& c) {
  s.validate();
  if (layers.empty()) throw config_error("plan::predict_pass: no layers");
  const bool nvme = s.home == state_home::nvme, fetched = s.home != state_home::compute;
  const bool kv_nvme = s.kv_home == state_home::nvme, kv_moved = s.kv_home != state_home::compute;
  if ((nvme || kv_nvme) && !(c.nvme_read_bytes_s > 0 && c.nvme_write_bytes_s > 0))
    throw config_error("plan::predict_pass: the calibration has no nvme_read_bytes_s / "
                       "nvme_write_bytes_s");
  const double copy_rate = s.gpu ? c.h2d_bytes_s : c.copy_bytes_s / 2;  // both sides counted
  const double back_rate = s.gpu ? c.d2h_bytes_s : c.copy_bytes_s / 2;
  if ((fetched || kv_moved) && !(copy_rate > 0 && back_rate > 0))
    throw config_error(std::string("plan::predict_pass: the calibration has no ") +
                       (s.gpu ? "h2d_bytes_s" : "copy_bytes_s"));
  const unsigned cpu = s.gpu ? holds_nothing : holds_cpu;  // host build: one set of cores
  timeline t;
  using id = timeline::task_id;
  const std::size_t n = layers.size(), d = std::size_t(s.depth);
  // Passes run ahead of each other where the ring lets them (the disk's debt carries over), so
  // the steady state is the mean of the last half of 8.
  constexpr int passes = 8;
  std::vector<id> computed, kv_home;  // every pass's, in order
  std::vector<id> pass_end;
  pass_prediction p;
  auto read = [&](std::size_t bytes, std::vector<id> after, const std::string& what, bool count) {
    const std::size_t b = io::nvme_store::read_cost(bytes, 0, bytes, s.nvme_align, s.checksum_block);
    const double sec = double(b) / c.nvme_read_rate(bytes);
    if (count) p.nvme_read_bytes += b, p.io_bound_s += sec;
    return t.add(lane::io_read, sec, std::move(after), what, holds_disk);
  };
  const std::size_t kd = std::size_t(s.kv_depth);
  for (int k = 0; k < passes; ++k)
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t at = computed.size();  // this layer's position in the stream
      std::vector<id> wait;
      if (at >= d + 1) wait.push_back(computed[at - d - 1]);  // its ring buffer is free
      std::vector<id> go;
      if (!computed.empty()) go.push_back(computed.back());
      const std::string name = "L" + std::to_string(i);
      if (fetched) {
        if (nvme) wait = {read(layers[i].bytes, wait, "read " + name, k == 0)};
        go.push_back(t.add(lane::h2d, double(layers[i].bytes) / copy_rate, wait, "h2d " + name, cpu));
      }
      if (kv_moved && layers[i].kv_bytes) {  // the cache in, after its ring slot went home
        const std::size_t kb = layers[i].kv_bytes;
        std::vector<id> slot;
        if (at >= kd + 1) slot.push_back(kv_home[at - kd - 1]);
        if (kv_nvme) slot = {read(kb, slot, "read KV " + name, k == 0)};
        go.push_back(t.add(lane::h2d, double(kb) / copy_rate, slot, "h2d KV " + name, cpu));
      }
      computed.push_back(t.add(lane::compute, layers[i].compute_s, go, "compute " + name, cpu));
      if (kv_moved && layers[i].kv_bytes) {  // ... and home again, appended to
        const std::size_t kb = layers[i].kv_bytes;
        id w = t.add(lane::d2h, double(kb) / back_rate, {computed.back()}, "d2h KV " + name, cpu);
        if (kv_nvme) {
          const std::size_t b = io::nvme_store::write_cost(kb, s.nvme_align, s.checksum_block);
          const double sec = double(b) / c.nvme_write_rate(kb);
          if (k == 0) p.nvme_write_bytes += b, p.io_bound_s += sec;
          w = t.add(lane::io_write, sec, {w}, "write KV " + name, holds_disk);
        }
        kv_home.push_back(w);
      } else {
        kv_home.push_back(computed.back());
      }
      if (k == 0) p.compute_bound_s += layers[i].compute_s;
      if (i + 1 == n) pass_end.push_back(computed.back());
    }
  t.run();
  p.seconds = (t.end(pass_end[passes - 1]) - t.end(pass_end[passes / 2 - 1])) / (passes / 2);
  p.bound = p.io_bound_s > p.compute_bound_s ? "IO-bound" : "compute-bound";
  return p;
}

}  // namespace plan
STRATA_NAMESPACE_END
