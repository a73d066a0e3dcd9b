// benchmarks/bench_support.hpp — what the benchmark programs share.
//
// What lives here:
//   start()        Google Benchmark's start as every program here makes it: repetitions
//                  interleaved at random unless a flag says otherwise, unknown flags refused,
//                  and whether --benchmark_repetitions / --benchmark_min_time were given (so a
//                  program's own defaults step aside)
//   reporting      median(); console_options(), the console reporter options Google Benchmark
//                  would pick for its own reporter; ordered_median_reporter, a console reporter
//                  that holds rows back and prints one median row (and the coefficient of
//                  variation) per benchmark in registration order; bandwidth_reporter, which
//                  also keeps every repetition's bytes/s for a ratio line
//   own options    option_value() for `--name=value` (a program takes its own options out of
//                  argv before Google Benchmark sees the rest), parse_size() for 64M, 1GiB, ...
//   scratch        bench_common.hpp's exe_dir(), scratch_dir(), is_tmpfs(), median(), included here
//   time_memcpy()  the memcpy peer that bandwidth ratios are measured against
//   free_deleter   for aligned_alloc'd buffers
// The programs run interleaved repetitions and summarise them by their median the same way, so
// the code that does it is kept once: a fix to one table would otherwise have to be made in
// every program. What does not: anything a benchmark measures, its defaults and its ratio line
// (each program's own .cpp). The examples' helpers (examples/common/) are not used here: the
// benchmarks pass unknown flags on to Google Benchmark and report through it, a different job.
#pragma once

#include "bench_common.hpp"

#include <benchmark/benchmark.h>

#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bench_support {

struct free_deleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

/// The console options the library would pick for its own reporter: colour when stdout is a
/// terminal (or as --benchmark_color says), a counters table with --benchmark_counters_tabular.
/// A program that passes its own reporter to RunSpecifiedBenchmarks has to work these out
/// itself: the library only applies them to the reporter it makes.
inline benchmark::ConsoleReporter::OutputOptions console_options(int argc, char** argv) {
  bool color = ::isatty(STDOUT_FILENO) != 0 && std::getenv("NO_COLOR") == nullptr;
  bool tabular = false;
  auto value_of = [](std::string_view arg, std::string_view flag, std::string_view& value) {
    if (arg.substr(0, flag.size()) != flag) return false;
    arg.remove_prefix(flag.size());
    if (arg.empty()) value = "true";
    else if (arg.front() == '=') value = arg.substr(1);
    else return false;
    return true;
  };
  auto truthy = [](std::string_view v) {
    return v == "true" || v == "yes" || v == "1" || v == "always" || v == "on";
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view v;
    if (value_of(argv[i], "--benchmark_color", v)) color = v == "auto" ? color : truthy(v);
    if (value_of(argv[i], "--benchmark_counters_tabular", v)) tabular = truthy(v);
  }
  int opts = benchmark::ConsoleReporter::OO_None;
  if (color) opts |= benchmark::ConsoleReporter::OO_Color;
  if (tabular) opts |= benchmark::ConsoleReporter::OO_Tabular;
  return static_cast<benchmark::ConsoleReporter::OutputOptions>(opts);
}

/// The console reporter, showing one median row (and the coefficient of variation) per
/// benchmark. Interleaved repetitions finish in random order, so rows are held back and printed
/// in registration order at the end; --benchmark_out=FILE still gets every repetition. Each
/// successful repetition goes to capture() first, for the program's own summary lines.
class ordered_median_reporter : public benchmark::ConsoleReporter {
public:
  explicit ordered_median_reporter(OutputOptions opts) : ConsoleReporter(opts) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Iteration && !r.error_occurred) capture(r);
      const bool summary = r.run_type == Run::RT_Aggregate &&
                           (r.aggregate_name == "median" || r.aggregate_name == "cv");
      if (summary || r.error_occurred || r.repetitions <= 1) held_.push_back(r);
    }
  }

  void Finalize() override {
    std::stable_sort(held_.begin(), held_.end(), [](const Run& a, const Run& b) {
      return std::pair(a.family_index, a.per_family_instance_index) <
             std::pair(b.family_index, b.per_family_instance_index);
    });
    if (!held_.empty()) ConsoleReporter::ReportRuns(held_);
    held_.clear();
    ConsoleReporter::Finalize();
  }

protected:
  /// One repetition that ran without error (run_type RT_Iteration).
  virtual void capture(const Run&) {}

private:
  std::vector<Run> held_;
};

/// An ordered_median_reporter that keeps each repetition's bytes/s by "<family>/<arg>", for the
/// ratio lines of the bandwidth benchmarks.
class bandwidth_reporter : public ordered_median_reporter {
public:
  using ordered_median_reporter::ordered_median_reporter;

  /// Median GB/s (1e9 bytes/s) over the repetitions of `family` at argument `arg`; negative if
  /// it did not run.
  double gbps(const std::string& family, std::int64_t arg) const {
    auto it = bytes_per_s_.find(family + "/" + std::to_string(arg));
    if (it == bytes_per_s_.end()) return -1.0;
    const double m = median(it->second);
    return m > 0 ? m / 1e9 : -1.0;
  }

protected:
  void capture(const Run& r) override {
    auto it = r.counters.find("bytes_per_second");
    if (it != r.counters.end())
      bytes_per_s_[r.run_name.function_name + "/" + r.run_name.args].push_back(it->second.value);
  }

private:
  std::map<std::string, std::vector<double>> bytes_per_s_;
};

/// The memcpy peer of a bandwidth benchmark: one warm-up copy, then one copy of `bytes` per
/// iteration, counted as bytes processed.
inline void time_memcpy(benchmark::State& state, void* dst, const void* src, std::size_t bytes) {
  std::memcpy(dst, src, bytes);  // warm-up
  for (auto _ : state) {
    std::memcpy(dst, src, bytes);
    benchmark::DoNotOptimize(dst);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

/// What start() learnt from the command line.
struct started {
  bool ok = false;  // false: Google Benchmark reported an unknown flag (exit 1)
  benchmark::ConsoleReporter::OutputOptions console{};  // console_options() of the flags
  bool repetitions_given = false;  // --benchmark_repetitions...: the program's default steps aside
  bool min_time_given = false;     // --benchmark_min_time...: likewise
};

/// Starts Google Benchmark with `args`: argv without the program's own options (args[0] is the
/// program). Repetitions are interleaved at random, so that a slow spell of the machine spreads
/// over every benchmark instead of landing on one side of a ratio;
/// --benchmark_enable_random_interleaving=false on the command line still wins (it comes later).
inline started start(std::vector<char*> args) {
  started s;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string_view a = args[i];
    s.repetitions_given = s.repetitions_given || a.starts_with("--benchmark_repetitions");
    s.min_time_given = s.min_time_given || a.starts_with("--benchmark_min_time");
  }
  s.console = console_options(static_cast<int>(args.size()), args.data());
  std::string interleave = "--benchmark_enable_random_interleaving=true";
  args.insert(args.begin() + (args.empty() ? 0 : 1), interleave.data());
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  s.ok = !benchmark::ReportUnrecognizedArguments(n, args.data());
  return s;
}

/// The value of `--name=value` when `arg` is that option, else nothing.
inline std::optional<std::string> option_value(std::string_view arg, std::string_view name) {
  if (arg.starts_with(name) && arg.size() > name.size() && arg[name.size()] == '=')
    return std::string(arg.substr(name.size() + 1));
  return std::nullopt;
}

/// A size in bytes: digits, then optionally K, M, G or T (powers of 1024), each also as KiB /
/// KB / Ki, or B for bytes. Nothing for anything else.
inline std::optional<std::size_t> parse_size(std::string_view s) {
  std::size_t i = 0;
  std::uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + static_cast<unsigned>(s[i++] - '0');
  if (i == 0) return std::nullopt;
  std::string_view unit = s.substr(i);
  std::uint64_t mult = 1;
  if (!unit.empty()) {
    switch (unit[0]) {
    case 'k': case 'K': mult = std::uint64_t{1} << 10; break;
    case 'm': case 'M': mult = std::uint64_t{1} << 20; break;
    case 'g': case 'G': mult = std::uint64_t{1} << 30; break;
    case 't': case 'T': mult = std::uint64_t{1} << 40; break;
    case 'b': case 'B': mult = 1; break;
    default: return std::nullopt;
    }
    unit.remove_prefix(1);
    if (!(unit.empty() || unit == "i" || unit == "iB" || unit == "B" || unit == "ib"))
      return std::nullopt;
  }
  return static_cast<std::size_t>(v * mult);
}

}  // namespace bench_support
