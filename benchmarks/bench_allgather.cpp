// bench_allgather — how fast strata's communicators all-gather, against memcpy of the same bytes.
//
// Benchmarks (per-rank block S = 1 MiB, 16 MiB, 64 MiB; bytes/s, real time):
//   threads/W/S   comm::threads, W = 2 and 4 ranks in this process: rank 0 is the benchmark's
//                 thread, ranks 1..W-1 are threads that run the same all_gathers back to back.
//                 One iteration = all_gather(send, recv, S).wait() on every rank.
//   memcpy/T      std::memcpy of T bytes between two pre-touched buffers on one thread, for every
//                 T that a gather above moves (T = W x W x S): the peer.
//   mpi/2/S       comm::mpi with 2 processes (a build linked to strata::mpi only): the program
//                 starts `mpirun -np 2` on itself after the benchmarks above (one command
//                 still runs everything), and that run's rank 0 reports back. Launched under
//                 mpirun by hand, it measures only this. Fixed iteration counts (every rank must
//                 run the same collectives), 9 repetitions in a row, median.
// The byte count of one all_gather is what all ranks together receive: W ranks x W blocks of S
// (a rank's own block included: the collective writes it into the receive buffer too). That
// is also the bytes a memcpy-based all_gather has to copy, so memcpy/T is the same work done
// by one thread with one call. Buffers are allocated and written before timing, and every
// collective runs once untimed first. Threads and memcpy repetitions (9 of >= 0.1 s) are
// interleaved at random, as in bench_copy; the tables show medians.
//
// Last line, from this run's medians at S = 64 MiB:
//   allgather ratio=X threads=A mpi=B memcpy=C GB/s
//     A: the better of threads/2 and threads/4; B: mpi/2 (n/a when not measured);
//     X = max(A, B) / C, C = memcpy of the same total bytes as the communicator that won.
//
// Options: --no-mpi (skip the mpirun run); a --benchmark_filter is passed on to the MPI run
// (its benchmarks are mpi/2/<S>). $STRATA_MPIEXEC names the launcher (default mpirun).
// The MPI run uses Open MPI's defaults (shared memory with CMA single-copy where the kernel
// allows it); if that run fails, it is repeated with OMPI_MCA_btl_vader_single_copy_mechanism=
// none (CMA is blocked in many containers; the test suite always sets it). An
// OMPI_MCA_btl_vader_single_copy_mechanism in the environment is passed on as it is.
#include <strata/comm/threads.hpp>
#if STRATA_HAVE_MPI
#  include <strata/comm/mpi.hpp>
#endif

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace strata;

constexpr std::int64_t mib = std::int64_t{1} << 20;
constexpr std::int64_t sizes[] = {1 * mib, 16 * mib, 64 * mib};
constexpr std::int64_t ratio_size = 64 * mib;
constexpr int worlds[] = {2, 4};
constexpr int mpi_world = 2;
constexpr double default_min_time_s = 0.1;
constexpr int default_repetitions = 9;
double g_min_time_s = default_min_time_s;  // 0 when the command line sets it
int g_repetitions = default_repetitions;
const char* const child_marker = "STRATA_BENCH_ALLGATHER_CHILD";
std::string g_filter_arg;  // a --benchmark_filter=... given to this run: passed to the MPI run

// ---- memory ----------------------------------------------------------------------------------

using block = std::unique_ptr<std::byte, bench_support::free_deleter>;

block make_block(std::size_t bytes, int pattern) {
  block b(static_cast<std::byte*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)));
  if (!b) throw std::bad_alloc();
  std::memset(b.get(), pattern, bytes);  // commit the pages
  return b;
}

// ---- memcpy baseline ---------------------------------------------------------------------------

/// Source and destination of each memcpy size, kept across the benchmark's calls (Google
/// Benchmark calls it several times per repetition; committing 2 GiB of fresh pages each time
/// would cost more than the copies).
std::map<std::int64_t, std::pair<block, block>> g_memcpy_buffers;

void bm_memcpy(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  auto& [src, dst] = g_memcpy_buffers[state.range(0)];
  try {
    if (!src) src = make_block(bytes, 0x5a);
    if (!dst) dst = make_block(bytes, 0);
  } catch (const std::exception&) {
    state.SkipWithError("out of memory");
    return;
  }
  bench_support::time_memcpy(state, dst.get(), src.get(), bytes);
}

// ---- comm::threads ---------------------------------------------------------------------------

/// One world of W ranks and its buffers, kept across the benchmark's calls (Google Benchmark
/// calls it several times per repetition while it picks an iteration count).
struct thread_setup {
  std::unique_ptr<comm::thread_world> world;
  std::vector<block> send, recv;  // per rank: S and W x S bytes
};
std::map<std::pair<int, std::int64_t>, std::unique_ptr<thread_setup>> g_thread_setups;

thread_setup& setup_for(int w, std::int64_t s) {
  auto& p = g_thread_setups[{w, s}];
  if (!p) {
    p = std::make_unique<thread_setup>();
    p->world = std::make_unique<comm::thread_world>(w, std::chrono::seconds(30));
    for (int r = 0; r < w; ++r) {
      p->send.push_back(make_block(static_cast<std::size_t>(s), 0x10 + r));
      p->recv.push_back(make_block(static_cast<std::size_t>(s) * static_cast<std::size_t>(w), 0));
    }
  }
  return *p;
}

void bm_threads(benchmark::State& state, int w) {
  const std::int64_t s = state.range(0);
  const auto bytes = static_cast<std::size_t>(s);
  thread_setup* setup = nullptr;
  try {
    setup = &setup_for(w, s);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  auto gather = [&](int r) {
    auto i = static_cast<std::size_t>(r);
    setup->world->communicator(r).all_gather(setup->send[i].get(), setup->recv[i].get(), bytes).wait();
  };
  // Ranks 1..w-1 gather back to back until they have done `last` collectives in this call:
  // rank 0 sets it after its timed loop, then runs one more (untimed) so every rank ends on
  // the same count whatever it was doing when it read `last`.
  std::atomic<std::uint64_t> last{std::numeric_limits<std::uint64_t>::max()};
  std::vector<std::thread> ranks;
  for (int r = 1; r < w; ++r)
    ranks.emplace_back([&, r] {
      try {
        for (std::uint64_t done = 0; done < last.load(); ++done) gather(r);
      } catch (...) {  // rank 0 sees the failure too (the world fails) and reports it
      }
    });
  std::string error;
  std::uint64_t count = 0;
  try {
    gather(0);  // warm-up
    ++count;
    for (auto _ : state) {
      gather(0);
      ++count;
    }
    last.store(count + 1);
    gather(0);
  } catch (const std::exception& e) {
    error = e.what();
    setup->world->communicator(0).abort("benchmark: " + error);
  }
  for (auto& t : ranks) t.join();
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(w) * w * s);
}

// ---- comm::mpi -------------------------------------------------------------------------------

#if STRATA_HAVE_MPI
comm::mpi* g_mpi = nullptr;

/// Iterations per repetition: every rank must run the same number of collectives, so it is
/// fixed rather than picked by timing (about 512 MiB received per repetition).
std::int64_t mpi_iterations(std::int64_t s) {
  return std::max<std::int64_t>(3, (512 * mib) / (std::int64_t{mpi_world} * mpi_world * s));
}

void bm_mpi(benchmark::State& state) {
  const std::int64_t s = state.range(0);
  const auto bytes = static_cast<std::size_t>(s);
  comm::mpi& c = *g_mpi;
  const int w = c.size();
  try {
    block send = make_block(bytes, 0x10 + c.rank());
    block recv = make_block(bytes * static_cast<std::size_t>(w), 0);
    c.all_gather(send.get(), recv.get(), bytes).wait();  // warm-up (and staging allocation)
    c.barrier().wait();
    for (auto _ : state) c.all_gather(send.get(), recv.get(), bytes).wait();
    c.barrier().wait();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(w) * w * s);
}

/// Prints nothing: the ranks other than 0 run the same benchmarks silently.
class silent_reporter : public benchmark::BenchmarkReporter {
public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};
#endif

// ---- reporting -------------------------------------------------------------------------------

std::string gb(double v) {
  if (v <= 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// ---- the MPI run -------------------------------------------------------------------------------

bool under_mpirun() {
  const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!n) n = std::getenv("PMI_SIZE");  // MPICH / Hydra
  return n != nullptr;
}

#if STRATA_HAVE_MPI
/// Runs this program under mpirun (2 ranks) with `env` set: its rank 0 prints
/// `mpi-result <S> <GB/s>` lines, which come back here; everything else it prints is passed
/// through, indented. Returns GB/s by S (empty when the run failed, with the reason in `why`).
std::map<std::int64_t, double> run_mpi_once(const std::string& env, std::string& why) {
  std::map<std::int64_t, double> out;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    why = "cannot find this program's path (/proc/self/exe)";
    return out;
  }
  exe[n] = 0;
  const char* launcher = std::getenv("STRATA_MPIEXEC");
  std::string cmd = std::string(launcher && *launcher ? launcher : "mpirun") +
                    " --allow-run-as-root --oversubscribe -np " + std::to_string(mpi_world) +
                    " '" + exe + "'";
  if (!g_filter_arg.empty() && g_filter_arg.find('\'') == std::string::npos)
    cmd += " '" + g_filter_arg + "'";
  if (::access("/usr/bin/timeout", X_OK) == 0) cmd = "/usr/bin/timeout 300 " + cmd;
  std::printf("allgather: MPI run: %s%s\n", env.empty() ? "" : (env + " ").c_str(), cmd.c_str());
  std::fflush(stdout);
  std::FILE* p = ::popen((std::string(child_marker) + "=1 " + env + " " + cmd + " 2>&1").c_str(), "r");
  if (!p) {
    why = "popen failed";
    return out;
  }
  char line[4096];
  while (std::fgets(line, sizeof line, p)) {
    long long s = 0;
    double g = 0;
    if (std::sscanf(line, "mpi-result %lld %lf", &s, &g) == 2) {
      if (g > 0) out[s] = g;
      continue;
    }
    std::printf("  | %s", line);
  }
  const int status = ::pclose(p);
  std::fflush(stdout);
  if (status != 0)
    why = "mpirun exited with status " +
          std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  else if (out.empty())
    why = g_filter_arg.empty() ? "the MPI run printed no results"
                               : "no mpi/2/S benchmark matches " + g_filter_arg;
  return out;
}

/// The MPI measurement: Open MPI's shared-memory transport with its single-copy mechanism
/// (CMA) first; where that fails (it is blocked in many containers), again without it. An
/// OMPI_MCA_btl_vader_single_copy_mechanism in the environment is used as it is.
std::map<std::int64_t, double> run_mpi_child(std::string& why) {
  if (std::getenv("OMPI_MCA_btl_vader_single_copy_mechanism")) return run_mpi_once("", why);
  auto out = run_mpi_once("", why);
  if (!out.empty() && why.empty()) return out;
  if (why.starts_with("no mpi/")) return out;  // filtered out, not failed
  std::printf("allgather: the MPI run failed (%s); again without CMA\n", why.c_str());
  why.clear();
  out = run_mpi_once("OMPI_MCA_btl_vader_single_copy_mechanism=none", why);
  if (!out.empty()) why = "without CMA (btl_vader_single_copy_mechanism=none): " +
                          (why.empty() ? std::string("CMA failed") : why);
  return out;
}

/// Under mpirun: every rank runs mpi/2/S; rank 0 prints the table and the result lines.
int mpi_main(int argc, char** argv, benchmark::ConsoleReporter::OutputOptions console) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc = 0;
  {
    comm::mpi c(MPI_COMM_WORLD, std::chrono::seconds(30));
    g_mpi = &c;
    // Every rank must run the same collectives: no random interleaving, fixed iterations.
    int n = argc;
    benchmark::Initialize(&n, argv);
    for (std::int64_t s : sizes)
      benchmark::RegisterBenchmark(("mpi/" + std::to_string(size)).c_str(), bm_mpi)
          ->Arg(s)
          ->UseRealTime()
          ->Iterations(mpi_iterations(s))
          ->Repetitions(default_repetitions);
    if (rank == 0) {
      std::printf("allgather: comm::mpi, %d ranks (processes), %d repetitions of a fixed number of "
                  "all_gathers each, in a row\n",
                  size, default_repetitions);
      std::fflush(stdout);
      bench_support::bandwidth_reporter reporter(console);
      benchmark::RunSpecifiedBenchmarks(&reporter);
      for (std::int64_t s : sizes)
        std::printf("mpi-result %lld %.4f\n", static_cast<long long>(s),
                    reporter.gbps("mpi/" + std::to_string(size), s));
      if (!std::getenv(child_marker))
        std::printf("allgather ratio=n/a threads=n/a mpi=%s memcpy=n/a GB/s (launched under "
                    "mpirun: MPI only; run it without mpirun for the ratio)\n",
                    gb(reporter.gbps("mpi/" + std::to_string(size), ratio_size)).c_str());
      std::fflush(stdout);
    } else {
      silent_reporter quiet;
      benchmark::RunSpecifiedBenchmarks(&quiet);
    }
    benchmark::Shutdown();
    g_mpi = nullptr;
  }
  MPI_Finalize();
  return rc;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const auto console = bench_support::console_options(argc, argv);
  if (under_mpirun()) {
#if STRATA_HAVE_MPI
    // No colour: mpirun hands the ranks a terminal even when its own output is a pipe.
    return mpi_main(argc, argv,
                    static_cast<benchmark::ConsoleReporter::OutputOptions>(
                        console & ~benchmark::ConsoleReporter::OO_Color));
#else
    std::printf("allgather: launched under mpirun, but this build has no MPI (link strata::mpi); "
                "run it without mpirun\n");
    return 0;
#endif
  }

  bool mpi_wanted = true;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--no-mpi") {
      mpi_wanted = false;
      continue;
    }
    if (a.starts_with("--benchmark_filter=")) g_filter_arg = a;
    args.push_back(argv[i]);
  }
  const bench_support::started run = bench_support::start(args);
  if (!run.ok) return 1;
  if (run.repetitions_given) g_repetitions = 0;
  if (run.min_time_given) g_min_time_s = 0;

  auto tune = [](benchmark::internal::Benchmark* b) {
    b->UseRealTime();
    if (g_min_time_s > 0) b->MinTime(g_min_time_s);
    if (g_repetitions > 0) b->Repetitions(g_repetitions);
  };
  std::set<std::int64_t> totals;
  for (int w : worlds)
    for (std::int64_t s : sizes) totals.insert(std::int64_t{w} * w * s);
  for (std::int64_t s : sizes) totals.insert(std::int64_t{mpi_world} * mpi_world * s);
  auto* mc = benchmark::RegisterBenchmark("memcpy", bm_memcpy);
  for (std::int64_t t : totals) mc->Arg(t);
  tune(mc);
  for (int w : worlds) {
    auto* b = benchmark::RegisterBenchmark(("threads/" + std::to_string(w)).c_str(), bm_threads, w);
    for (std::int64_t s : sizes) b->Arg(s);
    tune(b);
  }
  std::printf("allgather: comm::threads with 2 and 4 ranks in this process, against memcpy of "
              "the same bytes (W x W x S); %d repetitions each, interleaved at random; the table "
              "(medians) prints when all are done\n",
              g_repetitions > 0 ? g_repetitions : 1);
  std::fflush(stdout);

  bench_support::bandwidth_reporter reporter(console);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  g_thread_setups.clear();
  g_memcpy_buffers.clear();

  // MPI: a second run of this program under mpirun.
  std::map<std::int64_t, double> mpi;
  std::string mpi_note;
#if STRATA_HAVE_MPI
  if (mpi_wanted) {
    mpi = run_mpi_child(mpi_note);
  } else {
    mpi_note = "--no-mpi";
  }
#else
  (void)mpi_wanted;
  mpi_note = "this build of bench_allgather is not linked to MPI (strata::mpi; see benchmarks/README.md)";
#endif
  if (mpi.empty()) std::printf("allgather: MPI not measured: %s\n", mpi_note.c_str());
  else if (!mpi_note.empty()) std::printf("allgather: MPI: %s\n", mpi_note.c_str());

  // Per-size summary, GB/s (medians), each communicator against memcpy of the same bytes.
  std::printf("allgather: GB/s by per-rank size S (communicator / memcpy of the same W x W x S "
              "bytes = ratio):\n");
  std::printf("  %-10s %-26s %-26s %-26s\n", "S", "threads/2", "threads/4", "mpi/2");
  for (std::int64_t s : sizes) {
    auto cell = [&](double g, std::int64_t total) {
      const double m = reporter.gbps("memcpy", total);
      char buf[64];
      if (g <= 0) std::snprintf(buf, sizeof buf, "n/a");
      else std::snprintf(buf, sizeof buf, "%.2f / %s = %s", g, gb(m).c_str(), m > 0 ? gb(g / m).c_str() : "n/a");
      return std::string(buf);
    };
    auto it = mpi.find(s);
    std::printf("  %-10s %-26s %-26s %-26s\n", (std::to_string(s / mib) + " MiB").c_str(),
                cell(reporter.gbps("threads/2", s), 4 * s).c_str(),
                cell(reporter.gbps("threads/4", s), 16 * s).c_str(),
                cell(it == mpi.end() ? -1.0 : it->second, 4 * s).c_str());
  }

  // The ratio line, at S = 64 MiB.
  const double t2 = reporter.gbps("threads/2", ratio_size);
  const double t4 = reporter.gbps("threads/4", ratio_size);
  const double threads = std::max(t2, t4);
  const std::int64_t threads_total = (t4 > t2 ? 16 : 4) * ratio_size;
  const double mpi_gbps = mpi.count(ratio_size) ? mpi[ratio_size] : -1.0;
  const bool mpi_wins = mpi_gbps > threads;
  const double best = std::max(threads, mpi_gbps);
  const double base = reporter.gbps("memcpy", mpi_wins ? 4 * ratio_size : threads_total);
  std::fflush(stdout);
  if (best <= 0 || base <= 0) {
    std::printf("allgather ratio=n/a threads=%s mpi=%s memcpy=%s GB/s (needs a communicator and "
                "memcpy at %lld bytes per rank in this run)\n",
                gb(threads).c_str(), gb(mpi_gbps).c_str(), gb(base).c_str(),
                static_cast<long long>(ratio_size));
    return 0;
  }
  std::printf("allgather ratio=%.2f threads=%s mpi=%s memcpy=%s GB/s\n", best / base,
              gb(threads).c_str(), gb(mpi_gbps).c_str(), gb(base).c_str());
  return 0;
}
