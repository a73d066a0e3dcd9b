// examples/gpt/train_options.hpp — gpt_train's command line: the options and their checks.
//
// What this is: the options of train.cpp and their defaults, parse_train_options (`--name value`
// or `--name=value`; every number is checked by examples/common/example_support.hpp's parsers
// before it is converted — finite, in its option's range, whole where an integer is wanted — so
// `--layers 1e10`, `nan` or `--device-mib 1e300` are refused by name instead of being undefined
// conversions), prepare_nvme_dir, the rule for --nvme-dir, and check_outputs, which makes sure
// before the first step that every output can be written (a missing or unwritable directory
// found after the last step would lose all the trained weights). What it is not: training
// (trainer.hpp) or writing the outputs (train.cpp).
//
// The --nvme-dir rule: every component of the path as written must be a real directory or not
// exist yet (the missing ones are created); a symbolic link anywhere in it — the last component
// or one above it, dangling or not — is refused, naming the link and where it points. A link
// can be pointed elsewhere after the check; the library's NVMe store refuses a link as the
// last component (O_NOFOLLOW), and this refuses the components above it as well.
//
// Errors in arguments are gpt::bad_argument (example::bad_argument, a strata::config_error)
// naming the option and the value; train.cpp prints them and exits with status 2.
#pragma once

#include "trainer.hpp"

#include "example_support.hpp"  // examples/common/: option_reader, bad_argument

#include <strata/core/error.hpp>

#include <cerrno>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace gpt {

/// An argument gpt_train cannot use; the message names the option and the value.
using bad_argument = example::bad_argument;

struct train_options {
  train_config train;
  std::string policy = "host";
  int ranks = 2;
  double device_mib = 0, pinned_mib = 64;
  std::string nvme_dir = "gpt-nvme";
  std::string data;  // empty: the default corpus
  int val_every = 25, val_batches = 8;
  std::string out = "gpt.safetensors", log = "gpt_loss.csv", svg = "gpt_loss.svg";
  std::string trace = "gpt_trace.json";  // written when --trace-step names a step of the run
  int trace_step = 5;
  int threads = 0;
  // Checkpoints (train.cpp's top says how a run is interrupted and resumed).
  std::string checkpoint_dir;  // empty: no checkpoints
  int save_every = 0;          // steps between checkpoints; 0: only at the end and on a signal
  int keep = 2;                // committed checkpoints kept
  bool resume = false;         // start from `latest` in checkpoint_dir (a fresh start if none)
  bool bf16 = false;           // --policy nvme with bf16 working parameters (zero3_infinity_bf16)
  int stop_after = 0;          // > 0: stop after that step as SIGTERM would (tests, the demo)
  std::string init_from;       // a safetensors file of this model's weights to start from
  std::string calibration;     // strata-plan calibrate's file: print the predicted step time
  bool help = false;  // --help: print the usage, nothing else

  // The largest budget --device-mib / --pinned-mib take: 2^30 MiB (1 PiB) is more than any
  // machine has, and its bytes fit a size_t exactly.
  static constexpr double max_mib = 1073741824.0;
};

/// Parses gpt_train's arguments (args[0] is the first option, not the program). Throws
/// bad_argument for an unknown option, a missing or unusable value, or a configuration that
/// train_config::validate refuses.
inline train_options parse_train_options(const std::vector<std::string>& args) {
  train_options o;
  o.train.model.context = 64;
  o.train.seq = -1;  // = context unless given
  o.train.steps = 300;
  example::option_reader r(args);
  while (r.next()) {
    if (r.flag("--help") || r.flag("-h")) {
      o.help = true;
      return o;
    }
    auto count = [&](int lo) { return r.integer(lo); };
    // Floats of the optimizer: a finite double beyond FLT_MAX has no float to become.
    auto real = [&](double lo) { return r.number(lo, FLT_MAX); };
    auto mib = [&](double lo) { return r.number(lo, train_options::max_mib, " MiB"); };
    auto& t = o.train;
    if (r.is("--layers")) t.model.layers = count(1);
    else if (r.is("--heads")) t.model.heads = count(1);
    else if (r.is("--width")) t.model.width = count(1);
    else if (r.is("--context")) t.model.context = count(1);
    else if (r.is("--batch")) t.batch = count(1);
    else if (r.is("--seq")) t.seq = count(1);
    else if (r.is("--accum")) t.accum = count(1);
    else if (r.is("--steps")) t.steps = count(1);
    else if (r.is("--lr")) t.lr = real(0);
    else if (r.is("--min-lr")) t.min_lr = real(0);
    else if (r.is("--warmup")) t.warmup = count(0);
    else if (r.is("--wd")) t.weight_decay = static_cast<float>(real(0));
    else if (r.is("--clip")) t.clip = static_cast<float>(real(0));
    else if (r.is("--seed")) t.seed = static_cast<std::uint64_t>(r.integer<std::int64_t>(0, std::int64_t{1} << 53));
    else if (r.is("--policy")) {
      const std::string& v = r.value();
      if (v != "resident" && v != "host" && v != "nvme")
        throw bad_argument("--policy is resident, host or nvme, got '" + v + "'");
      o.policy = v;
    } else if (r.is("--ranks")) o.ranks = count(1);
    else if (r.is("--device-mib")) o.device_mib = mib(0);
    else if (r.is("--pinned-mib")) o.pinned_mib = mib(0);
    else if (r.is("--nvme-dir")) o.nvme_dir = r.path();
    else if (r.is("--data")) o.data = r.path();
    else if (r.is("--val-every")) o.val_every = count(1);
    else if (r.is("--val-batches")) o.val_batches = count(1);
    else if (r.is("--out")) o.out = r.path();
    else if (r.is("--log")) o.log = r.path();
    else if (r.is("--svg")) o.svg = r.path();
    else if (r.is("--trace-step")) o.trace_step = count(-1);
    else if (r.is("--trace")) o.trace = r.path();
    else if (r.is("--calibration")) o.calibration = r.path();
    else if (r.is("--threads")) o.threads = count(0);
    else if (r.is("--checkpoint-dir")) o.checkpoint_dir = r.path();
    else if (r.is("--save-every")) o.save_every = count(0);
    else if (r.is("--keep")) o.keep = count(1);
    else if (r.flag("--resume")) o.resume = true;
    else if (r.flag("--no-overlap")) t.overlap_step = false;
    else if (r.flag("--no-recompute")) t.recompute = false;
    else if (r.flag("--bf16")) o.bf16 = true;
    else if (r.is("--stop-after")) o.stop_after = count(1);
    else if (r.is("--init-from")) o.init_from = r.path();
    else r.unknown();
  }
  if (o.checkpoint_dir.empty() && (o.resume || o.save_every > 0 || o.stop_after > 0))
    throw bad_argument(std::string(o.resume ? "--resume" : o.save_every > 0 ? "--save-every"
                                                                            : "--stop-after") +
                       " needs --checkpoint-dir");
  if (o.train.seq < 0) o.train.seq = o.train.model.context;
  if (o.pinned_mib <= 0) throw bad_argument("--pinned-mib must be > 0");
  if (o.bf16 && o.policy != "nvme")
    throw bad_argument("--bf16 goes with --policy nvme (bf16 working copies of ZeRO-3 shards on "
                       "NVMe), not with --policy " + o.policy);
  try {
    o.train.validate();
  } catch (const std::exception& e) {
    throw bad_argument(e.what());
  }
  return o;
}

inline void prepare_directory(const std::string& dir, const std::string& option);  // below

/// The files gpt_train will write, with the option that names each: --out, --log, --svg, and
/// --trace when --trace-step names a step of the run.
inline std::vector<std::pair<std::string, std::string>> outputs_of(const train_options& o) {
  std::vector<std::pair<std::string, std::string>> v = {
      {"--out", o.out}, {"--log", o.log}, {"--svg", o.svg}};
  if (o.trace_step >= 0 && o.trace_step < o.train.steps) v.emplace_back("--trace", o.trace);
  return v;
}

/// Before the first step: each output's directory exists and a file can be created in it (a
/// probe file, created with O_EXCL | O_NOFOLLOW and removed), the output itself is not a
/// directory, and no two outputs name the same file. bad_argument names the option, the path
/// and the reason.
inline void check_outputs(const train_options& o) {
  namespace fs = std::filesystem;
  const auto outs = outputs_of(o);
  for (std::size_t i = 0; i < outs.size(); ++i) {
    const auto& [option, path] = outs[i];
    const std::string where = option + " '" + path + "': ";
    if (path.empty()) throw bad_argument(option + " expects a path, got ''");
    for (std::size_t j = 0; j < i; ++j)
      if (fs::absolute(outs[j].second).lexically_normal() == fs::absolute(path).lexically_normal())
        throw bad_argument(where + "the same file as " + outs[j].first);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      throw bad_argument(where + "is a directory; name a file");
    const fs::path dir = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : ".";
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw bad_argument(where + "directory '" + dir.string() + "' does not exist");
    const std::string probe =
        (dir / (".gpt_train-probe-" + std::to_string(::getpid()) + "-" + std::to_string(i)))
            .string();
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
      throw bad_argument(where + "cannot create a file in '" + dir.string() +
                         "': " + std::strerror(errno));
    ::close(fd);
    ::unlink(probe.c_str());
  }
  // The checkpoint directory: made (under the --nvme-dir rule) and probed like the files.
  if (!o.checkpoint_dir.empty()) {
    prepare_directory(o.checkpoint_dir, "--checkpoint-dir");
    const std::string probe = o.checkpoint_dir + "/.gpt_train-probe-" + std::to_string(::getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
      throw bad_argument("--checkpoint-dir '" + o.checkpoint_dir + "': cannot create a file in it: " +
                         std::strerror(errno));
    ::close(fd);
    ::unlink(probe.c_str());
  }
}

/// Free space for what a run will write into `dir` (named by `option`) before the first step:
/// the memory plan checks budgets, not the disk, and a full disk found at step 900 (ENOSPC)
/// would end the run. `ranks` is how many ranks write there (every rank of the run: they share
/// one machine's drive). check_nvme_space: the NVMe tier's plan against --nvme-dir.
inline void check_free_space(const std::string& option, const std::string& dir,
                             const std::string& what, std::size_t bytes_per_rank, int ranks) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0)
    throw strata::io_error(option + " '" + dir + "': cannot read its free space: " +
                           std::strerror(errno));
  const double need = static_cast<double>(bytes_per_rank) * ranks;
  const double free = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
  if (need > free)
    throw strata::out_of_budget(
        option + " '" + dir + "': " + what + " " + strata::format_bytes(bytes_per_rank) +
            " per rank, " + std::to_string(ranks) + " rank(s): " +
            strata::format_bytes(static_cast<std::size_t>(need)) + "; the file system has " +
            strata::format_bytes(static_cast<std::size_t>(free)) + " free",
        option.substr(2), static_cast<std::size_t>(need), static_cast<std::size_t>(free),
        static_cast<std::size_t>(free));
}
inline void check_nvme_space(const std::string& dir, std::size_t bytes_per_rank, int ranks) {
  check_free_space("--nvme-dir", dir, "the plan puts on the NVMe tier", bytes_per_rank, ranks);
}

/// Makes `dir` ready under the rule at the top (for --nvme-dir, and --checkpoint-dir, named
/// by `option`): walks its components from the first, refusing (bad_argument) a symbolic link
/// or a non-directory among them, and creates the ones that do not exist (mode 0777 less the
/// umask). A failed mkdir is an io_error. Several ranks may call it at once.
inline void prepare_directory(const std::string& dir, const std::string& option) {
  namespace fs = std::filesystem;
  if (dir.empty()) throw bad_argument(option + " expects a path, got ''");
  const std::string where = option + " '" + dir + "': ";
  fs::path at;
  for (const fs::path& part : fs::path(dir)) {
    if (part.empty()) continue;  // the "" after a trailing '/'
    at /= part;
    struct stat st {};
    // Absent: create it and look again. EEXIST means another rank was first; what it made is
    // looked at like anything else.
    for (int tries = 0; ::lstat(at.c_str(), &st) != 0; ++tries) {
      if (errno != ENOENT || tries == 2)
        throw strata::io_error(where + "cannot look at '" + at.string() + "': " + std::strerror(errno));
      if (::mkdir(at.c_str(), 0777) != 0 && errno != EEXIST)
        throw strata::io_error(where + "cannot create directory '" + at.string() +
                               "': " + std::strerror(errno));
    }
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(at, ec);
      const bool dangling = !fs::exists(at, ec);
      std::string msg = where + "'" + at.string() + "' is a symbolic link";
      if (!target.empty()) msg += " to '" + target.string() + "'";
      if (dangling) msg += ", which does not exist";
      msg += ". A symbolic link anywhere in the directory's path is refused (it could be "
             "pointed elsewhere after the check)";
      const fs::path real = dangling ? fs::path() : fs::weakly_canonical(dir, ec);
      msg += ec || real.empty() ? "; name the real directory"
                                : "; name the real directory: '" + real.string() + "'";
      throw bad_argument(msg);
    }
    if (!S_ISDIR(st.st_mode))
      throw bad_argument(where + "'" + at.string() + "' exists and is not a directory");
  }
}
inline void prepare_nvme_dir(const std::string& dir) { prepare_directory(dir, "--nvme-dir"); }

}  // namespace gpt
