// examples/common/example_support.hpp — the small helpers that every example program shares.
//
// What lives here:
//   console   mib(), voice (printf for the one rank that talks, flushed line by line, also
//             through mpirun's pipes), section headings, indented blocks of text, and checks:
//             the aligned "check: ... OK" lines and the verdict an example ends with
//   options   option_reader, for `--name value` and `--name=value` command lines, and number
//             parsing that checks a value while it is still a double — finite, in range,
//             whole where an integer is wanted — before converting it, so that `--steps 1e10`
//             or `nan` are refused naming the option and the value (bad_argument)
//   launch    launched_by_mpirun()
// The kernel stand-in and the synthetic layers that examples 01 to 03 walk are in
// toy_layers.hpp beside this file.
//
// What does not: anything an example is there to teach. Its tensors, schedules, models, kernels
// and the meaning of its options stay in its own files, which read top to bottom. The
// benchmarks (benchmarks/) keep their own bench_support.hpp: they report through Google
// Benchmark and pass unknown flags on to it, which is a different job from this one.
#pragma once

#include <strata/core/error.hpp>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace example {

// ---------------------------------------------------------------------------------------------
// Console
// ---------------------------------------------------------------------------------------------

/// Bytes in MiB, for printing.
inline double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

/// printf for the rank that talks: every rank runs the same code and only the one with `on`
/// prints. Each call is flushed, so progress shows as it happens.
struct voice {
  bool on = true;

  [[gnu::format(printf, 2, 3)]] void operator()(const char* format, ...) const {
    if (!on) return;
    va_list args;
    va_start(args, format);
    std::vprintf(format, args);
    va_end(args);
    std::fflush(stdout);
  }

  /// A numbered part of an example's walk: "\n== title".
  void section(const char* title) const { (*this)("\n== %s\n", title); }
};

/// section() for a program in which there is one voice.
inline void section(const char* title) { voice{}.section(title); }

/// `text` with `prefix` in front of every line, to show a library report inside a section.
inline std::string indented(const std::string& text, const char* prefix = "    ") {
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start) out += prefix;
    out += c;
    line_start = c == '\n';
  }
  return out;
}

/// What an example checks about its own results: one aligned line per check, and any failure
/// fails the run (verdict()).
class checks {
public:
  explicit checks(voice say = {}) : say_(say) {}

  /// Prints "  check: <what>  OK|FAILED"; returns `passed`.
  bool operator()(const std::string& what, bool passed) {
    say_("  check: %-72s %s\n", what.c_str(), passed ? "OK" : "FAILED");
    ok_ = ok_ && passed;
    return passed;
  }

  /// A failure the caller has described in its own words.
  void fail() noexcept { ok_ = false; }
  bool ok() const noexcept { return ok_; }

private:
  voice say_;
  bool ok_ = true;
};

/// The last line of an example that checks its results, and its exit status (0: all passed).
inline int verdict(bool ok, const voice& say = {}) {
  say("\n%s\n", ok ? "all checks OK" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// An argument a program cannot use; the message names the option and the value. The programs
/// print it and exit with status 2.
struct bad_argument : strata::config_error {
  using strata::config_error::config_error;
};

/// `v` as the option messages write numbers: up to 10 significant digits.
inline std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

/// `text` as a finite double, else bad_argument naming `option`.
inline double parse_number(const std::string& option, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0')
    throw bad_argument(option + " expects a number, got '" + text + "'");
  if (!std::isfinite(d))  // "nan", "inf", or beyond a double (ERANGE); an underflow is fine
    throw bad_argument(option + " expects a finite number, got '" + text + "'" +
                       (errno == ERANGE ? " (beyond the range of a double)" : ""));
  return d;
}

/// A number in [lo, hi], checked before anything converts it. `unit` follows the range in the
/// message (" MiB").
inline double parse_in_range(const std::string& option, const std::string& text, double lo,
                             double hi, const char* unit = "") {
  const double d = parse_number(option, text);
  if (!(d >= lo && d <= hi))
    throw bad_argument(option + " expects a number in [" + number_text(lo) + ", " +
                       number_text(hi) + "]" + unit + ", got '" + text + "'");
  return d;
}

/// A whole number in [lo, hi]. Digits are read as an integer of type Int, exactly over its
/// whole range; anything else (1e3, 2.5, nan) is read as a double first and taken when it is
/// whole, in range and at most 2^53 in size, where doubles still count in ones.
template <class Int>
Int parse_integer(const std::string& option, const std::string& text, Int lo, Int hi) {
  static_assert(std::is_integral_v<Int>, "parse_integer: Int is an integer type");
  auto refuse = [&](const char* why) {
    throw bad_argument(option + " expects an integer in [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "], got '" + text + "'" + why);
  };
  Int v{};
  const char* const last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(text.data(), last, v);
  if (!text.empty() && end == last) {  // only digits (and a sign)
    if (ec != std::errc{} || v < lo || v > hi) refuse("");
    return v;
  }
  const double d = parse_number(option, text);
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) || d != std::trunc(d))
    refuse("");
  constexpr double exact = 9007199254740992.0;  // 2^53
  if (std::fabs(d) > exact) refuse(" (write an integer this large in digits)");
  return static_cast<Int>(d);
}

/// Walks a command line of options, each `--name value` or `--name=value`, or a flag alone.
///
///   example::option_reader r(argc, argv);
///   while (r.next()) {
///     if (r.flag("--help")) ...;
///     else if (r.is("--steps")) steps = r.integer(1, 1000000);
///     else r.unknown();
///   }
///
/// Every refusal is a bad_argument naming the option.
class option_reader {
public:
  /// `args` without the program's name: args[0] is the first option.
  explicit option_reader(std::vector<std::string> args) : args_(std::move(args)) {}
  option_reader(int argc, char** argv)
      : option_reader(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc)) {}

  /// Moves to the next option; false when none is left.
  bool next() {
    if (++at_ >= args_.size()) return false;
    const std::string& arg = args_[at_];
    const std::size_t eq = arg.find('=');
    attached_ = arg.starts_with("--") && eq != std::string::npos;
    name_ = attached_ ? arg.substr(0, eq) : arg;
    value_ = attached_ ? arg.substr(eq + 1) : std::string();
    return true;
  }

  /// The option's name: "--steps" for both `--steps 5` and `--steps=5`.
  const std::string& name() const noexcept { return name_; }
  bool is(std::string_view name) const noexcept { return name_ == name; }

  /// Whether this is the flag `name`; a flag given a value ("--help=1") is refused.
  bool flag(std::string_view name) const {
    if (name_ != name) return false;
    if (attached_) throw bad_argument("'" + name_ + "' takes no value, got '" + value_ + "'");
    return true;
  }

  /// The option's value: the text after '=', else the next argument, which is then used up.
  const std::string& value() {
    if (attached_) return value_;
    if (at_ + 1 >= args_.size()) throw bad_argument("'" + name_ + "' needs a value");
    attached_ = true;  // asking twice gives the same value
    value_ = args_[++at_];
    return value_;
  }

  /// The value as a path: anything but empty.
  const std::string& path() {
    const std::string& v = value();
    if (v.empty()) throw bad_argument(name_ + " expects a path, got ''");
    return v;
  }

  /// The value as a number in [lo, hi] (parse_in_range).
  double number(double lo, double hi, const char* unit = "") {
    return parse_in_range(name_, value(), lo, hi, unit);
  }

  /// The value as a whole number in [lo, hi] (parse_integer).
  template <class Int = int>
  Int integer(Int lo, Int hi = std::numeric_limits<Int>::max()) {
    return parse_integer<Int>(name_, value(), lo, hi);
  }

  /// Refuses this option as one the program does not have.
  [[noreturn]] void unknown() const { throw bad_argument("unknown option '" + name_ + "'"); }

private:
  std::vector<std::string> args_;
  std::size_t at_ = static_cast<std::size_t>(-1);
  std::string name_, value_;
  bool attached_ = false;
};

// ---------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------

/// The main() of a program with a usage text: `parse(argc, argv, options)` reads the command
/// line (false for --help: the usage is printed, exit 0; bad_argument: the message and a pointer
/// to --help, exit 2), then `run(options)` does the work and returns the exit status (a failure
/// it throws: its message, exit 1).
template <class Options, class Parse, class Run>
int program_main(const char* name, const char* usage, int argc, char** argv, Parse&& parse,
                 Run&& run) {
  Options options{};
  try {
    if (!parse(argc, argv, options)) {
      std::fputs(usage, stdout);
      return 0;
    }
  } catch (const bad_argument& e) {
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", name, e.what(), name);
    return 2;
  }
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

/// Whether mpirun (Open MPI, or a PMI launcher such as MPICH's) started this process.
inline bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

}  // namespace example
