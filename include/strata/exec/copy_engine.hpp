// strata/exec/copy_engine.hpp — asynchronous copies between any two tiers, staged where needed.
//
// Four queues, so fetches, write-backs and file IO overlap each other and compute:
//   h2d       memory -> memory toward the device (to a faster tier)
//   d2h       memory -> memory away from the device
//   io-read   nvme -> memory (the NVMe tier's reads, through the context's nvme_store)
//   io-write  memory -> nvme (copy-on-write: a failed write leaves the old data current)
// The context's tier table (copy_route per pair, tier kinds, speed ranks) decides the mechanics:
// a direct route is one memcpy / cudaMemcpyAsync / file read; a staged route streams through
// slots of the pinned staging ring, so on a GPU the CPU (or file) side of one chunk overlaps the
// DMA of the previous one. "Toward the device" means to a tier of smaller speed_rank. Pointers
// claiming to be device memory are checked against the device resource: passing host memory as
// device memory is an access_error, as it would be a fault on a real GPU.
#pragma once

#include <strata/exec/staging_ring.hpp>
#include <strata/exec/work_queue.hpp>
#include <strata/io/nvme_store.hpp>
#include <strata/memory/tier_list.hpp>

#include <algorithm>
#include <cstring>
#include <string>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

STRATA_NAMESPACE_BEGIN

namespace detail {
/// One queue's DMA engine access: in the CUDA build a stream and two slot fences; in the host
/// build the "DMA" is a memcpy that is done when it returns.
class dma_lane {
public:
  dma_lane() {
#if STRATA_ENABLE_CUDA
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "copy stream");
    for (auto& e : done_) check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
#endif
  }
  ~dma_lane() {
#if STRATA_ENABLE_CUDA
    for (auto& e : done_) cudaEventDestroy(e);
    cudaStreamDestroy(stream_);
#endif
  }
  dma_lane(const dma_lane&) = delete;
  dma_lane& operator=(const dma_lane&) = delete;

  /// Starts a copy that touches device memory; fence `slot` (0 or 1) marks its end.
  void start(void* dst, const void* src, std::size_t n, int slot) {
#if STRATA_ENABLE_CUDA
    check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream_), "cudaMemcpyAsync");
    check_cuda(cudaEventRecord(done_[slot], stream_), "cudaEventRecord");
#else
    (void)slot;
    std::memcpy(dst, src, n);
#endif
  }
  void wait(int slot) {
#if STRATA_ENABLE_CUDA
    check_cuda(cudaEventSynchronize(done_[slot]), "waiting for a copy");
#else
    (void)slot;
#endif
  }
  void drain() {
#if STRATA_ENABLE_CUDA
    check_cuda(cudaStreamSynchronize(stream_), "waiting for copies");
#endif
  }

private:
#if STRATA_ENABLE_CUDA
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_[2] = {};
#endif
};
}  // namespace detail

class copy_engine {
public:
  /// `device`: the CUDA device ordinal the queues' threads work on (CUDA build; ignored in the
  /// host build, where the device is emulated).
  copy_engine(trace_recorder& trace, const tier_table& tiers, staging_ring& ring,
              memory_resource& device_memory, io::nvme_store* nvme = nullptr, int device = 0)
      : tiers_(tiers), ring_(ring), device_memory_(device_memory), nvme_(nvme),
        up_("h2d", trace, on_device(device)), down_("d2h", trace, on_device(device)),
        io_read_("io-read", trace, on_device(device)),
        io_write_("io-write", trace, on_device(device)) {}
  ~copy_engine() {
    try {
      synchronize();
    } catch (...) {  // failures belong to whoever waits on the copy's event
    }
  }
  copy_engine(const copy_engine&) = delete;
  copy_engine& operator=(const copy_engine&) = delete;

  /// Copies `bytes` from `src` (on tier `from`) to `dst` (on tier `to`) after every event in
  /// `after`; the returned event completes when the bytes have arrived. `label` names the copy
  /// in the trace and in errors. Both tiers must be addressable (not a file tier).
  [[nodiscard]] event copy(void* dst, tier_id to, const void* src, tier_id from, std::size_t bytes,
                           std::string label, std::vector<event> after = {}) {
    const tier_info &dt = tiers_.info(to), &st = tiers_.info(from);
    if (!dt.addressable() || !st.addressable())
      throw config_error("copy '" + label + "': tier " + (dt.addressable() ? st : dt).name +
                         " has no addresses; its data moves with read_nvme and write_nvme");
    check_claim(dst, to, bytes, label, "destination");
    check_claim(src, from, bytes, label, "source");
    if (bytes == 0) return {};
    const bool to_dev = dt.kind == tier_kind::device_memory;
    const bool from_dev = st.kind == tier_kind::device_memory;
    const route r = tiers_.route_between(from, to);
    if (r.kind == route_kind::staged && !to_dev && !from_dev)
      throw config_error("copy '" + label + "': the route " + st.name + " -> " + dt.name +
                         " is staged, but only copies to or from device memory stage through "
                         "the pinned ring; make copy_route of that pair direct");
    const bool toward_device = dt.speed_rank < st.speed_rank;
    const span_kind kind = to_dev ? span_kind::h2d : from_dev ? span_kind::d2h : span_kind::copy;
    auto* d = static_cast<std::byte*>(dst);
    auto* s = static_cast<const std::byte*>(src);
    detail::dma_lane& lane = toward_device ? up_lane_ : down_lane_;
    auto run = [this, &lane, d, s, bytes, r, to_dev, from_dev] {
      if (r.kind == route_kind::direct) {
        if (to_dev || from_dev) {
          lane.start(d, s, bytes, 0);
          lane.drain();
        } else {
          std::memcpy(d, s, bytes);
        }
      } else if (to_dev) {
        to_device(lane, d, bytes, [s](std::byte* slot, std::size_t off, std::size_t len) {
          std::memcpy(slot, s + off, len);
        });
      } else {
        from_device(lane, s, bytes, [d](const std::byte* slot, std::size_t off, std::size_t len) {
          std::memcpy(d + off, slot, len);
        });
      }
    };
    return (toward_device ? up_ : down_).submit(kind, std::move(label), run, std::move(after));
  }

  /// Reads `bytes` of NVMe-tier data `h` into `dst` on tier `to`, on the io-read queue. To the
  /// device it streams through the staging ring (file -> pinned slot -> DMA).
  [[nodiscard]] event read_nvme(void* dst, tier_id to, io::nvme_store::handle h, std::size_t bytes,
                                std::string label, std::vector<event> after = {}) {
    io::nvme_store& store = nvme(label);
    check_claim(dst, to, bytes, label, "destination");
    const tier_info& dt = tiers_.info(to);
    if (!dt.addressable()) throw config_error("copy '" + label + "': nvme -> " + dt.name);
    auto* d = static_cast<std::byte*>(dst);
    const bool to_dev = dt.kind == tier_kind::device_memory;
    auto run = [this, &store, d, to_dev, h, bytes] {
      if (!to_dev) return store.read(h, 0, d, bytes);
      to_device(io_read_lane_, d, bytes, [&](std::byte* slot, std::size_t off, std::size_t len) {
        store.read(h, off, slot, len);
      });
    };
    return io_read_.submit(span_kind::io_read, std::move(label), run, std::move(after));
  }

  /// Writes `bytes` from `src` on tier `from` as the new value of NVMe-tier data `h`, on the
  /// io-write queue. Copy-on-write: until the write has fully succeeded, the old value stays
  /// current, so a failed write loses nothing that was committed before it.
  [[nodiscard]] event write_nvme(io::nvme_store::handle h, const void* src, tier_id from,
                                 std::size_t bytes, std::string label,
                                 std::vector<event> after = {}) {
    io::nvme_store& store = nvme(label);
    check_claim(src, from, bytes, label, "source");
    const tier_info& st = tiers_.info(from);
    if (!st.addressable()) throw config_error("copy '" + label + "': " + st.name + " -> nvme");
    auto* s = static_cast<const std::byte*>(src);
    const bool from_dev = st.kind == tier_kind::device_memory;
    auto run = [this, &store, s, from_dev, h, bytes] {
      auto txn = store.begin_write(h);
      if (!from_dev) {
        txn.write(0, s, bytes);
      } else {
        from_device(io_write_lane_, s, bytes,
                    [&](const std::byte* slot, std::size_t off, std::size_t len) {
                      txn.write(off, slot, len);
                    });
      }
      txn.commit();
    };
    return io_write_.submit(span_kind::io_write, std::move(label), run, std::move(after));
  }

  /// Waits for every copy submitted so far; rethrows a failure of the last one on each queue.
  void synchronize() {
    up_.synchronize();
    down_.synchronize();
    io_read_.synchronize();
    io_write_.synchronize();
  }

private:
  // The start hook of a queue's thread: the CUDA calls it makes (copies, events, and freeing
  // the buffers it may be the last to drop) go to the context's GPU.
  static std::function<void()> on_device(int device) {
#if STRATA_ENABLE_CUDA
    return [device] {
      check_cuda(cudaSetDevice(device),
                 "copy queue: cudaSetDevice(" + std::to_string(device) + ")");
    };
#else
    (void)device;
    return {};
#endif
  }

  io::nvme_store& nvme(const std::string& label) {
    if (!nvme_)
      throw config_error("copy '" + label + "': this context has no NVMe tier; set "
                         "context_config::nvme_directory to a directory on a local NVMe drive");
    return *nvme_;
  }

  void check_claim(const void* p, tier_id t, std::size_t bytes, const std::string& label,
                   const char* side) const {
    if (t == tier_id::device && bytes && !device_memory_.owns(p, bytes))
      throw access_error("copy '" + label + "': the " + side + " is claimed to be on tier '" +
                         tiers_.name(t) + "', but " + format_bytes(bytes) +
                         " from that address are not device memory of this context");
  }

  // Into device memory through two pinned slots: fill(slot, offset, len) produces chunk c on the
  // CPU (a memcpy, a file read) while the DMA of chunk c-1 runs.
  template <class Fill>
  void to_device(detail::dma_lane& lane, std::byte* d, std::size_t bytes, Fill&& fill) {
    auto slots = ring_.acquire(2);
    const std::size_t n = slots.count(), chunk = ring_.slot_bytes();
    for (std::size_t c = 0, off = 0; off < bytes; ++c, off += chunk) {
      const int i = static_cast<int>(c % n);
      const std::size_t len = std::min(chunk, bytes - off);
      if (c >= n) lane.wait(i);  // the slot's previous DMA must be done before refilling it
      fill(slots[static_cast<std::size_t>(i)], off, len);
      lane.start(d + off, slots[static_cast<std::size_t>(i)], len, i);
    }
    lane.drain();
  }

  // Out of device memory through two pinned slots: the DMA of chunk c+1 runs while drain(slot,
  // offset, len) consumes chunk c on the CPU.
  template <class Drain>
  void from_device(detail::dma_lane& lane, const std::byte* s, std::size_t bytes, Drain&& drain) {
    auto slots = ring_.acquire(2);
    const std::size_t n = slots.count(), chunk = ring_.slot_bytes();
    const std::size_t chunks = (bytes + chunk - 1) / chunk;
    auto len_of = [&](std::size_t c) { return std::min(chunk, bytes - c * chunk); };
    auto slot_of = [&](std::size_t c) { return slots[c % n]; };
    auto issue = [&](std::size_t c) {
      lane.start(slot_of(c), s + c * chunk, len_of(c), static_cast<int>(c % n));
    };
    if (chunks) issue(0);
    for (std::size_t c = 0; c < chunks; ++c) {
      if (n > 1 && c + 1 < chunks) issue(c + 1);
      lane.wait(static_cast<int>(c % n));
      drain(slot_of(c), c * chunk, len_of(c));
      if (n == 1 && c + 1 < chunks) issue(c + 1);
    }
  }

  const tier_table& tiers_;
  staging_ring& ring_;
  memory_resource& device_memory_;
  io::nvme_store* nvme_;
  detail::dma_lane up_lane_, down_lane_, io_read_lane_, io_write_lane_;
  // Last: their threads stop before the lanes and the ring they use are destroyed.
  work_queue up_, down_, io_read_, io_write_;
};

STRATA_NAMESPACE_END
