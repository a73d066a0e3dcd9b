// strata/plan/checkpoint_cost.hpp — what a checkpoint costs: its size, its persist time and the
// stall it puts on training.
//
// What lives here: checkpoint_prediction and predict_checkpoint(), from first principles and
// the calibration. A checkpoint of a ZeRO run holds, per rank, what that rank owns: the fp32
// parameters it stores and its part of Adam's m and v (12 bytes per element; the bf16 working
// copies are not saved: they are the masters rounded). checkpoint/saver.hpp takes it in the
// background: save() only notes where each piece lives; the snapshot then runs during the
// next forward and backward (a memory home copied into host staging, an NVMe home copied file
// to file, reading and writing the disk); the persist writes the staged bytes and makes them
// durable. Training stalls only when the next update reaches a layer whose snapshot is not
// done — the snapshot's time beyond the forward and backward it runs under.
// What does not: the files' layout (checkpoint/shard_file.hpp), the step time (train_time.hpp).
#pragma once

#include <strata/plan/calibration.hpp>
#include <strata/plan/train_time.hpp>

#include <algorithm>

STRATA_NAMESPACE_BEGIN
namespace plan {

struct checkpoint_prediction {
  double bytes_per_rank = 0;  // what one rank writes (the largest rank's)
  double bytes_total = 0;     // every rank's
  double snapshot_s = 0;      // under the next forward and backward
  double persist_s = 0;       // the staged bytes written and made durable (memory homes)
  double stall_s = 0;         // what the training thread waits, per checkpoint
};

/// A checkpoint of `owned_elements` elements per rank (each rank's stored parameters = its
/// part of the optimizer state: the executor's part_numel summed over layers) on `world`
/// ranks, whose state lives at `home`; `window_s` is the compute the snapshot runs under (a
/// step's forward and backward: step_prediction::compute_bound_s).
inline checkpoint_prediction predict_checkpoint(double owned_elements, int world, state_home home,
                                                double window_s, const calibration& c) {
  if (!(owned_elements >= 0) || world < 1)
    throw config_error("plan::predict_checkpoint: " + std::to_string(owned_elements) +
                       " elements on " + std::to_string(world) + " ranks");
  if (!(c.nvme_write_bytes_s > 0) || !(c.copy_bytes_s > 0))
    throw config_error("plan::predict_checkpoint: the calibration has no nvme_write_bytes_s or "
                       "copy_bytes_s (a checkpoint is written to the NVMe tier's disk)");
  checkpoint_prediction p;
  p.bytes_per_rank = 12.0 * owned_elements;
  p.bytes_total = p.bytes_per_rank * world;
  if (home == state_home::nvme) {
    if (!(c.nvme_read_bytes_s > 0))
      throw config_error("plan::predict_checkpoint: the calibration has no nvme_read_bytes_s");
    // File to file: every byte read and written on the disk, no staging to persist.
    p.snapshot_s = p.bytes_per_rank / c.nvme_read_bytes_s + p.bytes_per_rank / c.nvme_write_bytes_s;
    p.persist_s = 0;
  } else {
    p.snapshot_s = p.bytes_per_rank / (c.copy_bytes_s / 2);  // copy_bytes_s counts both sides
    p.persist_s = p.bytes_per_rank / c.nvme_write_bytes_s;
  }
  p.stall_s = std::max(0.0, p.snapshot_s - window_s);
  return p;
}

}  // namespace plan
STRATA_NAMESPACE_END
