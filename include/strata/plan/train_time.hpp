// strata/plan/train_time.hpp — how long a training step takes: the executor's queues, modelled
// layer by layer.
//
// What lives here: layer_cost (a layer's elements and its compute seconds forward and
// backward, from the model's own cost function), train_schedule (what the executor does: ZeRO
// stage, where the state lives, world size, lookahead, working bytes, deferred step, norm
// watched, accumulation), step_prediction and predict_step(), which lays a few steps of tasks
// onto a plan::timeline — the walks' fetches (NVMe read, host-to-device copy, all-gather),
// the compute, each gradient's reduce-scatter, copy home and write, each layer's optimizer
// update (its NVMe reads and writes of shard, gradient, m and v, or the Adam pass over host
// memory) — and reads the step time off the steady-state step. The bounds beside it: the IO
// bound (the step's NVMe bytes ÷ the calibrated rates) and the compute bound (the sum of the
// layers' compute).
// What does not: the layers' compute seconds (the model's business: examples/gpt/gpt_plan.hpp
// turns a GPT shape and a calibration into layer_costs), memory (the executors' plans).
//
// The dependencies are the executor's (schedule/executor.hpp): Depth+1 gathered buffers, so
// layer j is fetched once layer j-Depth-1's compute has ended; two full-gradient buffers, so
// the backward of a layer waits for the gradient two layers back to have left; a deferred
// step's update of layer i ends before the next forward brings layer i (with an NVMe home,
// from the update's memory: a copy, no NVMe read); an NVMe update holds
// the disk for each sub-group's reads and writes, then the CPU for its Adam pass. In a host
// build the compute kernels, Adam, the copies (memcpy) and the thread collectives share the
// cores (timeline's holds_cpu): on a small machine the deferred update is hidden behind the
// forward's IO waits, not behind its compute.
#pragma once

#include <strata/io/nvme_store.hpp>
#include <strata/plan/calibration.hpp>
#include <strata/plan/timeline.hpp>

#include <cstddef>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace plan {

/// One layer of the model as the executor sees it.
struct layer_cost {
  std::size_t numel = 0;    // elements (the executor's layer_spec)
  double forward_s = 0;     // compute of one micro-batch's forward
  double backward_s = 0;    // compute of its backward (with any recomputation)
};

/// Where the executor's state lives.
enum class state_home : std::uint8_t {
  compute,  // on the compute tier (ZeRO-0/3 resident: nothing is fetched)
  host,     // host or pinned memory (ZeRO-Offload): fetched by copies
  nvme      // NVMe files (ZeRO-Infinity): read through the store, then copied
};

struct train_schedule {
  int stage = 3;                    // 0 (replicas, all-reduce) or 3 (shards, all-gather)
  state_home home = state_home::host;
  int world = 1;
  int depth = 2;                    // prefetch::lookahead<Depth>
  std::size_t working_bytes = 4;    // 2: bf16 working copies are fetched and gathered
  bool deferred = true;             // the update runs under the next forward
  bool watched = true;              // the norm is taken as gradients land (no re-read)
  int accum = 1;                    // micro-batches per step
  bool gpu = false;                 // a real GPU: copies at the calibrated h2d/d2h rates
  /// Elements per streamed sub-group of an NVMe home's update (zero_adam_config::sub_group):
  /// the update's IO reaches the disk in pieces of this, between which a fetch gets its turn.
  std::size_t sub_group = std::size_t{1} << 20;
  /// The NVMe store's transfer alignment and checksum block (io::nvme_store's
  /// transfer_alignment() and checksum_block()): its requests are whole blocks, padded, so a
  /// step's bytes are predicted exactly (io::nvme_store::read_cost / write_cost).
  std::size_t nvme_align = 1;
  std::size_t checksum_block = std::size_t{1} << 20;
  void validate() const;
};

struct step_prediction {
  double seconds = 0;          // one steady-state step
  double compute_bound_s = 0;  // the layers' compute, summed (what the step cannot beat)
  double io_bound_s = 0;       // the step's NVMe bytes at the calibrated rates
  double copy_s = 0;           // host <-> compute-tier copies, summed (busy[] has every lane)
  std::size_t nvme_read_bytes = 0, nvme_write_bytes = 0;
  std::array<double, lane_count> busy{};  // per lane, in the steady-state step
  /// "compute-bound", "IO-bound at X GB/s", ...: what decided the step.
  std::string bound;
  /// The bound this schedule can at best reach: max(compute, IO).
  double best_s() const noexcept { return std::max(compute_bound_s, io_bound_s); }
};

/// A steady-state step of `layers` (in forward order) under `s` on the machine `c` measured.
step_prediction predict_step(const std::vector<layer_cost>& layers, const train_schedule& s,
                             const calibration& c);

}  // namespace plan
STRATA_NAMESPACE_END

#include <strata/plan/detail/train_time.inl>
