// strata/exec/copy_engine.hpp — asynchronous copies between any two tiers, staged where needed.
//
// A copy goes on the h2d queue when it moves data toward the device (to a faster tier) and on
// the d2h queue otherwise, so fetches and write-backs overlap each other and compute. The route
// trait decides the mechanics: a direct route is one memcpy / cudaMemcpyAsync; a staged route
// (host <-> device) streams through two slots of the pinned staging ring, so the CPU copy of
// one chunk overlaps the DMA of the previous one on a GPU. Pointers claiming to be device memory
// are checked against the device resource: passing host memory as device memory is an
// access_error, as it would be a fault on a real GPU. The NVMe tier's copies belong to the IO
// engine; until one is configured, they are refused with a config_error.
#pragma once

#include <strata/exec/staging_ring.hpp>
#include <strata/exec/work_queue.hpp>
#include <strata/memory/tier.hpp>

#include <algorithm>
#include <cstring>
#include <string>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

STRATA_NAMESPACE_BEGIN

class copy_engine {
public:
  copy_engine(trace_recorder& trace, staging_ring& ring, memory_resource& device_memory)
      : ring_(ring), device_memory_(device_memory), up_("h2d", trace), down_("d2h", trace) {
#if STRATA_ENABLE_CUDA
    check_cuda(cudaStreamCreateWithFlags(&up_stream_, cudaStreamNonBlocking), "h2d stream");
    check_cuda(cudaStreamCreateWithFlags(&down_stream_, cudaStreamNonBlocking), "d2h stream");
    for (auto& e : slot_done_) check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
#endif
  }
  ~copy_engine() {
    synchronize_quietly();
#if STRATA_ENABLE_CUDA
    for (auto& e : slot_done_) cudaEventDestroy(e);
    cudaStreamDestroy(up_stream_);
    cudaStreamDestroy(down_stream_);
#endif
  }
  copy_engine(const copy_engine&) = delete;
  copy_engine& operator=(const copy_engine&) = delete;

  /// Copies `bytes` from `src` (on tier `from`) to `dst` (on tier `to`) after every event in
  /// `after`; the returned event completes when the bytes have arrived. `label` names the copy
  /// in the trace and in errors.
  event copy(void* dst, tier_id to, const void* src, tier_id from, std::size_t bytes,
             std::string label, std::vector<event> after = {}) {
    if (to == tier_id::nvme || from == tier_id::nvme)
      throw config_error("copy '" + label + "': tier nvme is reached through an IO engine, and "
                         "this context has none configured");
    check_claim(dst, to, bytes, label, "destination");
    check_claim(src, from, bytes, label, "source");
    if (bytes == 0) return {};
    const bool toward_device = static_cast<int>(to) < static_cast<int>(from);
    const span_kind kind = to == tier_id::device     ? span_kind::h2d
                           : from == tier_id::device ? span_kind::d2h
                                                     : span_kind::copy;
    const route r = route_between(from, to);
    auto* d = static_cast<std::byte*>(dst);
    auto* s = static_cast<const std::byte*>(src);
    auto run = [this, d, s, bytes, r, to, from, toward_device] {
      if (r.kind == route_kind::direct)
        direct(d, to, s, from, bytes, toward_device);
      else if (to == tier_id::device)
        staged_up(d, s, bytes);
      else
        staged_down(d, s, bytes);
    };
    return (toward_device ? up_ : down_).submit(kind, std::move(label), run, std::move(after));
  }

  work_queue& h2d_queue() noexcept { return up_; }
  work_queue& d2h_queue() noexcept { return down_; }

  /// Waits for every copy submitted so far; rethrows a failure of the last one on each queue.
  void synchronize() {
    up_.synchronize();
    down_.synchronize();
  }

private:
  void check_claim(const void* p, tier_id t, std::size_t bytes, const std::string& label,
                   const char* side) const {
    if (t == tier_id::device && bytes && !device_memory_.owns(p, bytes))
      throw access_error("copy '" + label + "': the " + side + " is claimed to be on tier '" +
                         tier_name(t) + "', but " + format_bytes(bytes) +
                         " from that address are not device memory of this context");
  }

  void synchronize_quietly() noexcept {
    try {
      synchronize();
    } catch (...) {
    }
  }

#if STRATA_ENABLE_CUDA
  cudaStream_t stream_for(bool toward_device) const { return toward_device ? up_stream_ : down_stream_; }
#endif

  void direct(std::byte* d, tier_id to, const std::byte* s, tier_id from, std::size_t bytes,
              bool toward_device) {
#if STRATA_ENABLE_CUDA
    if (to == tier_id::device || from == tier_id::device) {
      cudaStream_t st = stream_for(toward_device);
      check_cuda(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDefault, st), "cudaMemcpyAsync");
      check_cuda(cudaStreamSynchronize(st), "cudaMemcpyAsync");
      return;
    }
#else
    (void)to, (void)from, (void)toward_device;
#endif
    std::memcpy(d, s, bytes);
  }

  // host -> device through pinned slots: the CPU fills slot i while the DMA of slot i-1 runs.
  void staged_up(std::byte* d, const std::byte* s, std::size_t bytes) {
    auto slots = ring_.acquire(2);
    const std::size_t n = slots.count(), chunk = ring_.slot_bytes();
    for (std::size_t c = 0, off = 0; off < bytes; ++c, off += chunk) {
      const std::size_t i = c % n, len = std::min(chunk, bytes - off);
#if STRATA_ENABLE_CUDA
      if (c >= n) check_cuda(cudaEventSynchronize(slot_done_[i]), "staging h2d");
      std::memcpy(slots[i], s + off, len);
      check_cuda(cudaMemcpyAsync(d + off, slots[i], len, cudaMemcpyHostToDevice, up_stream_),
                 "staging h2d");
      check_cuda(cudaEventRecord(slot_done_[i], up_stream_), "staging h2d");
#else
      std::memcpy(slots[i], s + off, len);
      std::memcpy(d + off, slots[i], len);
#endif
    }
#if STRATA_ENABLE_CUDA
    check_cuda(cudaStreamSynchronize(up_stream_), "staging h2d");
#endif
  }

  // device -> host through pinned slots: the DMA of chunk c+1 runs while the CPU empties c.
  void staged_down(std::byte* d, const std::byte* s, std::size_t bytes) {
    auto slots = ring_.acquire(2);
    const std::size_t n = slots.count(), chunk = ring_.slot_bytes();
    const std::size_t chunks = (bytes + chunk - 1) / chunk;
    auto len_of = [&](std::size_t c) { return std::min(chunk, bytes - c * chunk); };
#if STRATA_ENABLE_CUDA
    auto issue = [&](std::size_t c) {
      check_cuda(cudaMemcpyAsync(slots[c % n], s + c * chunk, len_of(c), cudaMemcpyDeviceToHost,
                                 down_stream_),
                 "staging d2h");
      check_cuda(cudaEventRecord(slot_done_[2 + c % n], down_stream_), "staging d2h");
    };
    issue(0);
    for (std::size_t c = 0; c < chunks; ++c) {
      if (n > 1 && c + 1 < chunks) issue(c + 1);
      check_cuda(cudaEventSynchronize(slot_done_[2 + c % n]), "staging d2h");
      std::memcpy(d + c * chunk, slots[c % n], len_of(c));
      if (n == 1 && c + 1 < chunks) issue(c + 1);
    }
#else
    for (std::size_t c = 0; c < chunks; ++c) {
      std::memcpy(slots[c % n], s + c * chunk, len_of(c));
      std::memcpy(d + c * chunk, slots[c % n], len_of(c));
    }
#endif
  }

  staging_ring& ring_;
  memory_resource& device_memory_;
#if STRATA_ENABLE_CUDA
  cudaStream_t up_stream_ = nullptr, down_stream_ = nullptr;
  cudaEvent_t slot_done_[4] = {};  // [0,1]: h2d slots, [2,3]: d2h slots
#endif
  work_queue up_, down_;  // last: their threads stop before the streams above are destroyed
};

STRATA_NAMESPACE_END
