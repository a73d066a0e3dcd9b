// strata/strata.hpp — the umbrella header: everything the current build mode supports.
//
// strata is a header-only C++20 library that keeps tensors on memory tiers (GPU memory, pinned
// host memory, host memory, NVMe files) and moves them between tiers in the background while
// the program computes. Include this header, or the floor headers you need:
//   core/     dtypes, q4 groups, shapes, alignment, errors                       (floor 1)
//   memory/   tier traits and lists, copy routes, budgets, resources, pools      (floor 2)
//   io/       IO engines (io_uring, pread/pwrite, faulty), CRC-32C, NVMe store   (floor 3)
//   comm/     communicators on one face: solo, threads, MPI, NCCL                (floor 3)
//   exec/     queues, events, copies, trace, the context                         (floor 4)
//   tensor/   tiered_tensor, tensor_ref, leases, views, sequences, shard layouts (floor 5)
//   schedule/ ZeRO bundles, the layer executor, the memory plan                  (floor 6)
//   optim/    Adam/AdamW (host SIMD, device), clipping, loss scaling, NVMe state (floor 7)
//   infer/    streamed inference: layer streams (rings, batch blocks), KV caches (floor 7)
//   checkpoint/ atomic checkpoint directories; manifests and shard files      (floor 8)
//             (manifests and shard files need nlohmann/json: included where it is found)
//   plan/     calibration, the queue model of a step, checkpoint cost, cluster sizing (floor 9)
//             (plan/calibration_json.hpp needs nlohmann/json: include it yourself)
#pragma once

#include <strata/core/align.hpp>
#include <strata/core/config.hpp>
#include <strata/core/cpu_features.hpp>
#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>
#include <strata/core/quant.hpp>
#include <strata/core/shape.hpp>

#include <strata/memory/budget.hpp>
#include <strata/memory/buffer.hpp>
#include <strata/memory/default_resource.hpp>
#include <strata/memory/pointer.hpp>
#include <strata/memory/pool.hpp>
#include <strata/memory/resource.hpp>
#include <strata/memory/tier.hpp>
#include <strata/memory/tier_list.hpp>
#if !STRATA_ENABLE_CUDA
#  include <strata/memory/emulated_device.hpp>
#endif

#include <strata/io/counting.hpp>
#include <strata/io/crc32c.hpp>
#include <strata/io/engine.hpp>
#include <strata/io/faulty.hpp>
#include <strata/io/file.hpp>
#include <strata/io/make_engine.hpp>
#include <strata/io/nvme_store.hpp>
#include <strata/io/posix_engine.hpp>
#include <strata/io/uring_engine.hpp>

#include <strata/comm/communicator.hpp>
#include <strata/comm/communicator_face.hpp>
#include <strata/comm/planned.hpp>
#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>
#include <strata/comm/mpi.hpp>   // empty unless STRATA_HAVE_MPI (link strata::mpi)
#include <strata/comm/nccl.hpp>  // empty unless CUDA, NCCL and MPI

#include <strata/exec/buffer_ring.hpp>
#include <strata/exec/context.hpp>
#include <strata/exec/copy_engine.hpp>
#include <strata/exec/event.hpp>
#include <strata/exec/staging_ring.hpp>
#include <strata/exec/thread_pool.hpp>
#include <strata/exec/trace.hpp>
#include <strata/exec/work_queue.hpp>

#include <strata/tensor/lease.hpp>
#include <strata/tensor/placement.hpp>
#include <strata/tensor/prefetch.hpp>
#include <strata/tensor/shard_layout.hpp>
#include <strata/tensor/tensor_ref.hpp>
#include <strata/tensor/tensor_sequence.hpp>
#include <strata/tensor/tiered_tensor.hpp>
#include <strata/tensor/view.hpp>

#include <strata/schedule/executor.hpp>
#include <strata/schedule/memory_plan.hpp>
#include <strata/schedule/zero.hpp>

#include <strata/optim/adam.hpp>
#include <strata/optim/grad_stats.hpp>
#include <strata/optim/loss_scaler.hpp>
#include <strata/optim/streamed_adam.hpp>
#include <strata/optim/zero_adam.hpp>  // + optim/device_adam.cuh when compiled by nvcc

#include <strata/infer/kv_cache.hpp>
#include <strata/infer/layer_stream.hpp>

#include <strata/checkpoint/directory.hpp>
#include <strata/checkpoint/file_ops.hpp>

#include <strata/plan/calibration.hpp>
#include <strata/plan/checkpoint_cost.hpp>
#include <strata/plan/cluster.hpp>
#include <strata/plan/infer_time.hpp>
#include <strata/plan/timeline.hpp>
#include <strata/plan/train_time.hpp>
// checkpoint/manifest.hpp and checkpoint/shard_file.hpp need nlohmann/json: include them
// yourself where it is on the include path (and linked: nlohmann_json::nlohmann_json), so that
// the umbrella never picks up whichever json header happens to be on the system path.
