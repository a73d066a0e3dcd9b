// bench_copy — how fast strata moves bytes between tiers, against what the machine can do.
//
// Benchmarks (each at 1 MiB, 16 MiB and 64 MiB, reported as bytes/s, real time):
//   memcpy                      std::memcpy between two pre-touched host buffers on this thread:
//                               the STREAM-style limit for the host build.
//   strata/<to><-<from>         ctx.copy(...).wait() for every pair of device, pinned and host.
//                               Copies run on the context's h2d/d2h worker queues; host<->device
//                               stages through the pinned ring, pinned<->device is direct.
//   cudaMemcpyAsync/<to><-<from> (CUDA build, GPU present) plain cudaMemcpyAsync pinned<->device
//                               on one stream: the PCIe/NVLink peak strata's direct route is
//                               measured against.
// Every buffer is allocated and filled (so its pages are committed) before the timed loop, and
// each measured copy runs once untimed first (which also touches the staging ring's slots).
// Each benchmark runs 9 repetitions of >= 0.1 s, interleaved at random with the others', and
// reports their median: on a shared machine the memory bandwidth drifts by tens of percent over
// seconds, and interleaving spreads a slow spell over both sides of the ratio (with 5
// repetitions the ratio still wandered 0.83..0.99 between runs; with 9 it held at 0.93).
// --benchmark_repetitions, --benchmark_min_time and
// --benchmark_enable_random_interleaving=false override these defaults.
//
// Last line, from the medians of this run:
//   host build: copy ratio=X.XX h2d=A d2h=B memcpy=C GB/s
//     ratio = mean(strata device<-pinned, strata pinned<-device) / memcpy, all at 64 MiB
//   CUDA build: copy ratio=X.XX h2d=A d2h=B peak=C GB/s
//     ratio = mean(strata h2d, d2h) / mean(cudaMemcpyAsync h2d, d2h), all at 64 MiB
// A CUDA build on a machine without a usable GPU prints "copy: no GPU: skipped (<CUDA error>)"
// and exits 0 — or 1 where a GPU is required (STRATA_REQUIRE_GPU=1, see core/cuda_check.hpp).
#include <strata/exec/context.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if STRATA_ENABLE_CUDA
#  include <cuda_runtime_api.h>
#endif

namespace {

using strata::tier_id;
using bench_support::free_deleter;

constexpr std::int64_t mib = std::int64_t{1} << 20;
constexpr std::int64_t ratio_bytes = 64 * mib;  // the size the ratio line is computed at
constexpr double default_min_time_s = 0.1;  // per repetition
constexpr int default_repetitions = 9;       // interleaved at random, summarised by their median
// 0 when the command line sets them (--benchmark_min_time, --benchmark_repetitions).
double g_min_time_s = default_min_time_s;
int g_repetitions = default_repetitions;

std::unique_ptr<strata::context> g_ctx;

const char* short_name(tier_id t) {
  switch (t) {
  case tier_id::device: return "device";
  case tier_id::pinned: return "pinned";
  case tier_id::host: return "host";
  case tier_id::nvme: return "nvme";
  }
  return "?";
}

std::string pair_name(tier_id to, tier_id from) {
  return std::string(short_name(to)) + "<-" + short_name(from);
}

void add_sizes(benchmark::internal::Benchmark* b) {
  b->Arg(1 * mib)->Arg(16 * mib)->Arg(64 * mib)->UseRealTime();
  if (g_min_time_s > 0) b->MinTime(g_min_time_s);
  if (g_repetitions > 0) b->Repetitions(g_repetitions);
}

// ---- memcpy baseline -------------------------------------------------------------------------

void bm_memcpy(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  std::unique_ptr<void, free_deleter> src(std::aligned_alloc(4096, bytes));
  std::unique_ptr<void, free_deleter> dst(std::aligned_alloc(4096, bytes));
  if (!src || !dst) {
    state.SkipWithError("aligned_alloc failed");
    return;
  }
  std::memset(src.get(), 0x5a, bytes);  // commit the pages of both sides
  std::memset(dst.get(), 0, bytes);
  bench_support::time_memcpy(state, dst.get(), src.get(), bytes);
}

// ---- strata copies ---------------------------------------------------------------------------

/// Commits the pages of `b` (on tier `t`) by writing `pattern` to all of it. Host-accessible
/// tiers are written directly; the device is written the only way it may be — through a copy
/// (which, on the emulated device, makes the worker take the first-touch faults here, not in
/// the timed loop).
void fill(strata::context& ctx, strata::buffer& b, tier_id t, unsigned char pattern) {
  if (t != tier_id::device) {
    std::memset(b.data(), pattern, b.size());
    return;
  }
  strata::buffer scratch = ctx.allocate(tier_id::pinned, b.size(), "bench: fill scratch");
  std::memset(scratch.data(), pattern, scratch.size());
  ctx.copy(b.data(), tier_id::device, scratch.data(), tier_id::pinned, b.size(), "bench: fill")
      .wait();
}

void bm_strata(benchmark::State& state, tier_id to, tier_id from) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  strata::context& ctx = *g_ctx;
  try {
    strata::buffer src = ctx.allocate(from, bytes, "bench: source");
    strata::buffer dst = ctx.allocate(to, bytes, "bench: destination");
    fill(ctx, src, from, 0x5a);
    fill(ctx, dst, to, 0);
    const std::string label = pair_name(to, from);
    ctx.copy(dst.data(), to, src.data(), from, bytes, label).wait();  // warm-up
    for (auto _ : state) ctx.copy(dst.data(), to, src.data(), from, bytes, label).wait();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

// ---- plain CUDA peak -------------------------------------------------------------------------

#if STRATA_ENABLE_CUDA
void bm_cuda_peak(benchmark::State& state, bool to_device) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  void* host = nullptr;
  void* dev = nullptr;
  cudaStream_t stream = nullptr;
  try {
    strata::check_cuda(cudaHostAlloc(&host, bytes, cudaHostAllocDefault), "cudaHostAlloc");
    strata::check_cuda(cudaMalloc(&dev, bytes), "cudaMalloc");
    strata::check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    std::memset(host, 0x5a, bytes);
    strata::check_cuda(cudaMemsetAsync(dev, 0, bytes, stream), "cudaMemset");
    auto once = [&] {
      strata::check_cuda(to_device ? cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream)
                                   : cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream),
                         "cudaMemcpyAsync");
      strata::check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    };
    once();  // warm-up
    for (auto _ : state) once();
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  if (stream) cudaStreamDestroy(stream);
  if (dev) cudaFree(dev);
  if (host) cudaFreeHost(host);
}
#endif


}  // namespace

int main(int argc, char** argv) {
  // Defaults that a command-line flag overrides: repetitions interleaved at random (start()),
  // and this program's repetitions and minimum time.
  const bench_support::started run = bench_support::start({argv, argv + argc});
  if (!run.ok) return 1;
  if (run.repetitions_given) g_repetitions = 0;
  if (run.min_time_given) g_min_time_s = 0;
  const auto console = run.console;

#if STRATA_ENABLE_CUDA
  // Skips (exit 0) without a GPU, or fails where one is required (STRATA_REQUIRE_GPU=1, or
  // nvidia-smi lists one); the host build measures the emulated device instead.
  if (const int rc = strata::no_gpu_exit_code("copy", 0); rc >= 0) return rc;
#endif

  try {
    strata::context_config config;
    config.device_bytes = std::size_t{512} << 20;  // room for 2 x 64 MiB plus pooled leftovers
    config.pinned_bytes = std::size_t{512} << 20;
    config.staging_slot_bytes = std::size_t{4} << 20;
    config.staging_slots = 4;
    config.trace = false;
    g_ctx = std::make_unique<strata::context>(config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "copy: cannot create the context: %s\n", e.what());
    return 1;
  }

  add_sizes(benchmark::RegisterBenchmark("memcpy", bm_memcpy));
  const std::pair<tier_id, tier_id> pairs[] = {
      {tier_id::device, tier_id::pinned}, {tier_id::pinned, tier_id::device},
      {tier_id::device, tier_id::host},   {tier_id::host, tier_id::device},
      {tier_id::pinned, tier_id::host},   {tier_id::host, tier_id::pinned},
      {tier_id::device, tier_id::device},
  };
  for (auto [to, from] : pairs)
    add_sizes(benchmark::RegisterBenchmark(("strata/" + pair_name(to, from)).c_str(), bm_strata,
                                           to, from));
#if STRATA_ENABLE_CUDA
  add_sizes(benchmark::RegisterBenchmark("cudaMemcpyAsync/device<-pinned", bm_cuda_peak, true));
  add_sizes(benchmark::RegisterBenchmark("cudaMemcpyAsync/pinned<-device", bm_cuda_peak, false));
  std::printf("copy: CUDA build — tier::device is GPU %d; ratio is against cudaMemcpyAsync\n",
              g_ctx->config().device);
#else
  std::printf("copy: host build — tier::device is the emulated arena; ratio is against memcpy\n");
#endif
  if (g_repetitions > 0)
    std::printf("copy: %d repetitions of each benchmark, interleaved at random; the table (medians) "
                "prints when all are done\n",
                g_repetitions);
  std::fflush(stdout);

  bench_support::bandwidth_reporter reporter(console);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  g_ctx.reset();

  const double h2d = reporter.gbps("strata/device<-pinned", ratio_bytes);
  const double d2h = reporter.gbps("strata/pinned<-device", ratio_bytes);
#if STRATA_ENABLE_CUDA
  const double peak_h2d = reporter.gbps("cudaMemcpyAsync/device<-pinned", ratio_bytes);
  const double peak_d2h = reporter.gbps("cudaMemcpyAsync/pinned<-device", ratio_bytes);
  const double base = peak_h2d > 0 && peak_d2h > 0 ? (peak_h2d + peak_d2h) / 2 : -1.0;
  const char* base_name = "peak";
  if (base > 0)
    std::printf("copy: cudaMemcpyAsync peak h2d=%.2f d2h=%.2f GB/s\n", peak_h2d, peak_d2h);
#else
  const double base = reporter.gbps("memcpy", ratio_bytes);
  const char* base_name = "memcpy";
#endif
  std::fflush(stdout);
  if (h2d <= 0 || d2h <= 0 || base <= 0) {
    std::printf("copy ratio=n/a (needs strata/device<-pinned, strata/pinned<-device and the %s "
                "baseline at %lld bytes in this run)\n",
                base_name, static_cast<long long>(ratio_bytes));
    return 0;
  }
  std::printf("copy ratio=%.2f h2d=%.2f d2h=%.2f %s=%.2f GB/s\n", (h2d + d2h) / 2 / base, h2d,
              d2h, base_name, base);
  return 0;
}
