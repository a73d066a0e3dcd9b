// benchmarks/bench_support.hpp — the reporting machinery bench_copy, bench_allgather and
// bench_overlap share.
//
// What lives here: median(); console_options(), the console reporter options Google Benchmark
// would pick for its own reporter; ordered_median_reporter, a console reporter that holds rows
// back and prints one median row (and the coefficient of variation) per benchmark in
// registration order; bandwidth_reporter, which also keeps every repetition's bytes/s for a
// ratio line; free_deleter for aligned_alloc'd buffers. The three programs run interleaved
// repetitions and summarise them by their median the same way, so the code that does it is kept
// once: a fix to one table would otherwise have to be made three times. What does not: anything
// a benchmark measures, its defaults and its ratio line (each program's own .cpp).
#pragma once

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bench_support {

struct free_deleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

/// The median of `v`; negative when it is empty (the "did not run" of the ratio lines).
inline double median(std::vector<double> v) {
  if (v.empty()) return -1.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

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

}  // namespace bench_support
