// bench_adam — the host AdamW update against the memory bandwidth of this machine.
//
// The case the optimizer is for: fp32 master weights, m and v, fp32 gradients, and a bf16
// parameter copy written back in the same pass ("fp32 master with bf16 parameter copy-back"),
// over N = 32 Mi parameters (576 MiB of arrays: far beyond any cache), on every core (the
// default thread pool, threads = 0).
//
// Benchmarks (real time, bytes/s, 9 repetitions of >= 0.3 s interleaved at random, medians):
//   adam/<level>/N   optim::adam_update<float, bf16> at simd_level scalar, avx2 and avx512
//                    (each level this CPU has). Bytes per parameter: read p, m, v, g (16),
//                    write p, m, v (12) and the bf16 copy (2) = 30.
//   triad/M          STREAM's triad a[i] = b[i] + s * c[i] over three float arrays of the same
//                    total size as Adam's five (M = 1.5 N: 3 x 4 x M = 18 x N bytes), split
//                    over the same pool with the same minimum chunk; 12 bytes per element
//                    (STREAM's count). The loop is AVX2 where the CPU has it.
// Both counts leave out the write-allocate reads the CPU adds for lines it only writes (the
// copy for Adam: 2 more bytes; a for the triad: 4 more), as STREAM does. The line before the
// last gives the ratio with them counted too (32 vs 16 bytes), which is what the memory bus
// carries.
//
// Last lines, from this run's medians:
//   adam: scalar=A avx2=B avx512=C GB/s (D params/s at the widest level)
//   adam ratio=X adam=A triad=B GB/s, params/s=P, bus ratio=Y
//     X = Adam GB/s at the widest level this CPU has (simd_level::automatic) / triad GB/s.
//     Goal: >= 0.8 (the update is a streaming pass; its arithmetic must hide under the loads).
//
// Options (before the Google Benchmark flags): --elements=N (default 33554432).
// --benchmark_repetitions, --benchmark_min_time and --benchmark_enable_random_interleaving=false
// override the defaults above.
#include <strata/exec/thread_pool.hpp>
#include <strata/optim/adam.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#if STRATA_X86_SIMD
#  include <immintrin.h>
#endif

namespace {

using bench_support::free_deleter;
using strata::bf16;
namespace optim = strata::optim;

constexpr double default_min_time_s = 0.3;  // per repetition: ~3 passes over 576 MiB
constexpr int default_repetitions = 9;
double g_min_time_s = default_min_time_s;
int g_repetitions = default_repetitions;
std::size_t g_n = std::size_t{32} << 20;  // parameters

constexpr std::int64_t adam_bytes_per_param = 4 * 4 + 3 * 4 + 2;  // read p m v g, write p m v copy
constexpr std::int64_t triad_bytes_per_elem = 3 * 4;               // read b c, write a
constexpr std::size_t adam_array_bytes_per_param = 4 * 4 + 2;       // p, m, v, g, copy

template <class T>
std::unique_ptr<T[], free_deleter> alloc(std::size_t n) {
  // 4 KiB alignment: page-aligned, so every array starts on a cache line like strata's buffers.
  const std::size_t bytes = (n * sizeof(T) + 4095) / 4096 * 4096;
  return std::unique_ptr<T[], free_deleter>(static_cast<T*>(std::aligned_alloc(4096, bytes)));
}

/// Writes every element with the pool's threads, so pages are committed before timing.
template <class T, class F>
void fill(T* a, std::size_t n, F value) {
  strata::default_thread_pool().parallel_for(n, 1 << 16, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) a[i] = value(i);
  });
}

struct adam_arrays {
  std::unique_ptr<float[], free_deleter> p, m, v, g;
  std::unique_ptr<bf16[], free_deleter> copy;
};

adam_arrays& adam_data() {
  static adam_arrays a = [] {
    adam_arrays r{alloc<float>(g_n), alloc<float>(g_n), alloc<float>(g_n), alloc<float>(g_n),
                  alloc<bf16>(g_n)};
    if (!r.p || !r.m || !r.v || !r.g || !r.copy) return r;
    // Values that stay normal floats over many steps (no subnormal slow paths in the timing).
    fill(r.p.get(), g_n, [](std::size_t i) { return 1.0f + static_cast<float>(i % 1000) * 1e-3f; });
    fill(r.m.get(), g_n, [](std::size_t) { return 0.0f; });
    fill(r.v.get(), g_n, [](std::size_t) { return 0.0f; });
    fill(r.g.get(), g_n,
         [](std::size_t i) { return (static_cast<float>(i % 7) - 3.0f) * 1e-2f + 1e-3f; });
    fill(r.copy.get(), g_n, [](std::size_t) { return bf16{}; });
    return r;
  }();
  return a;
}

void bm_adam(benchmark::State& state, optim::simd_level level) {
  adam_arrays& a = adam_data();
  if (!a.p || !a.m || !a.v || !a.g || !a.copy) {
    state.SkipWithError("aligned_alloc failed");
    return;
  }
  const std::size_t n = g_n;
  optim::adam_params h;
  h.weight_decay = 0.01f;  // AdamW
  const auto k = optim::adam_step_scalars::make(h, 10);
  const std::span<float> p(a.p.get(), n), m(a.m.get(), n), v(a.v.get(), n);
  const std::span<const float> g(a.g.get(), n);
  try {
    optim::adam_update<float, bf16>(k, p, m, v, g, a.copy.get(), level, 0);  // warm-up
    for (auto _ : state) {
      optim::adam_update<float, bf16>(k, p, m, v, g, a.copy.get(), level, 0);
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const auto items = state.iterations() * static_cast<std::int64_t>(n);
  state.SetBytesProcessed(items * adam_bytes_per_param);
  state.SetItemsProcessed(items);
}

// ---- STREAM triad ------------------------------------------------------------------------------

struct triad_arrays {
  std::unique_ptr<float[], free_deleter> a, b, c;
};

std::size_t triad_n() { return g_n * adam_array_bytes_per_param / 12; }

triad_arrays& triad_data() {
  // Adam's arrays hold 18 bytes per parameter (p, m, v, g: 4 each; copy: 2); three float
  // arrays of 1.5 N elements hold the same.
  static triad_arrays t = [] {
    const std::size_t n = triad_n();
    triad_arrays r{alloc<float>(n), alloc<float>(n), alloc<float>(n)};
    if (!r.a || !r.b || !r.c) return r;
    fill(r.a.get(), n, [](std::size_t) { return 0.0f; });
    fill(r.b.get(), n, [](std::size_t i) { return static_cast<float>(i % 100); });
    fill(r.c.get(), n, [](std::size_t i) { return static_cast<float>(i % 10); });
    return r;
  }();
  return t;
}

#if STRATA_X86_SIMD
__attribute__((target("avx2,fma"))) void triad_avx2(float* a, const float* b, const float* c,
                                                     float s, std::size_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_ps(a + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(c + i), _mm256_loadu_ps(b + i)));
    _mm256_storeu_ps(a + i + 8,
                     _mm256_fmadd_ps(vs, _mm256_loadu_ps(c + i + 8), _mm256_loadu_ps(b + i + 8)));
  }
  for (; i < n; ++i) a[i] = b[i] + s * c[i];
}
#endif

void triad_plain(float* __restrict a, const float* __restrict b, const float* __restrict c,
                 float s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

void bm_triad(benchmark::State& state) {
  triad_arrays& t = triad_data();
  if (!t.a || !t.b || !t.c) {
    state.SkipWithError("aligned_alloc failed");
    return;
  }
  const std::size_t n = triad_n();
  bool avx2 = false;
#if STRATA_X86_SIMD
  avx2 = strata::cpu().has_avx2_path();
#endif
  float* a = t.a.get();
  const float* b = t.b.get();
  const float* c = t.c.get();
  auto once = [&] {
    // The same pool, the same minimum chunk and cache-line-aligned boundaries as adam_update.
    strata::parallel_for_options opt;
    opt.align = 16;
    strata::default_thread_pool().parallel_for(n, std::size_t{64} << 10, opt,
                                               [&](std::size_t lo, std::size_t hi) {
#if STRATA_X86_SIMD
      if (avx2) return triad_avx2(a + lo, b + lo, c + lo, 3.0f, hi - lo);
#endif
      triad_plain(a + lo, b + lo, c + lo, 3.0f, hi - lo);
    });
  };
  once();  // warm-up
  for (auto _ : state) {
    once();
    benchmark::ClobberMemory();
  }
  (void)avx2;
  const auto items = state.iterations() * static_cast<std::int64_t>(n);
  state.SetBytesProcessed(items * triad_bytes_per_elem);
  state.SetItemsProcessed(items);
}

void add_options(benchmark::internal::Benchmark* b, std::int64_t arg) {
  b->Arg(arg)->UseRealTime()->Unit(benchmark::kMillisecond);
  if (g_min_time_s > 0) b->MinTime(g_min_time_s);
  if (g_repetitions > 0) b->Repetitions(g_repetitions);
}

std::string gb(double x) {
  if (x <= 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (const auto v = bench_support::option_value(argv[i], "--elements")) {
      g_n = std::strtoull(v->c_str(), nullptr, 10);
      if (g_n == 0) {
        std::fprintf(stderr, "adam: --elements= needs a positive count\n");
        return 1;
      }
      continue;
    }
    args.push_back(argv[i]);
  }
  const bench_support::started run = bench_support::start(args);
  if (!run.ok) return 1;
  if (run.repetitions_given) g_repetitions = 0;
  if (run.min_time_given) g_min_time_s = 0;
  const auto console = run.console;

  const optim::simd_level widest = optim::detect_simd();
  const unsigned threads = strata::default_thread_pool().concurrency();
  std::printf("adam: %zu parameters (%.0f MiB of arrays), %u threads, CPU features: %s; "
              "automatic = %s\n",
              g_n, static_cast<double>(g_n * adam_array_bytes_per_param) / (1 << 20), threads,
              strata::cpu().describe().c_str(), optim::simd_level_name(widest));

  const auto arg = static_cast<std::int64_t>(g_n);
  const optim::simd_level levels[] = {optim::simd_level::scalar, optim::simd_level::avx2,
                                      optim::simd_level::avx512};
  for (optim::simd_level l : levels) {
    if (l == optim::simd_level::avx2 && !strata::cpu().has_avx2_path()) continue;
    if (l == optim::simd_level::avx512 && !strata::cpu().has_avx512_path()) continue;
    if (l != optim::simd_level::scalar && !STRATA_X86_SIMD) continue;
    add_options(benchmark::RegisterBenchmark(
                    (std::string("adam/") + optim::simd_level_name(l)).c_str(), bm_adam, l),
                arg);
  }
  add_options(benchmark::RegisterBenchmark("triad", bm_triad),
              static_cast<std::int64_t>(triad_n()));
  if (g_repetitions > 0)
    std::printf("adam: %d repetitions of each benchmark, interleaved at random; the table "
                "(medians) prints when all are done\n",
                g_repetitions);
  std::fflush(stdout);

  bench_support::bandwidth_reporter reporter(console);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  const double scalar = reporter.gbps("adam/scalar", arg);
  const double avx2 = reporter.gbps("adam/avx2", arg);
  const double avx512 = reporter.gbps("adam/avx512", arg);
  const double adam = reporter.gbps(std::string("adam/") + optim::simd_level_name(widest), arg);
  const double triad = reporter.gbps("triad", static_cast<std::int64_t>(triad_n()));
  const double params = adam > 0 ? adam * 1e9 / adam_bytes_per_param : -1;
  std::printf("adam: scalar=%s avx2=%s avx512=%s GB/s (%.3g params/s at %s)\n", gb(scalar).c_str(),
              gb(avx2).c_str(), gb(avx512).c_str(), params, optim::simd_level_name(widest));
  if (adam <= 0 || triad <= 0) {
    std::printf("adam ratio=n/a adam=%s triad=%s GB/s (needs adam/%s and triad in this run)\n",
                gb(adam).c_str(), gb(triad).c_str(), optim::simd_level_name(widest));
    return 0;
  }
  // With the write-allocate reads: Adam 32 bytes per parameter, the triad 16 per element.
  const double bus = (adam * 32 / 30) / (triad * 16 / 12);
  std::printf("adam ratio=%.2f adam=%.2f triad=%.2f GB/s, params/s=%.3g, bus ratio=%.2f\n",
              adam / triad, adam, triad, params, bus);
  return 0;
}
