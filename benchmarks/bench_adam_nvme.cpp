// bench_adam_nvme — ZeRO-Infinity's optimizer step with its state on NVMe: does streaming the
// master weights and both Adam moments through four pinned buffer sets cost max(IO, compute),
// rather than IO + compute? The peers are the same IO done by the bare store, and the same
// update done in memory, in the same run.
//
// The state: --size (default 256 MiB) of fp32 master weights in --groups (default 8) groups of
// unequal sizes, plus m and v: 768 MiB on the NVMe tier. Gradients and the parameter copy are
// bf16 (mixed precision: the forward runs on bf16 parameters, the backward gives bf16
// gradients).
//
// Benchmarks (one iteration each; --benchmark_repetitions, default 11, interleaved at random):
//   step/streamed  optim::streamed_adam::step over the whole state, sub-groups of --sub-group
//                  elements (default 2 Mi: 8 MiB per array, 4 sets x 3 arrays = 96 MiB pinned):
//                  read sub-group c+1 || update c || write c-1, commit at the end
//   io/store       the bare io::nvme_store moving the same bytes the same way: one thread
//                  reads the three tensors (master, m, v: read() of each, whole), another
//                  writes three (begin_write + write of the whole + commit), at the same time —
//                  the IO the step has to do, in the largest calls, with nothing else running
//   io/read        the reads alone (piece)
//   io/write       the writes alone (piece)
//   adam/memory    optim::adam_update over the same elements in host memory (master, m, v,
//                  bf16 gradients, bf16 copy), the library's default SIMD level and threads
// All of it in --dir (default $STRATA_BENCH_DIR, else nvme-scratch/ beside this executable,
// i.e. the build tree's file system; tmpfs/ramfs is refused), in one store: the context's.
// One untimed step and one untimed round of each IO first (both copy-on-write extents of every
// tensor exist before timing).
//
// After the table, one more streamed step is traced: busy time of the io-read, io-write and
// update queues and how much of the update overlapped IO.
//
// Last line:  adam-nvme ratio=X step=A io=B adam=C ms
//   A, B, C: medians of step/streamed, io/store, adam/memory; X = A / max(B, C). Goal: X <= 1.15.
//
// Options: --size=N[K|M|G] --groups=N --sub-group=N (elements) --dir=PATH --engine=auto|uring|
// posix (STRATA_IO_ENGINE wins) --trace=FILE (the traced step as Chrome trace JSON)
// --simd=auto|scalar|avx2|avx512 --threads=N (the update's path and threads, for both the
// streamed step and the in-memory peer: --simd=scalar --threads=1 makes the update as slow as
// the IO, where hiding one behind the other matters most).
#include <strata/optim/streamed_adam.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace strata;
using optim::adam_step_scalars;

constexpr int default_repetitions = 11;
int g_repetitions = default_repetitions;  // 0 when --benchmark_repetitions is given

struct options {
  std::size_t size = std::size_t{256} << 20;  // bytes of fp32 master weights
  std::size_t groups = 8;
  std::size_t sub_group = std::size_t{2} << 20;
  std::string dir, engine = "auto", trace_file;
  optim::simd_level simd = optim::simd_level::automatic;
  unsigned threads = 0;
};
options g_opt;

using bench_support::option_value;
using bench_support::parse_size;

bool parse_options(std::vector<char*>& args) {
  std::vector<char*> rest;
  for (char* a : args) {
    auto value = [&](std::string_view name) { return option_value(a, name); };
    if (auto v = value("--size")) {
      auto n = parse_size(*v);
      if (!n || *n == 0 || *n % 4) return false;
      g_opt.size = *n;
    } else if (auto v2 = value("--groups")) {
      g_opt.groups = std::strtoull(v2->c_str(), nullptr, 10);
      if (!g_opt.groups) return false;
    } else if (auto v3 = value("--sub-group")) {
      auto n = parse_size(*v3);
      if (!n || *n == 0) return false;
      g_opt.sub_group = *n;
    } else if (auto v4 = value("--dir")) {
      g_opt.dir = *v4;
    } else if (auto v5 = value("--engine")) {
      g_opt.engine = *v5;
    } else if (auto v6 = value("--trace")) {
      g_opt.trace_file = *v6;
    } else if (auto v7 = value("--simd")) {
      if (*v7 == "scalar") g_opt.simd = optim::simd_level::scalar;
      else if (*v7 == "avx2") g_opt.simd = optim::simd_level::avx2;
      else if (*v7 == "avx512") g_opt.simd = optim::simd_level::avx512;
      else if (*v7 == "auto") g_opt.simd = optim::simd_level::automatic;
      else return false;
    } else if (auto v8 = value("--threads")) {
      g_opt.threads = static_cast<unsigned>(std::strtoul(v8->c_str(), nullptr, 10));
    } else {
      rest.push_back(a);
    }
  }
  args = std::move(rest);
  g_opt.dir = bench_support::scratch_dir(g_opt.dir);
  return true;
}

// ---- the state ----------------------------------------------------------------------------------

struct setup {
  std::unique_ptr<context> ctx;
  std::vector<optim::group_spec> groups;
  std::size_t elements = 0;
  optim::adam_params params;
  // The streamed optimizer and its inputs.
  std::unique_ptr<optim::streamed_adam> opt;
  std::vector<std::vector<bf16>> grads, copies;
  // The in-memory peer.
  std::vector<std::vector<float>> master, m, v;
  std::vector<std::vector<bf16>> mem_copies;
  std::uint64_t mem_t = 0;
  // The bare-store peer: three tensors read, three written, whole.
  std::vector<io::nvme_store::handle> sources, targets;
  std::vector<std::unique_ptr<float[], bench_support::free_deleter>> read_buf, write_buf;

  ~setup() {
    opt.reset();
    if (ctx) {
      for (auto h : sources) ctx->nvme().destroy(h);
      for (auto h : targets) ctx->nvme().destroy(h);
    }
  }
};
std::unique_ptr<setup> g;

float* aligned_floats(std::size_t n) {
  void* p = std::aligned_alloc(4096, std::max<std::size_t>(4096, (n * 4 + 4095) / 4096 * 4096));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, n * 4);
  return static_cast<float*>(p);
}

void make_setup(const std::string& dir) {
  g = std::make_unique<setup>();
  context_config cfg;
  cfg.nvme_directory = dir;
  cfg.io.kind = g_opt.engine;
  cfg.pinned_bytes = std::size_t{2} << 30;
  g->ctx = std::make_unique<context>(cfg);
  const std::size_t n = g_opt.size / sizeof(float);
  // Unequal groups (like a model's embedding and blocks), summing to n.
  std::size_t left = n;
  const std::size_t even = n / g_opt.groups, skew = even / 8;
  for (std::size_t i = 0; i < g_opt.groups; ++i) {
    const std::size_t share = i + 1 == g_opt.groups ? left
                              : std::min(left, i % 2 ? even + skew + 3 : even - skew - 1);
    g->groups.push_back({"group" + std::to_string(i), share});
    left -= share;
  }
  g->elements = n;
  g->params.weight_decay = 0.1f;

  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  optim::streamed_adam_config sc;
  sc.sub_group = g_opt.sub_group;
  sc.simd = g_opt.simd;
  sc.threads = g_opt.threads;
  g->opt = std::make_unique<optim::streamed_adam>(*g->ctx, g->groups, sc, "adam");
  for (std::size_t i = 0; i < g->groups.size(); ++i) {
    const std::size_t k = g->groups[i].numel;
    std::vector<float> w(k);
    for (auto& x : w) x = u(rng);
    g->opt->set_master(i, w);
    g->master.push_back(w);
    g->m.emplace_back(k, 0.0f);
    g->v.emplace_back(k, 0.0f);
    std::vector<bf16> grad(k);
    for (auto& x : grad) x = bf16(0.01f * u(rng));
    g->grads.push_back(std::move(grad));
    g->copies.emplace_back(k);
    g->mem_copies.emplace_back(k);
  }

  io::nvme_store& store = g->ctx->nvme();
  const std::size_t bytes = n * sizeof(float);
  for (int k = 0; k < 3; ++k) {
    g->read_buf.emplace_back(aligned_floats(n));
    g->write_buf.emplace_back(aligned_floats(n));
    for (std::size_t i = 0; i < n; ++i) g->write_buf.back()[i] = float(i % 1000) * 1e-3f;
    g->sources.push_back(store.create(bytes, "source" + std::to_string(k)));
    g->targets.push_back(store.create(bytes, "target" + std::to_string(k)));
    store.write(g->sources.back(), g->write_buf.back().get(), bytes);
  }
}

// ---- the measured operations
// ----------------------------------------------------------------------

void streamed_step() {
  std::vector<std::span<const bf16>> grads;
  std::vector<std::span<bf16>> copies;
  for (auto& x : g->grads) grads.emplace_back(x);
  for (auto& x : g->copies) copies.emplace_back(x);
  g->opt->step(adam_step_scalars::make(g->params, g->opt->t() + 1), grads, copies);
}

void store_reads() {
  io::nvme_store& store = g->ctx->nvme();
  for (int k = 0; k < 3; ++k)
    store.read(g->sources[k], 0, g->read_buf[k].get(), g->elements * sizeof(float));
}
void store_writes() {
  io::nvme_store& store = g->ctx->nvme();
  for (int k = 0; k < 3; ++k)
    store.write(g->targets[k], g->write_buf[k].get(), g->elements * sizeof(float));
}
void store_both() {
  std::exception_ptr failure;
  std::thread reader([&] {
    try {
      store_reads();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  store_writes();
  reader.join();
  if (failure) std::rethrow_exception(failure);
}

void memory_step() {
  ++g->mem_t;
  const auto k = adam_step_scalars::make(g->params, g->mem_t);
  for (std::size_t i = 0; i < g->groups.size(); ++i)
    optim::adam_update<bf16, bf16>(k, g->master[i], g->m[i], g->v[i],
                                   std::span<const bf16>(g->grads[i]), g->mem_copies[i].data(),
                                   g_opt.simd, g_opt.threads);
}

void run_one(benchmark::State& state, void (*op)()) {
  for (auto _ : state) {
    try {
      op();
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
  // Bytes of optimizer state moved (read + written): the same for every benchmark here,
  // except the read-only and write-only pieces, which move half.
  const bool half = op == &store_reads || op == &store_writes;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>((half ? 3 : 6) * g->elements * sizeof(float)));
}

class capturing_reporter : public bench_support::ordered_median_reporter {
public:
  using ordered_median_reporter::ordered_median_reporter;
  double ms(const std::string& name) const {
    auto it = samples_.find(name);
    return it == samples_.end() ? -1.0 : bench_support::median(it->second);
  }

protected:
  void capture(const Run& r) override {
    if (r.iterations > 0)
      samples_[r.run_name.function_name].push_back(1e3 * r.real_accumulated_time /
                                                   static_cast<double>(r.iterations));
  }

private:
  std::map<std::string, std::vector<double>> samples_;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  if (!parse_options(args)) {
    std::fprintf(stderr, "adam-nvme: bad option (--size=N[K|M|G], a multiple of 4; --groups=N; "
                         "--sub-group=N; --dir=PATH; --engine=auto|uring|posix; --trace=FILE; "
                         "--simd=auto|scalar|avx2|avx512; --threads=N)\n");
    return 2;
  }
  const bench_support::started run = bench_support::start(args);
  if (!run.ok) return 1;
  if (run.repetitions_given) g_repetitions = 0;
  const auto console = run.console;

  std::error_code ec;
  std::filesystem::create_directories(g_opt.dir, ec);
  if (ec || !std::filesystem::is_directory(g_opt.dir)) {
    std::fprintf(stderr, "adam-nvme: '%s' is not a directory (set --dir or STRATA_BENCH_DIR)\n",
                 g_opt.dir.c_str());
    return 1;
  }
  if (bench_support::is_tmpfs(g_opt.dir)) {
    std::fprintf(stderr, "adam-nvme: '%s' is on tmpfs/ramfs: that measures memory, not a disk; "
                         "set --dir or STRATA_BENCH_DIR to a directory on the NVMe file system\n",
                 g_opt.dir.c_str());
    return 1;
  }

  try {
    make_setup(g_opt.dir);
    const auto& o = *g->opt;
    std::printf("adam-nvme: %zu groups, %zu elements: %s of fp32 master weights + m + v = %s on "
                "NVMe in %s (%s); bf16 gradients and parameter copy\n",
                g->groups.size(), g->elements, format_bytes(g->elements * 4).c_str(),
                format_bytes(3 * g->elements * 4).c_str(), g_opt.dir.c_str(),
                g->ctx->nvme().io().name());
    std::printf("adam-nvme: sub-groups of %zu elements; plan:\n%s", o.sub_group(),
                o.plan().to_string(g->ctx.get()).c_str());
    std::printf("adam-nvme: update path %s, threads %u (0: the library's choice)\n",
                optim::simd_level_name(g_opt.simd == optim::simd_level::automatic
                                           ? optim::detect_simd() : g_opt.simd),
                g_opt.threads);
    std::fflush(stdout);
    // Untimed: one step (every tensor gets its second version), one round of each IO.
    streamed_step();
    store_both();
    store_writes();
    memory_step();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adam-nvme: setup failed: %s\n", e.what());
    g.reset();
    return 1;
  }

  auto reg = [&](const char* name, void (*op)()) {
    auto* b = benchmark::RegisterBenchmark(name, [op](benchmark::State& s) { run_one(s, op); });
    b->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
    if (g_repetitions > 0) b->Repetitions(g_repetitions);
  };
  reg("step/streamed", streamed_step);
  reg("io/store", store_both);
  reg("io/read", store_reads);
  reg("io/write", store_writes);
  reg("adam/memory", memory_step);
  capturing_reporter reporter(console);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  // One traced step: how busy each queue was, and how much of the update overlapped IO.
  try {
    auto& trace = g->ctx->trace();
    trace.clear();
    streamed_step();
    const auto spans = trace.spans();
    const auto sum = trace_recorder::summarize(spans);
    const double upd = sum.busy_us_by_kind.count(span_kind::optimizer)
                           ? sum.busy_us_by_kind.at(span_kind::optimizer) : 0.0;
    const double rd = sum.busy_us_by_kind.count(span_kind::io_read)
                          ? sum.busy_us_by_kind.at(span_kind::io_read) : 0.0;
    const double wr = sum.busy_us_by_kind.count(span_kind::io_write)
                          ? sum.busy_us_by_kind.at(span_kind::io_write) : 0.0;
    auto io_as_one = spans;  // reads and writes as one kind: the update's overlap with any IO
    for (auto& sp : io_as_one)
      if (sp.kind == span_kind::io_write) sp.kind = span_kind::io_read;
    const double upd_io =
        trace_recorder::overlap_us(io_as_one, span_kind::optimizer, span_kind::io_read);
    std::printf(
        "adam-nvme: traced step: wall %.1f ms; io-read busy %.1f ms, io-write busy %.1f ms, "
        "update busy %.1f ms (overlapping reads or writes: %.1f ms)\n",
        sum.wall_us / 1e3, rd / 1e3, wr / 1e3, upd / 1e3, upd_io / 1e3);
    if (!g_opt.trace_file.empty()) {
      trace.write_chrome_json(g_opt.trace_file);
      std::printf("adam-nvme: trace written to %s\n", g_opt.trace_file.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adam-nvme: traced step failed: %s\n", e.what());
  }

  const double step = reporter.ms("step/streamed"), io = reporter.ms("io/store"),
               adam = reporter.ms("adam/memory");
  const double rd = reporter.ms("io/read"), wr = reporter.ms("io/write");
  g.reset();
  if (step <= 0 || io <= 0 || adam <= 0) {
    std::printf("adam-nvme ratio=n/a (needs step/streamed, io/store and adam/memory in the run)\n");
    return 0;
  }
  const double state_gb = 6.0 * double(g_opt.size) / 1e9;
  std::printf("adam-nvme: pieces (medians): reads alone %.1f ms, writes alone %.1f ms, both at "
              "once %.1f ms (%.2f GB/s), in-memory update %.1f ms; streamed step %.1f ms "
              "(%.2f GB/s of state read + written)\n",
              rd, wr, io, state_gb / (io / 1e3), adam, step, state_gb / (step / 1e3));
  std::printf("adam-nvme ratio=%.2f step=%.1f io=%.1f adam=%.1f ms\n", step / std::max(io, adam),
              step, io, adam);
  return 0;
}
