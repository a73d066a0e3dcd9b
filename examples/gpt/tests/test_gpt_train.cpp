// Tests for gpt_train's command line (examples/gpt/train_options.hpp) and the program itself.
//
// - Numbers are checked as doubles before they become ints, floats or byte counts: values
//   beyond the target type (--layers 1e10, --device-mib 1e300, --wd 1e300), non-finite ones
//   (nan, inf) and fractions where an integer is wanted are bad_argument errors naming the
//   option and the value; they used to be undefined conversions. `--name=value` reads as
//   `--name value`.
// - --nvme-dir: missing components are created; a symbolic link anywhere in the path (last
//   component or above, dangling or not) is refused naming the link, and nothing is created
//   behind it; a file in the way is refused.
// - The program (when the test knows where gpt_train is): exit 2 for bad arguments, exit 1 and
//   the path for a device or binary as --data, and --device-mib 1 refused once, before the
//   first step, with the whole plan table (the executor's lines, the activations, Adam's).
#include "catch.hpp"

#include "gpt_test_support.hpp"
#include "train_options.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

using gpt_test::temp_dir;

using gpt_test::contains;

/// The bad_argument message of parsing `args`, or "<no exception>" / "<other exception: ...>".
std::string refusal(const std::vector<std::string>& args) {
  return gpt_test::message_of<gpt::bad_argument>([&] { (void)gpt::parse_train_options(args); });
}

std::string nvme_refusal(const std::string& dir) {
  return gpt_test::message_of<gpt::bad_argument>([&] { gpt::prepare_nvme_dir(dir); });
}

}  // namespace

TEST_CASE("gpt_train options: numbers are range-checked before they are converted",
          "[gpt][train]") {
  struct bad {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<bad> cases = {
      {{"--layers", "1e10"}, "--layers expects an integer in [1, 2147483647], got '1e10'"},
      {{"--layers", "nan"}, "--layers expects a finite number, got 'nan'"},
      {{"--layers", "-nan"}, "--layers expects a finite number, got '-nan'"},
      {{"--width", "-3"}, "--width expects an integer in [1, 2147483647], got '-3'"},
      {{"--steps", "2.5"}, "--steps expects an integer in [1, 2147483647], got '2.5'"},
      {{"--batch", "1e400"}, "--batch expects a finite number, got '1e400' (beyond the range of a double)"},
      {{"--trace-step", "-2"}, "--trace-step expects an integer in [-1, 2147483647], got '-2'"},
      {{"--seed", "-1"}, "--seed expects an integer in [0, 9007199254740992], got '-1'"},
      {{"--device-mib", "1e300"}, "--device-mib expects a number in [0, 1073741824] MiB, got '1e300'"},
      {{"--device-mib", "inf"}, "--device-mib expects a finite number, got 'inf'"},
      {{"--pinned-mib", "-1"}, "--pinned-mib expects a number in [0, 1073741824] MiB, got '-1'"},
      {{"--pinned-mib", "0"}, "--pinned-mib must be > 0"},
      {{"--wd", "1e300"}, "--wd expects a number in [0, 3.402823466e+38], got '1e300'"},
      {{"--lr", "inf"}, "--lr expects a finite number, got 'inf'"},
      {{"--clip", "12x"}, "--clip expects a number, got '12x'"},
      {{"--heads", "3"}, "width (128) must be a multiple of heads (3)"},
      {{"--seq", "65"}, "seq (65) must be in [1, context = 64]"},
      {{"--policy", "gpu"}, "--policy is resident, host or nvme, got 'gpu'"},
      {{"--nvme-dir", ""}, "--nvme-dir expects a path, got ''"},
      {{"--frobnicate", "1"}, "unknown option '--frobnicate'"},
      {{"--layers"}, "'--layers' needs a value"},
      {{"--seed", "1e17"}, "--seed expects an integer in [0, 9007199254740992], got '1e17'"},
  };
  for (const bad& b : cases) {
    const std::string msg = refusal(b.args);
    INFO(b.args[0] << (b.args.size() > 1 ? " " + b.args[1] : "") << " -> " << msg);
    CHECK(contains(msg, b.says));
  }

  // Good values parse exactly, integers given as doubles included.
  const gpt::train_options o = gpt::parse_train_options(
      {"--layers", "6", "--heads", "6", "--width", "192", "--context", "128", "--steps", "1e3",
       "--device-mib", "24.5", "--seed", "9007199254740992", "--wd", "0", "--clip", "0",
       "--trace-step", "-1", "--policy", "nvme", "--nvme-dir", "somewhere"});
  CHECK(o.train.model.layers == 6);
  CHECK(o.train.model.width == 192);
  CHECK(o.train.seq == 128);  // = context when not given
  CHECK(o.train.steps == 1000);
  CHECK(o.device_mib == 24.5);
  CHECK(o.train.seed == (std::uint64_t{1} << 53));
  CHECK(o.trace_step == -1);
  CHECK(o.policy == "nvme");
  CHECK(o.nvme_dir == "somewhere");
  CHECK_FALSE(o.help);
  CHECK(gpt::parse_train_options({"--steps", "5", "--help"}).help);

  // `--name=value` is the same option (example_support.hpp's option_reader, as in the other
  // example programs); a flag takes no value.
  const gpt::train_options eq = gpt::parse_train_options(
      {"--layers=3", "--width", "96", "--heads=3", "--steps=1e2", "--policy=resident"});
  CHECK(eq.train.model.layers == 3);
  CHECK(eq.train.model.width == 96);
  CHECK(eq.train.model.heads == 3);
  CHECK(eq.train.steps == 100);
  CHECK(eq.policy == "resident");
  CHECK(contains(refusal({"--steps=x"}), "--steps expects a number, got 'x'"));
  CHECK(contains(refusal({"--help=1"}), "'--help' takes no value, got '1'"));
}

TEST_CASE("gpt_train --nvme-dir: created when missing, a symbolic link anywhere is refused",
          "[gpt][train]") {
  temp_dir s("nvme_dir");
  fs::create_directory(s / "real");

  SECTION("missing components are created; an existing directory is fine") {
    const std::string nested = s / "a/b/c/";
    REQUIRE(nvme_refusal(nested) == "<no exception>");
    CHECK(fs::is_directory(s / "a/b/c"));
    CHECK(nvme_refusal(nested) == "<no exception>");
    CHECK(nvme_refusal(s / "real") == "<no exception>");
  }
  SECTION("the last component a symbolic link to a directory") {
    fs::create_directory_symlink(s / "real", s / "link");
    const std::string msg = nvme_refusal(s / "link");
    INFO(msg);
    CHECK(contains(msg, "--nvme-dir '" + (s / "link") + "': '" + (s / "link") +
                            "' is a symbolic link to '" + (s / "real") + "'"));
    CHECK(contains(msg, "A symbolic link anywhere in the directory's path is refused"));
    CHECK(contains(msg, "name the real directory: '" + fs::canonical(s / "real").string() + "'"));
  }
  SECTION("a dangling symbolic link (was: \"File exists\")") {
    fs::create_symlink(s / "gone", s / "dangling");
    const std::string msg = nvme_refusal(s / "dangling");
    INFO(msg);
    CHECK(contains(msg, "'" + (s / "dangling") + "' is a symbolic link to '" + (s / "gone") +
                            "', which does not exist"));
    CHECK_FALSE(fs::exists(s / "gone"));
  }
  SECTION("a symbolic link above the last component (was: followed)") {
    fs::create_directory_symlink(s / "real", s / "up");
    const std::string msg = nvme_refusal(s / "up/nvme");
    INFO(msg);
    CHECK(contains(msg, "'" + (s / "up") + "' is a symbolic link to '" + (s / "real") + "'"));
    CHECK(contains(msg, "name the real directory: '" +
                            (fs::canonical(s / "real") / "nvme").string() + "'"));
    CHECK_FALSE(fs::exists(s / "real/nvme"));  // nothing was created behind the link
  }
  SECTION("a file in the way") {
    std::ofstream(s / "file") << "x";
    std::string msg = nvme_refusal(s / "file");
    INFO(msg);
    CHECK(contains(msg, "'" + (s / "file") + "' exists and is not a directory"));
    msg = nvme_refusal(s / "file/below");
    INFO(msg);
    CHECK(contains(msg, "'" + (s / "file") + "' exists and is not a directory"));
  }
}

TEST_CASE("gpt_train outputs are checked before the first step: directory, kind, clashes",
          "[gpt][train]") {
  temp_dir s("outputs");
  fs::create_directory(s / "adir");
  auto outputs_refusal = [](const gpt::train_options& o) {
    return gpt_test::message_of<gpt::bad_argument>([&] { gpt::check_outputs(o); });
  };
  gpt::train_options o;
  o.out = s / "w.safetensors";
  o.log = s / "loss.csv";
  o.svg = s / "loss.svg";
  o.trace = s / "trace.json";
  CHECK(outputs_refusal(o) == "<no exception>");
  CHECK(fs::is_empty(s.path / "adir"));
  for (auto& e : fs::directory_iterator(s.path))  // the probes are gone
    CHECK_FALSE(contains(e.path().filename().string(), "probe"));

  gpt::train_options bad = o;
  bad.out = s / "missing/w.safetensors";
  CHECK(outputs_refusal(bad) == "--out '" + bad.out + "': directory '" + (s / "missing") +
                                    "' does not exist");
  bad = o;
  bad.log = s / "adir";
  CHECK(outputs_refusal(bad) == "--log '" + bad.log + "': is a directory; name a file");
  bad = o;
  bad.svg = o.log;
  CHECK(contains(outputs_refusal(bad), "the same file as --log"));
  bad = o;
  bad.trace = s / "missing/t.json";
  bad.train.steps = 10;
  bad.trace_step = 5;
  CHECK(contains(outputs_refusal(bad), "--trace '"));
  bad.trace_step = -1;  // no trace is written: its path is not checked
  CHECK(outputs_refusal(bad) == "<no exception>");
}

TEST_CASE("gpt_train refuses an NVMe plan larger than the directory's free space, up front",
          "[gpt][train]") {
  temp_dir s("space");
  CHECK_NOTHROW(gpt::check_nvme_space(s.path.string(), 4096, 2));
  const std::string msg = gpt_test::message_of<strata::out_of_budget>(
      [&] { gpt::check_nvme_space(s.path.string(), std::size_t{1} << 60, 2); });
  CHECK(contains(msg, "--nvme-dir '" + s.path.string() + "': the plan puts"));
  CHECK(contains(msg, "2 rank(s)"));
  CHECK(contains(msg, "free"));
}

// ---- the program ------------------------------------------------------------------------------

using gpt_test::run_result;

#if defined(GPT_TRAIN_EXE)  // the program is built beside this test
TEST_CASE("gpt_train: exit codes and messages for bad input, one refusal with the whole plan",
          "[gpt][train]") {
  const std::string exe = GPT_TRAIN_EXE;  // examples/gpt/CMakeLists.txt names the program
  temp_dir s("program");
  std::ofstream(s / "text.txt") << std::string(4000, 'a') << "\nthe quick brown fox\n";

  for (const char* bad : {"--layers 1e10", "--layers nan", "--device-mib 1e300", "--width 2.5",
                          "--frobnicate 1"}) {
    const run_result r = gpt_test::run_program(exe, bad);
    INFO(bad << " -> " << r.output);
    CHECK(r.code == 2);
    CHECK(contains(r.output, "gpt_train: "));
    CHECK(contains(r.output, std::string(bad).substr(0, std::string(bad).find(' '))));
  }

  run_result r = gpt_test::run_program(exe, "--data /dev/zero");
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK(contains(r.output, "'/dev/zero' is a character device"));

  fs::create_symlink(s / "gone", s / "dangling");
  r = gpt_test::run_program(exe, "--policy nvme --nvme-dir '" + (s / "dangling") + "'");
  INFO(r.output);
  CHECK(r.code == 2);
  CHECK(contains(r.output, "is a symbolic link to '" + (s / "gone") + "', which does not exist"));

  // A device budget of 1 MiB: one refusal, before the first step, listing every line.
  r = gpt_test::run_program(exe, "--device-mib 1 --policy resident --ranks 1 --steps 1 --data '" +
                   (s / "text.txt") + "'");
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK(contains(r.output, "memory plan of 'gpt' refused before the first step: tier 'device"));
  CHECK(contains(r.output, "2 full-gradient buffers"));
  CHECK(contains(r.output, "gpt activations (x[0..L], dx, head)"));
  CHECK(contains(r.output, "adam: Adam m and v (this rank's part, all layers)"));
  CHECK(contains(r.output, "(budget 1.00 MiB (1048576 bytes))"));
  std::size_t refusals = 0;
  for (std::size_t at = 0; (at = r.output.find("refused", at)) != std::string::npos; ++at) ++refusals;
  CHECK(refusals == 1);
  CHECK_FALSE(contains(r.output, "step    1/"));

  // An output that cannot be written is refused before the first step, not after the last.
  r = gpt_test::run_program(exe, "--steps 1 --out '" + (s / "missing/w.safetensors") + "'");
  INFO(r.output);
  CHECK(r.code == 2);
  CHECK(contains(r.output, "--out '" + (s / "missing/w.safetensors") + "': directory"));
  CHECK_FALSE(contains(r.output, "step    1/"));
}

TEST_CASE("gpt_train writes every output where it is told, through unique temporary files",
          "[gpt][train]") {
  const std::string exe = GPT_TRAIN_EXE;
  temp_dir s("written");
  std::ofstream(s / "text.txt") << std::string(4000, 'a') << "\nthe quick brown fox\n";
  const run_result r = gpt_test::run_program(
      exe, "--policy resident --ranks 1 --steps 1 --layers 1 --heads 2 --width 16 --context 16 "
           "--batch 2 --val-batches 1 --trace-step 0 --data '" + (s / "text.txt") + "' --out '" +
               (s / "w.safetensors") + "' --log '" + (s / "l.csv") + "' --svg '" +
               (s / "l.svg") + "' --trace '" + (s / "t.json") + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  for (const char* f : {"w.safetensors", "l.csv", "l.svg", "t.json"}) CHECK(fs::exists(s / f));
  for (auto& e : fs::directory_iterator(s.path))  // no temporary or probe left over
    CHECK_FALSE(contains(e.path().filename().string(), ".tmp."));
}
#endif
