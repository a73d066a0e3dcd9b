// bench_overlap — does ZeRO-Infinity (parameter shards at home on NVMe) train as fast as the same
// model held on the device? The resident run of the same executor is the peer.
//
// The model: `--layers` (default 8) layers, each one dim x dim float matrix (default 1024 x 1024,
// 4 MiB of parameters), with a fixed compute cost per layer from real host arithmetic:
//   forward   y = x W                (batch x dim) . (dim x dim): 2 batch dim^2 flops
//   backward  dW = x^T dy, dx = dy W^T                            4 batch dim^2 flops
//   update    W -= lr dW (SGD), fused into the backward: ex.backward(g, u) updates each layer's
//             shard on the device as soon as its gradient is reduced, and the shard goes home
//             once — no separate step() that would stream the state back in
// x and dy are fixed per layer (a synthetic layer: the cost is what matters, not the values).
// `--batch` (default 128) sets the compute per layer; the default makes one layer's forward
// (~20 ms here) several times the time to read its 4 MiB from the NVMe tier (~6 ms at ~700 MB/s).
//
// Benchmarks (one iteration = one training step: forward, backward+update, then sync() so every
// write-back is inside the timed region), all with comm::solo (world size 1) and Depth = 2:
//   (each with prefetch::lookahead<2>)
//   step/resident    zero_executor<solo, zero3, ...>: shards at home on the device (the peer)
//   step/offload     zero_executor<solo, zero3_offload, ...>: shards at home in host memory
//   step/infinity    zero_executor<solo, zero3_infinity, ...>: shards at home on NVMe, in
//                    --dir (default $STRATA_BENCH_DIR, else nvme-scratch/ beside this
//                    executable, i.e. in the build tree: a real file system with O_DIRECT)
// World size 1: on 2 cores, a second rank would take the core the copy and IO threads overlap
// on, and the run would measure CPU contention instead of overlap. With one rank the all-gather
// and reduce-scatter of stage 3 are copies on the collectives queue.
// Each benchmark runs 2 untimed warm-up steps (first-touch faults in the emulated device, both
// copy-on-write extents of every NVMe tensor written), then 15 repetitions of 1 step,
// interleaved at random with the other benchmarks' repetitions; the table shows medians.
// Counters: fwd/bwd/opt = milliseconds of each phase (opt includes the final sync); bg_cpu =
// CPU milliseconds used by every thread but the compute thread during the step (the copy, IO
// and collectives queues: in the host build the "DMA" is a memcpy on such a thread).
// bytes/s counts the model's parameter bytes once per step (the same for all three, so the
// rates compare as inverse step times).
//
// After the benchmarks, one more step of each is traced (three of infinity, keeping the one with
// the median compute fraction); the summary (busy time per queue), the
// per-layer compute and copy times and, for the infinity step, where compute waited (the
// queues busy while the compute queue was idle, by phase) are printed, and the infinity trace
// is written as Chrome trace JSON (--trace=FILE, default bench_overlap_trace.json in the
// working directory; open it in Perfetto).
//
// Last line:  overlap ratio=X compute_busy=Y
//   X = median infinity step time / median resident step time (goal <= 1.10)
//   Y = compute busy / wall in the (median) traced infinity step
//       (trace_summary::compute_fraction)
//
// Options (before or among Google Benchmark's): --layers=N --batch=N --dim=N --dir=PATH
// --trace=FILE. --benchmark_repetitions and --benchmark_enable_random_interleaving=false
// override the defaults.
#include <strata/comm/solo.hpp>
#include <strata/schedule/executor.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace strata;

constexpr int default_repetitions = 15;  // interleaved at random, summarised by their median
constexpr int warmup_steps = 2;
int g_repetitions = default_repetitions;  // 0 when --benchmark_repetitions is given

struct options {
  std::size_t layers = 8;
  std::size_t batch = 128;
  std::size_t dim = 1024;
  std::string dir;
  std::string trace_file = "bench_overlap_trace.json";
};
options g_opt;

// ---- the synthetic layers ---------------------------------------------------------------------

/// y (B x N) = x (B x K) . w (K x N), row-major; blocked over k so a block of w stays in L2.
void gemm_forward(const float* x, const float* w, float* y, std::size_t B, std::size_t K,
                  std::size_t N) {
  constexpr std::size_t kb = 16;
  std::memset(y, 0, B * N * sizeof(float));
  for (std::size_t k0 = 0; k0 < K; k0 += kb)
    for (std::size_t b = 0; b < B; ++b) {
      float* __restrict yr = y + b * N;
      for (std::size_t k = k0; k < std::min(k0 + kb, K); ++k) {
        const float a = x[b * K + k];
        const float* __restrict wr = w + k * N;
        for (std::size_t n = 0; n < N; ++n) yr[n] += a * wr[n];
      }
    }
}

/// dw (K x N) = x^T dy, dx (B x K) = dy w^T. Writes all of dw. N is a multiple of 8.
void gemm_backward(const float* x, const float* w, const float* dy, float* dw, float* dx,
                   std::size_t B, std::size_t K, std::size_t N) {
  for (std::size_t k = 0; k < K; ++k) {
    float* __restrict dwr = dw + k * N;
    std::memset(dwr, 0, N * sizeof(float));
    for (std::size_t b = 0; b < B; ++b) {
      const float a = x[b * K + k];
      const float* __restrict d = dy + b * N;
      for (std::size_t n = 0; n < N; ++n) dwr[n] += a * d[n];
    }
    const float* __restrict wr = w + k * N;
    for (std::size_t b = 0; b < B; ++b) {
      const float* __restrict d = dy + b * N;
      float acc[8] = {};
      for (std::size_t n = 0; n < N; n += 8)
        for (int j = 0; j < 8; ++j) acc[j] += d[n + j] * wr[n + j];
      dx[b * K + k] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
  }
}

/// The model's inputs: the same for every configuration.
struct model {
  std::size_t layers, batch, dim;
  std::vector<std::vector<float>> x;       // per layer: batch x dim
  std::vector<float> dy, y, dx;            // batch x dim
  std::vector<std::vector<float>> init_w;  // per layer: dim x dim
  float sink = 0;                          // keeps the results alive

  model(std::size_t l, std::size_t b, std::size_t d)
      : layers(l), batch(b), dim(d), x(l), dy(b * d), y(b * d), dx(b * d), init_w(l) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : x) {
      v.resize(b * d);
      for (auto& f : v) f = u(rng);
    }
    for (auto& f : dy) f = u(rng);
    for (auto& v : init_w) {
      v.resize(d * d);
      for (auto& f : v) f = u(rng);
    }
  }
  std::size_t layer_bytes() const { return dim * dim * sizeof(float); }
  std::size_t model_bytes() const { return layers * layer_bytes(); }
};
std::unique_ptr<model> g_model;

struct phase_ms {
  double fwd = 0, bwd = 0, opt = 0;
  double bg_cpu = 0;  // CPU time of every thread but this one (copies, IO, collectives)
};

double cpu_ms(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return 1e3 * static_cast<double>(ts.tv_sec) + 1e-6 * static_cast<double>(ts.tv_nsec);
}

/// One configuration: its context, communicator and executor, type-erased.
class trainer {
public:
  virtual ~trainer() = default;
  virtual const char* name() const = 0;
  virtual phase_ms step() = 0;
  virtual context& ctx() = 0;
};

template <class Bundle>
class trainer_of final : public trainer {
public:
  trainer_of(const char* name, model& m, const std::string& nvme_dir) : name_(name), m_(m) {
    const std::size_t lb = m.layer_bytes();
    context_config cfg;
    // Home (params + grads of every layer, on the device for the resident run) + the
    // executor's rings (3 gathered + 3 shard + 2 full-grad + 2 grad-shard buffers) + slack.
    cfg.device_bytes = (2 * m.layers + 16) * lb + (std::size_t{64} << 20);
    cfg.pinned_bytes = 8 * lb + (std::size_t{64} << 20);
    cfg.staging_slot_bytes = std::size_t{4} << 20;
    cfg.staging_slots = 4;
    cfg.trace = false;
    cfg.nvme_directory = nvme_dir;
    ctx_ = std::make_unique<context>(cfg);
    std::vector<layer_spec> layers;
    for (std::size_t i = 0; i < m.layers; ++i)
      layers.push_back({"L" + std::to_string(i), m.dim * m.dim});
    ex_ = std::make_unique<executor>(*ctx_, comm_, layers, name);
    for (std::size_t i = 0; i < m.layers; ++i) ex_->set_params(i, m.init_w[i]);
  }
  ~trainer_of() override {
    ex_.reset();
    ctx_.reset();
  }

  const char* name() const override { return name_; }
  context& ctx() override { return *ctx_; }

  phase_ms step() override {
    using clock = std::chrono::steady_clock;
    auto ms = [](clock::time_point a, clock::time_point b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    model& m = m_;
    const std::size_t B = m.batch, D = m.dim;
    const double proc0 = cpu_ms(CLOCK_PROCESS_CPUTIME_ID), self0 = cpu_ms(CLOCK_THREAD_CPUTIME_ID);
    const auto t0 = clock::now();
    ex_->forward([&](std::size_t i, const float* w, std::size_t) {
      gemm_forward(m.x[i].data(), w, m.y.data(), B, D, D);
      m.sink += m.y[i];
    });
    const auto t1 = clock::now();
    // The optimizer fused into the backward (stage 3): each layer's shard is updated where
    // the backward left it and goes home once, overlapped with the next layers' compute.
    ex_->backward(
        [&](std::size_t i, const float* w, float* dw, std::size_t) {
          gemm_backward(m.x[i].data(), w, m.dy.data(), dw, m.dx.data(), B, D, D);
          m.sink += m.dx[i];
        },
        [](std::size_t, float* w, const float* dw, std::size_t n) {
          for (std::size_t k = 0; k < n; ++k) w[k] -= 1e-6f * dw[k];
        });
    const auto t2 = clock::now();
    ex_->sync();
    const auto t3 = clock::now();
    const double bg = (cpu_ms(CLOCK_PROCESS_CPUTIME_ID) - proc0) -
                      (cpu_ms(CLOCK_THREAD_CPUTIME_ID) - self0);
    return {ms(t0, t1), ms(t1, t2), ms(t2, t3), bg};
  }

private:
  const char* name_;
  model& m_;
  comm::solo comm_;
  std::unique_ptr<context> ctx_;
  using executor = zero_executor<comm::solo, Bundle, prefetch::lookahead<2>>;
  std::unique_ptr<executor> ex_;
};

std::vector<std::unique_ptr<trainer>> g_trainers;
/// Every timed step in the order it ran: (configuration, wall ms).
std::vector<std::pair<std::string, double>> g_sequence;

void bm_step(benchmark::State& state, trainer* t) {
  phase_ms sum;
  try {
    for (auto _ : state) {
      const auto begin = std::chrono::steady_clock::now();
      const phase_ms p = t->step();
      g_sequence.emplace_back(
          t->name(),
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count());
      sum.fwd += p.fwd;
      sum.bwd += p.bwd;
      sum.opt += p.opt;
      sum.bg_cpu += p.bg_cpu;
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["fwd"] = sum.fwd / n;
  state.counters["bwd"] = sum.bwd / n;
  state.counters["opt"] = sum.opt / n;
  state.counters["bg_cpu"] = sum.bg_cpu / n;
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(g_model->model_bytes()));
}

// ---- reporting -------------------------------------------------------------------------------

using bench_support::median;

/// Keeps each repetition's milliseconds per step and phase times by benchmark name, for the
/// summary lines and the ratio (the table itself is bench_support's: medians in registration
/// order).
class capturing_reporter : public bench_support::ordered_median_reporter {
public:
  using ordered_median_reporter::ordered_median_reporter;

  /// Median milliseconds of `what` ("step", "fwd", "bwd", "opt", "bg_cpu") for benchmark
  /// `name`.
  double ms(const std::string& name, const char* what) const {
    auto it = samples_.find(name);
    if (it == samples_.end()) return -1.0;
    auto jt = it->second.find(what);
    return jt == it->second.end() ? -1.0 : median(jt->second);
  }

protected:
  void capture(const Run& r) override {
    if (r.iterations <= 0) return;
    auto& s = samples_[r.run_name.function_name];
    s["step"].push_back(1e3 * r.real_accumulated_time / static_cast<double>(r.iterations));
    for (const char* c : {"fwd", "bwd", "opt", "bg_cpu"})
      if (auto it = r.counters.find(c); it != r.counters.end()) s[c].push_back(it->second.value);
  }

private:
  std::map<std::string, std::map<std::string, std::vector<double>>> samples_;
};

// ---- the traced step --------------------------------------------------------------------------

using interval = std::pair<double, double>;

double overlap_length(const std::vector<interval>& a, const std::vector<interval>& b) {
  double both = 0;  // a and b: sorted, disjoint
  for (std::size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    const double lo = std::max(a[i].first, b[j].first), hi = std::min(a[i].second, b[j].second);
    if (hi > lo) both += hi - lo;
    (a[i].second < b[j].second ? i : j)++;
  }
  return both;
}

struct traced_step {
  std::vector<span> spans;
  trace_summary summary;
};

traced_step trace_one_step(trainer& t) {
  trace_recorder& rec = t.ctx().trace();
  rec.clear();
  rec.set_enabled(true);
  t.step();
  rec.set_enabled(false);
  traced_step out;
  out.spans = rec.spans();
  rec.clear();
  out.summary = trace_recorder::summarize(out.spans);
  return out;
}

/// Mean duration (ms) of the spans of `kind` whose label starts with `prefix`, and their count.
std::pair<double, std::size_t> mean_span_ms(const std::vector<span>& spans, span_kind kind,
                                            std::string_view prefix) {
  double total = 0;
  std::size_t n = 0;
  for (auto& s : spans)
    if (s.kind == kind && std::string_view(s.label).starts_with(prefix)) {
      total += s.end_us - s.begin_us;
      ++n;
    }
  return {n ? total / 1000.0 / static_cast<double>(n) : 0.0, n};
}

void print_summary(const char* name, const traced_step& t) {
  std::printf("overlap: traced %s step: %s", name, t.summary.to_string().c_str());
}

/// Where compute waited in a traced step: the stretches of the step's wall time during which
/// the compute queue was idle, split by the phase of the compute that came next (the one that
/// waited), and for each the time each other queue was busy during them.
void print_waits(const traced_step& t) {
  const auto& spans = t.spans;
  if (spans.empty()) return;
  double first = spans.front().begin_us, last = spans.front().end_us;
  std::vector<interval> compute;
  std::vector<std::pair<interval, std::string>> compute_labelled;
  std::map<std::string, std::vector<interval>> by_queue;
  for (auto& s : spans) {
    first = std::min(first, s.begin_us);
    last = std::max(last, s.end_us);
    if (s.kind == span_kind::compute) {
      compute.emplace_back(s.begin_us, s.end_us);
      compute_labelled.push_back({{s.begin_us, s.end_us}, s.label});
    } else {
      by_queue[s.queue].emplace_back(s.begin_us, s.end_us);
    }
  }
  auto merged = merge_intervals(compute);
  std::sort(compute_labelled.begin(), compute_labelled.end());
  // Idle stretches of the compute queue within [first, last], each labelled by the phase of
  // the compute span that ends it ("tail" after the last one: the final sync).
  std::map<std::string, std::vector<interval>> idle_by_phase;
  auto phase_of = [&](double end) -> std::string {
    auto it = std::lower_bound(compute_labelled.begin(), compute_labelled.end(), end,
                               [](const auto& c, double v) { return c.first.first < v; });
    if (it == compute_labelled.end()) return "tail (sync)";
    const std::string& l = it->second;
    return l.substr(0, l.find(' '));
  };
  double cursor = first;
  for (auto& [b, e] : merged) {
    if (b > cursor) idle_by_phase[phase_of(b)].emplace_back(cursor, b);
    cursor = std::max(cursor, e);
  }
  if (last > cursor) idle_by_phase["tail (sync)"].emplace_back(cursor, last);

  std::vector<std::string> queues;
  for (auto& [q, iv] : by_queue) {
    iv = merge_intervals(iv);
    queues.push_back(q);
  }
  std::printf("overlap: where compute waited in the traced infinity step (ms; a queue's column is "
              "the time it was busy while compute was idle):\n");
  std::printf("  %-12s %9s", "before", "idle");
  for (auto& q : queues) std::printf(" %12s", q.c_str());
  std::printf(" %12s\n", "no queue");
  for (const char* phase : {"forward", "backward", "optimizer", "tail (sync)"}) {
    auto it = idle_by_phase.find(phase);
    if (it == idle_by_phase.end()) continue;
    auto idle = merge_intervals(it->second);
    double total = 0;
    for (auto& [b, e] : idle) total += e - b;
    std::printf("  %-12s %9.1f", phase, total / 1000.0);
    std::vector<interval> any;
    for (auto& q : queues) {
      std::printf(" %12.1f", overlap_length(idle, by_queue[q]) / 1000.0);
      any.insert(any.end(), by_queue[q].begin(), by_queue[q].end());
    }
    std::printf(" %12.1f\n", (total - overlap_length(idle, merge_intervals(any))) / 1000.0);
  }
}

/// Takes this program's own options out of argv (Google Benchmark refuses unknown ones).
bool parse_options(std::vector<char*>& args) {
  std::vector<char*> rest;
  for (char* a : args) {
    auto value = [&](std::string_view name) { return bench_support::option_value(a, name); };
    auto count = [](const std::string& v) -> std::size_t {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      return (end && *end == 0 && n > 0) ? static_cast<std::size_t>(n) : 0;
    };
    if (auto v = value("--layers")) {
      if (!(g_opt.layers = count(*v))) return false;
    } else if (auto v2 = value("--batch")) {
      if (!(g_opt.batch = count(*v2))) return false;
    } else if (auto v3 = value("--dim")) {
      g_opt.dim = count(*v3);
      if (!g_opt.dim || g_opt.dim % 8) return false;
    } else if (auto v4 = value("--dir")) {
      g_opt.dir = *v4;
    } else if (auto v5 = value("--trace")) {
      g_opt.trace_file = *v5;
    } else {
      rest.push_back(a);
    }
  }
  args = std::move(rest);
  g_opt.dir = bench_support::scratch_dir(g_opt.dir);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  if (!parse_options(args)) {
    std::fprintf(stderr, "overlap: bad option (--layers=N --batch=N --dim=N(multiple of 8) "
                         "--dir=PATH --trace=FILE)\n");
    return 2;
  }
  const bench_support::started run = bench_support::start(args);
  if (!run.ok) return 1;
  if (run.repetitions_given) g_repetitions = 0;
  const auto console = run.console;

#if STRATA_ENABLE_CUDA
  // The layer compute is host arithmetic on the parameters: it needs host-addressable device
  // memory, which only the emulated device is.
  (void)console;
  std::printf("overlap: CUDA build: skipped (the synthetic layers compute on the host; run the "
              "host build)\n");
  return 0;
#else
  const std::string scratch = g_opt.dir + "/overlap-" + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::create_directories(scratch, ec);
  if (ec) {
    std::fprintf(stderr, "overlap: cannot create %s: %s\n", scratch.c_str(), ec.message().c_str());
    return 1;
  }
  struct remove_dir {
    std::string path;
    ~remove_dir() {
      std::error_code e;
      std::filesystem::remove_all(path, e);
    }
  } cleanup{scratch};

  g_model = std::make_unique<model>(g_opt.layers, g_opt.batch, g_opt.dim);
  const model& m = *g_model;
  std::printf("overlap: %zu layers of %zu x %zu floats (%.1f MiB each), batch %zu: %.0f MFLOP "
              "forward + %.0f MFLOP backward per layer; world size 1 (comm::solo), Depth 2\n",
              m.layers, m.dim, m.dim, double(m.layer_bytes()) / (1 << 20), m.batch,
              2.0 * double(m.batch * m.dim * m.dim) / 1e6,
              4.0 * double(m.batch * m.dim * m.dim) / 1e6);
  std::printf("overlap: NVMe home in %s\n", scratch.c_str());
  std::fflush(stdout);
  try {
    g_trainers.push_back(std::make_unique<trainer_of<zero3>>("resident", *g_model, ""));
    g_trainers.push_back(std::make_unique<trainer_of<zero3_offload>>("offload", *g_model, ""));
    g_trainers.push_back(
        std::make_unique<trainer_of<zero3_infinity>>("infinity", *g_model, scratch));
    for (auto& t : g_trainers)
      for (int s = 0; s < warmup_steps; ++s) t->step();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "overlap: setup failed: %s\n", e.what());
    g_trainers.clear();  // before the scratch directory goes
    return 1;
  }

  for (auto& t : g_trainers) {
    auto* b = benchmark::RegisterBenchmark((std::string("step/") + t->name()).c_str(), bm_step,
                                           t.get());
    b->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
    if (g_repetitions > 0) b->Repetitions(g_repetitions);
  }
  if (g_repetitions > 0)
    std::printf("overlap: %d repetitions of one step each, interleaved at random; the table "
                "(medians) prints when all are done\n",
                g_repetitions);
  std::fflush(stdout);

  capturing_reporter reporter(console);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  // One traced step of each, after the timed ones; three of infinity, keeping the one with the
  // median compute fraction (one slow read on a shared disk can dominate a single step).
  std::map<std::string, traced_step> traced;
  try {
    for (auto& t : g_trainers) {
      if (std::string_view(t->name()) != "infinity") {
        traced[t->name()] = trace_one_step(*t);
        continue;
      }
      std::vector<traced_step> three;
      for (int k = 0; k < 3; ++k) three.push_back(trace_one_step(*t));
      std::sort(three.begin(), three.end(), [](const traced_step& a, const traced_step& b) {
        return a.summary.compute_fraction < b.summary.compute_fraction;
      });
      std::printf("overlap: traced infinity steps: compute busy %.2f, %.2f, %.2f (the median "
                  "one is shown)\n",
                  three[0].summary.compute_fraction, three[1].summary.compute_fraction,
                  three[2].summary.compute_fraction);
      traced[t->name()] = std::move(three[1]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "overlap: traced step failed: %s\n", e.what());
    g_trainers.clear();
    return 1;
  }
  for (auto& t : g_trainers) print_summary(t->name(), traced[t->name()]);
  const traced_step& inf = traced["infinity"];
  {
    auto [fwd, nf] = mean_span_ms(inf.spans, span_kind::compute, "forward");
    auto [bwd, nb] = mean_span_ms(inf.spans, span_kind::compute, "backward");
    auto [opt, no] = mean_span_ms(inf.spans, span_kind::compute, "optimizer");
    auto [rd, nr] = mean_span_ms(inf.spans, span_kind::io_read, "");
    auto [wr, nw] = mean_span_ms(inf.spans, span_kind::io_write, "");
    auto [ag, na] = mean_span_ms(inf.spans, span_kind::all_gather, "");
    auto [rs, ns] = mean_span_ms(inf.spans, span_kind::reduce_scatter, "");
    std::printf("overlap: per layer in the traced infinity step (mean ms): compute forward %.1f, "
                "backward %.1f, optimizer %.1f; io-read %.1f (x%zu), io-write %.1f (x%zu), "
                "all-gather %.1f, reduce-scatter %.1f — %.2f GB/s read, %.2f GB/s written\n",
                fwd, bwd, opt, rd, nr, wr, nw, ag, rs,
                rd > 0 ? double(m.layer_bytes()) / rd / 1e6 : 0.0,
                wr > 0 ? double(m.layer_bytes()) / wr / 1e6 : 0.0);
    (void)nf, (void)nb, (void)no, (void)na, (void)ns;
  }
  print_waits(inf);
  try {
    trace_recorder rec;
    for (auto& s : inf.spans) rec.record(s.queue, s.kind, s.label, s.begin_us, s.end_us);
    rec.write_chrome_json(g_opt.trace_file);
    std::printf("overlap: infinity step trace written to %s\n", g_opt.trace_file.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "overlap: %s\n", e.what());
  }
  g_trainers.clear();

  const double res = reporter.ms("step/resident", "step");
  const double off = reporter.ms("step/offload", "step");
  const double inf_ms = reporter.ms("step/infinity", "step");
  if (res > 0 && inf_ms > 0) {
    std::printf("overlap: median step ms (forward / backward / step+sync): resident %.1f "
                "(%.1f / %.1f / %.1f), offload %.1f (%.1f / %.1f / %.1f), infinity %.1f "
                "(%.1f / %.1f / %.1f)\n",
                res, reporter.ms("step/resident", "fwd"), reporter.ms("step/resident", "bwd"),
                reporter.ms("step/resident", "opt"), off, reporter.ms("step/offload", "fwd"),
                reporter.ms("step/offload", "bwd"), reporter.ms("step/offload", "opt"), inf_ms,
                reporter.ms("step/infinity", "fwd"), reporter.ms("step/infinity", "bwd"),
                reporter.ms("step/infinity", "opt"));
    const double fb_res = reporter.ms("step/resident", "fwd") + reporter.ms("step/resident", "bwd");
    const double fb_inf = reporter.ms("step/infinity", "fwd") + reporter.ms("step/infinity", "bwd");
    std::printf("overlap: forward+backward only: infinity / resident = %.2f; the step (optimizer "
                "+ sync) adds %.1f ms against %.1f ms\n",
                fb_inf / fb_res, reporter.ms("step/infinity", "opt"),
                reporter.ms("step/resident", "opt"));
    std::printf("overlap: CPU time of the other threads (copies, IO, collectives) per step, "
                "median ms: resident %.1f, offload %.1f, infinity %.1f\n",
                reporter.ms("step/resident", "bg_cpu"), reporter.ms("step/offload", "bg_cpu"),
                reporter.ms("step/infinity", "bg_cpu"));
  }
  {
    // Each infinity step against the resident step(s) run right before and after it: slow
    // spells of a shared machine hit both sides of such a pair.
    std::vector<double> paired;
    for (std::size_t k = 0; k < g_sequence.size(); ++k) {
      if (g_sequence[k].first != "infinity") continue;
      std::vector<double> near;
      for (std::size_t j = k; j-- > 0;)
        if (g_sequence[j].first == "resident") {
          near.push_back(g_sequence[j].second);
          break;
        }
      for (std::size_t j = k + 1; j < g_sequence.size(); ++j)
        if (g_sequence[j].first == "resident") {
          near.push_back(g_sequence[j].second);
          break;
        }
      if (near.empty()) continue;
      double mean = 0;
      for (double v : near) mean += v / static_cast<double>(near.size());
      paired.push_back(g_sequence[k].second / mean);
    }
    if (!paired.empty()) {
      std::sort(paired.begin(), paired.end());
      std::printf("overlap: paired (each infinity step / the resident steps run next to it): "
                  "median %.2f, range %.2f .. %.2f over %zu steps\n",
                  median(paired), paired.front(), paired.back(), paired.size());
    }
  }
  {
    auto busy = [&](const char* name) {
      const auto& b = traced[name].summary.busy_us_by_kind;
      auto it = b.find(span_kind::compute);
      return it == b.end() ? 0.0 : it->second / 1000.0;
    };
    const double r = busy("resident"), i = busy("infinity");
    const double rw = traced["resident"].summary.wall_us / 1000.0;
    const double iw = traced["infinity"].summary.wall_us / 1000.0;
    if (r > 0 && rw > 0)
      std::printf("overlap: traced steps: wall resident %.1f ms, infinity %.1f ms (x%.2f); "
                  "compute busy (the same arithmetic) resident %.1f ms, infinity %.1f ms (x%.2f)\n",
                  rw, iw, iw / rw, r, i, i / r);
  }
  std::fflush(stdout);
  if (res <= 0 || inf_ms <= 0) {
    std::printf("overlap ratio=n/a compute_busy=%.2f (needs step/resident and step/infinity in "
                "this run)\n",
                inf.summary.compute_fraction);
    return 0;
  }
  std::printf("overlap ratio=%.2f compute_busy=%.2f\n", inf_ms / res, inf.summary.compute_fraction);
  return 0;
#endif
}
