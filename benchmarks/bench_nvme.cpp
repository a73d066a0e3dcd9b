// bench_nvme — how fast strata's NVMe tier moves bytes, against fio on the same file system.
//
// One run, one directory, one file size (default 1 GiB), the IO engine's default block size and
// queue depth (io::engine_config), every file opened with O_DIRECT (no page cache on either side).
// Columns (each a write "-w" and a read "-r"):
//
//   store    io::nvme_store: write() (begin_write + write + commit) of the whole size from an
//            aligned host buffer, and read() of it back; CRC-32C per checksum block included —
//            what a tensor spilled to the NVMe tier costs. The ratio line is about this column.
//   fio      fio --ioengine=io_uring --direct=1 --rw=write|read with the same --bs, --iodepth
//            and --size, on a file in the same directory: the peer. Its bandwidth is fio's own
//            (jobs[0].<rw>.bw_bytes of --output-format=json); one fio process per measurement.
//   engine   the same io::engine (make_engine(engine_config)) on a plain file, no checksums: the
//            engine alone, to tell engine overhead from checksum overhead.
//   uring    (--raw) a bare liburing loop (qd requests of bs bytes, refilled as each completes)
//            on the engine's file and the very same buffer: the engine's peer without the
//            differences between fio's memory and ours.
//   ring     (--raw) the same loop through qd bs-sized slots at the start of the buffer, reused
//            like fio's iodepth x bs buffers.
//   pipe     (--pipeline) a prototype, not strata: the engine plus a CRC-32C of every checksum
//            block, overlapped — writes checksum on this thread while another thread writes the
//            same bytes; reads go in 32 MiB chunks on another thread while this one checks the
//            chunk before. What nvme_store could reach if its checksums overlapped its IO.
//   ctx      (--ctx) context::copies().write_nvme / read_nvme from / to device memory (emulated
//            in the host build), staged through the context's pinned slots: the path a tensor
//            takes between the device and the NVMe tier.
//
// Every operation runs twice untimed first (the store's copy-on-write alternates between two
// extents, so both are written before timing: every timed write overwrites written blocks, like
// fio's second pass over its file), then `--reps` rounds (default 11) run every operation once,
// writes then reads, in reversed order every other round; the figures are per-operation medians.
// Reads are checked against the data written (memcmp) before timing. A line after the table
// gives crc32c's speed on one core and what engine + crc in series would give.
//
// Last line:  nvme ratio=X read=A/B write=C/D GB/s
//   A, C: store read / write medians; B, D: fio's; X = min(A/B, C/D). Goal: X >= 0.95.
//   Without fio on the PATH the last line says so and gives the store's figures alone.
//
// Options (all optional):
//   --size=N          file size (bytes, or with K/M/G suffix; default 1G)
//   --bs=N --qd=N     block size and queue depth (default: io::engine_config's)
//   --engine=KIND     auto|uring|posix for store/engine/ctx (default auto; STRATA_IO_ENGINE wins)
//   --reps=N          timed rounds (default 11)
//   --raw             add the uring and ring columns
//   --pipeline        add the pipe column
//   --ctx             add the ctx column
//   --staging-slot=N  the ctx column's context_config::staging_slot_bytes (default: its default)
//   --fixed           register the engine column's buffers (io_uring READ_FIXED/WRITE_FIXED)
//   --hugepages       2 MiB-aligned, madvise(MADV_HUGEPAGE) buffers for our side (fio's stay
//                     4 KiB pages): shows what the pages under a transfer are worth on this disk
//   --engine-chunk=N  the engine column moves the file in calls of N bytes, all through the
//                     first N bytes of the buffer (default: one call for the whole file)
//   --settle=S        sleep S seconds before every timed operation (default 0)
//   --dir=PATH        scratch directory (default $STRATA_BENCH_DIR, else nvme-scratch/ beside
//                     this executable, i.e. in the build tree); tmpfs/ramfs is refused
//   --sweep           first: the engine alone at block 128 KiB .. 8 MiB x queue depth 1, 4, 16,
//                     64 on a smaller file, plus the posix engine at the defaults, as tables
//   --sweep-size=N    the sweep's file size (default 256M)
//   --sweep-reps=N    sweep repetitions, median (default 3)
//   --sweep-fio       --sweep, and fio for every cell too, with strata/fio ratio tables
// Files are named strata-bench-<what>-<pid>.dat (the stores' own: strata-rank0-<pid>-<n>.nvme)
// and removed on exit; .dat files of a killed run are removed by the next run.
#include "bench_support.hpp"
#include "nvme_fio.hpp"

#include <strata/exec/context.hpp>
#include <strata/io/make_engine.hpp>
#include <strata/io/file.hpp>
#include <strata/io/nvme_store.hpp>
#include <strata/memory/resource.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#if STRATA_HAVE_URING
#  include <liburing.h>
#endif

namespace {

namespace io = strata::io;
using strata::tier_id;

constexpr std::size_t KiB = std::size_t{1} << 10, MiB = std::size_t{1} << 20,
                      GiB = std::size_t{1} << 30;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

// Thrown for a setup problem (bad option, no room, fio failing); main() prints it. Thrown, not
// exit()ed, so the scratch files are removed on the way out.
struct bench_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void die(const std::string& why) { throw bench_error(why); }

using bench_support::parse_size;

std::string size_text(std::size_t b) {
  char buf[32];
  if (b >= GiB && b % GiB == 0) std::snprintf(buf, sizeof buf, "%zu GiB", b / GiB);
  else if (b >= MiB && b % MiB == 0) std::snprintf(buf, sizeof buf, "%zu MiB", b / MiB);
  else if (b >= KiB && b % KiB == 0) std::snprintf(buf, sizeof buf, "%zu KiB", b / KiB);
  else std::snprintf(buf, sizeof buf, "%zu B", b);
  return buf;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Idle time before a timed operation: the disk (and, in a VM, the host's write-back behind it)
// gets to finish the previous operation's work, so no operation pays for the one before it.
void settle(double s) {
  if (s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Page-aligned host memory, touched (so no page fault lands in a timed transfer).
// With --hugepages the buffers are 2 MiB-aligned and madvise(MADV_HUGEPAGE)d (transparent huge
// pages where the kernel's mode is "madvise"); by default they are 4 KiB pages, like fio's.
bool g_hugepages = false;

struct host_buffer {
  void* p = nullptr;
  std::size_t n = 0;
  explicit host_buffer(std::size_t bytes) : n(bytes) {
    if (posix_memalign(&p, g_hugepages ? 2 * MiB : 4096, bytes ? bytes : 1) != 0)
      die("cannot allocate " + strata::format_bytes(bytes) + " of host memory");
    if (g_hugepages) ::madvise(p, bytes, MADV_HUGEPAGE);
    std::memset(p, 0, bytes);
  }
  ~host_buffer() { std::free(p); }
  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;
  char* data() const { return static_cast<char*>(p); }
};

// Incompressible, position-dependent bytes: a device that deduplicates or compresses zeros must
// not look faster than it is.
void fill_pattern(char* p, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
}

// ---------------------------------------------------------------------------------------------
// Where we run: machine, directory, file system
// ---------------------------------------------------------------------------------------------

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto c = line.find(':');
      if (c != std::string::npos) {
        auto s = line.substr(c + 1);
        while (!s.empty() && s.front() == ' ') s.erase(s.begin());
        return s;
      }
    }
  return "unknown CPU";
}

struct fs_info {
  std::string type = "?", source = "?", mount_point = "?";
};

// The mount that holds `dir`, from /proc/self/mountinfo (matched by device number, and the
// longest mount point that prefixes the directory's real path).
fs_info file_system_of(const std::string& dir) {
  fs_info info;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return info;
  char real[PATH_MAX];
  std::string path = ::realpath(dir.c_str(), real) ? real : dir;
  const std::string devno =
      std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::size_t best = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, mm, root, mp;
    ls >> id >> parent >> mm >> root >> mp;
    if (mm != devno) continue;
    if (path.rfind(mp, 0) != 0 || mp.size() < best) continue;
    std::string tok;
    while (ls >> tok && tok != "-") {}
    std::string type, source;
    ls >> type >> source;
    best = mp.size();
    info = {type, source, mp};
  }
  return info;
}

// Files this benchmark leaves behind when killed: strata-bench-<what>-<pid>.dat. Those of a
// process that is gone are removed; a running benchmark's are left alone.
void remove_stale_files(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("strata-bench-", 0) != 0 || name.size() < 5 ||
        name.compare(name.size() - 4, 4, ".dat") != 0)
      continue;
    const auto dash = name.rfind('-');
    const long pid = std::strtol(name.c_str() + dash + 1, nullptr, 10);
    if (pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
}

// A scratch file this process creates and removes.
struct scratch_file {
  std::string dir, name;
  scratch_file(std::string d, const std::string& what)
      : dir(std::move(d)),
        name("strata-bench-" + what + "-" + std::to_string(::getpid()) + ".dat") {
    ::unlink(path().c_str());
  }
  ~scratch_file() { ::unlink(path().c_str()); }
  std::string path() const { return dir + "/" + name; }
};

// An O_DIRECT file of `bytes` bytes for the engine alone.
io::file open_engine_file(const scratch_file& f, std::size_t bytes) {
  std::string notice;
  io::file file = io::file::open_for_arena(f.path(), notice);
  if (!notice.empty()) std::printf("nvme: %s\n", notice.c_str());
  if (::fallocate(file.fd(), 0, 0, static_cast<off_t>(bytes)) != 0 &&
      ::ftruncate(file.fd(), static_cast<off_t>(bytes)) != 0)
    die("cannot size " + f.path() + ": " + io::errno_text(errno));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

struct options {
  std::size_t size = GiB;
  std::size_t block = io::engine_config{}.block_bytes;
  unsigned qd = io::engine_config{}.queue_depth;
  std::string engine = "auto";
  int reps = 11;
  bool fixed = false, context = false, pipeline = false, raw = false;
  std::size_t engine_chunk = 0;  // 0: one call
  std::size_t staging_slot = 0;  // 0: context_config's default
  double settle_s = 0;          // idle time before every timed operation
  std::string dir;
  bool sweep = false, sweep_fio = false;
  std::size_t sweep_size = 256 * MiB;
  int sweep_reps = 3;
};

void usage() {
  std::printf(
      "usage: bench_nvme [--size=1G] [--bs=N] [--qd=N] [--engine=auto|uring|posix] [--reps=11]\n"
      "                  [--raw] [--pipeline] [--ctx] [--staging-slot=N] [--fixed] [--hugepages]\n"
      "                  [--engine-chunk=N] [--settle=S] [--dir=PATH]\n"
      "                  [--sweep] [--sweep-size=256M] [--sweep-reps=3] [--sweep-fio]\n"
      "(the options are described at the top of benchmarks/bench_nvme.cpp)\n"
      "Compares strata's NVMe tier (io::nvme_store over the io_uring engine, O_DIRECT) with fio\n"
      "on the same file system; the last line is `nvme ratio=X read=A/B write=C/D GB/s`.\n");
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    // --key=value splits at the first '='; a flag has no value.
    const std::size_t eq = a.find('=');
    const std::string_view key = a.substr(0, eq);
    const std::string_view v = eq == std::string_view::npos ? std::string_view{} : a.substr(eq + 1);
    const bool has_value = eq != std::string_view::npos;
    auto size_arg = [&] {
      auto n = parse_size(v);
      if (!n || *n == 0) die(std::string(key) + ": cannot read '" + std::string(v) + "' as a size");
      return *n;
    };
    auto count_arg = [&] {
      char* end = nullptr;
      const std::string t(v);
      const long n = std::strtol(t.c_str(), &end, 10);
      if (end == t.c_str() || *end || n <= 0 || n > 100000)
        die(std::string(key) + ": expected a positive count, got '" + t + "'");
      return static_cast<int>(n);
    };
    if (!has_value && (a == "-h" || a == "--help")) usage(), std::exit(0);
    else if (has_value && key == "--size") o.size = size_arg();
    else if (has_value && key == "--bs") o.block = size_arg();
    else if (has_value && key == "--qd") o.qd = static_cast<unsigned>(count_arg());
    else if (has_value && key == "--engine") o.engine = std::string(v);
    else if (has_value && key == "--reps") o.reps = count_arg();
    else if (has_value && key == "--dir") o.dir = std::string(v);
    else if (has_value && key == "--settle") {
      char* end = nullptr;
      const std::string t(v);
      o.settle_s = std::strtod(t.c_str(), &end);
      if (end == t.c_str() || *end || o.settle_s < 0 || o.settle_s > 60)
        die("--settle: expected seconds (0 .. 60), got '" + t + "'");
    } else if (has_value && key == "--staging-slot") o.staging_slot = size_arg();
    else if (has_value && key == "--engine-chunk") o.engine_chunk = size_arg();
    else if (has_value && key == "--sweep-size") o.sweep_size = size_arg();
    else if (has_value && key == "--sweep-reps") o.sweep_reps = count_arg();
    else if (!has_value && a == "--fixed") o.fixed = true;
    else if (!has_value && a == "--ctx") o.context = true;
    else if (!has_value && a == "--pipeline") o.pipeline = true;
    else if (!has_value && a == "--raw") o.raw = true;
    else if (!has_value && a == "--hugepages") g_hugepages = true;
    else if (!has_value && a == "--sweep") o.sweep = true;
    else if (!has_value && a == "--sweep-fio") o.sweep = o.sweep_fio = true;
    else {
      usage();
      die("unknown argument '" + std::string(a) + "'");
    }
  }
  if (o.block % 4096 != 0) die("--bs must be a multiple of 4096 (O_DIRECT)");
  if (o.size < o.block) die("--size must be at least one block (" + size_text(o.block) + ")");
  if (o.size % o.block != 0) {
    o.size -= o.size % o.block;
    std::printf("nvme: --size rounded down to %s, a whole number of blocks\n",
                size_text(o.size).c_str());
  }
  if (o.engine_chunk % 4096 != 0) die("--engine-chunk must be a multiple of 4096 (O_DIRECT)");
  if (o.engine_chunk > o.size) o.engine_chunk = 0;
  if (o.sweep_size % (8 * MiB) != 0) die("--sweep-size must be a multiple of 8 MiB");
  return o;
}

// ---------------------------------------------------------------------------------------------
// The sweep: block size x queue depth for the engine alone
// ---------------------------------------------------------------------------------------------

double gbs(std::size_t bytes, double s) { return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0; }

struct cell {
  std::size_t block;
  unsigned qd;
  std::vector<double> w, r, fio_w, fio_r;
};

void print_table(const char* title, const std::vector<std::size_t>& blocks,
                 const std::vector<unsigned>& qds, const std::vector<cell>& cells,
                 const std::function<double(const cell&)>& value, const char* fmt) {
  std::printf("%s\n  %-9s", title, "block");
  for (unsigned q : qds) std::printf("  %8s", ("qd=" + std::to_string(q)).c_str());
  std::printf("\n");
  for (std::size_t b : blocks) {
    std::printf("  %-9s", size_text(b).c_str());
    for (unsigned q : qds)
      for (const cell& c : cells)
        if (c.block == b && c.qd == q) std::printf(fmt, value(c));
    std::printf("\n");
  }
}

void run_sweep(const options& o, const std::string& dir) {
  const std::vector<std::size_t> blocks = {128 * KiB, 256 * KiB, 512 * KiB, 1 * MiB,
                                           2 * MiB,   4 * MiB,   8 * MiB};
  const std::vector<unsigned> qds = {1, 4, 16, 64};
  const std::size_t n = o.sweep_size;

  host_buffer src(n), dst(n);
  fill_pattern(src.data(), n, 7);
  scratch_file sf(dir, "sweep"), ff(dir, "sweepfio");
  io::file file = open_engine_file(sf, n);

  auto engine_for = [&](io::engine_config c) {
    std::string notice;
    auto e = io::make_engine(c, notice);
    return e;
  };
  io::engine_config base;
  base.kind = o.engine;
  std::string engine_name;
  {
    auto e = engine_for(base);
    engine_name = e->name();
    e->write(file, src.data(), n, 0);  // the file's blocks are written once before timing
    e->write(file, src.data(), n, 0);
    e->read(file, dst.data(), n, 0);
    if (std::memcmp(src.data(), dst.data(), n) != 0) die("sweep: read back differs from written");
  }
  if (o.sweep_fio) {
    nvme_fio::job j{dir, ff.name, true, n, MiB, 16};
    auto r = nvme_fio::run(j);
    if (!r.ok) die("fio: " + r.error + "\n  command: " + r.command);
  }

  std::printf("nvme sweep: %s engine alone (no checksums), %s file, O_DIRECT, median of %d, GB/s\n",
              engine_name.c_str(), size_text(n).c_str(), o.sweep_reps);
  std::fflush(stdout);
  std::vector<cell> cells;
  for (std::size_t b : blocks)
    for (unsigned q : qds) cells.push_back({b, q, {}, {}, {}, {}});
  std::vector<double> posix_w, posix_r;
  io::engine_config posix_cfg;
  posix_cfg.kind = "posix";

  for (int rep = 0; rep < o.sweep_reps; ++rep) {
    for (cell& c : cells) {
      io::engine_config cfg = base;
      cfg.block_bytes = c.block;
      cfg.queue_depth = c.qd;
      auto e = engine_for(cfg);
      c.w.push_back(gbs(n, seconds([&] { e->write(file, src.data(), n, 0); })));
      c.r.push_back(gbs(n, seconds([&] { e->read(file, dst.data(), n, 0); })));
      if (o.sweep_fio) {
        for (bool write : {true, false}) {
          auto r = nvme_fio::run({dir, ff.name, write, n, c.block, c.qd});
          if (!r.ok) die("fio: " + r.error + "\n  command: " + r.command);
          (write ? c.fio_w : c.fio_r).push_back(r.bytes_per_s / 1e9);
        }
      }
    }
    auto e = engine_for(posix_cfg);
    posix_w.push_back(gbs(n, seconds([&] { e->write(file, src.data(), n, 0); })));
    posix_r.push_back(gbs(n, seconds([&] { e->read(file, dst.data(), n, 0); })));
    std::printf("  (round %d of %d done)\n", rep + 1, o.sweep_reps);
    std::fflush(stdout);
  }

  auto mw = [](const cell& c) { return median(c.w); };
  auto mr = [](const cell& c) { return median(c.r); };
  print_table("write, strata engine:", blocks, qds, cells, mw, "  %8.2f");
  print_table("read, strata engine:", blocks, qds, cells, mr, "  %8.2f");
  if (o.sweep_fio) {
    print_table("write, fio:", blocks, qds, cells, [](const cell& c) { return median(c.fio_w); },
                "  %8.2f");
    print_table("read, fio:", blocks, qds, cells, [](const cell& c) { return median(c.fio_r); },
                "  %8.2f");
    print_table("write, strata/fio:", blocks, qds, cells,
                [](const cell& c) { return median(c.w) / median(c.fio_w); }, "  %8.2f");
    print_table("read, strata/fio:", blocks, qds, cells,
                [](const cell& c) { return median(c.r) / median(c.fio_r); }, "  %8.2f");
  }
  std::printf("posix engine (pread/pwrite, block %s, %u threads): write %.2f read %.2f GB/s\n",
              size_text(posix_cfg.block_bytes).c_str(), posix_cfg.posix_threads,
              median(posix_w), median(posix_r));

  // The fewest bytes in flight (block x queue depth) within 10% of the best, in both directions
  // (10%: repetitions of one cell differ by about that much on a shared machine).
  double best_w = 0, best_r = 0;
  for (const cell& c : cells) best_w = std::max(best_w, mw(c)), best_r = std::max(best_r, mr(c));
  const cell* pick = nullptr;
  double pick_score = 0;
  for (const cell& c : cells) {
    const double score = std::min(mw(c) / best_w, mr(c) / best_r);
    const std::size_t inflight = c.block * c.qd;
    const bool good = score >= 0.90;
    if (!pick) {
      pick = &c, pick_score = score;
      continue;
    }
    const bool pick_good = pick_score >= 0.90;
    if ((good && !pick_good) || (good && pick_good && inflight < pick->block * pick->qd) ||
        (!good && !pick_good && score > pick_score))
      pick = &c, pick_score = score;
  }
  std::printf("sweep: best write %.2f, best read %.2f GB/s; fewest bytes in flight within 10%% of "
              "both: block %s, queue depth %u (%.2f / %.2f GB/s)\n",
              best_w, best_r, size_text(pick->block).c_str(), pick->qd, mw(*pick), mr(*pick));
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// The uring column: a bare liburing loop, the peer of the engine on the very same buffer
// ---------------------------------------------------------------------------------------------

#if STRATA_HAVE_URING
// What fio's io_uring engine does, without fio: `qd` requests of `block` bytes in flight,
// refilled as each completes, all on one ring; the buffer is the caller's (fio would use its own
// iodepth x bs buffers, which on some machines is itself worth tens of percent).
class bare_uring {
public:
  explicit bare_uring(unsigned qd) : qd_(qd) {
    if (const int rc = io_uring_queue_init(qd, &ring_, 0); rc < 0)
      die("uring column: io_uring_queue_init: " + io::errno_text(-rc));
  }
  ~bare_uring() { io_uring_queue_exit(&ring_); }
  bare_uring(const bare_uring&) = delete;
  bare_uring& operator=(const bare_uring&) = delete;

  /// Moves n bytes between the file (from offset 0) and memory at p. `ring`: request k uses
  /// the k-th of qd block-sized slots at p, like fio's buffers, instead of p + its file offset.
  void run(bool write, int fd, char* p, std::size_t n, std::size_t block, bool ring = false) {
    std::size_t next = 0;
    unsigned inflight = 0;
    auto submit_one = [&](std::uint32_t slot) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      const auto len = static_cast<std::uint32_t>(std::min(block, n - next));
      char* at = ring ? p + std::size_t{slot} * block : p + next;
      if (write) io_uring_prep_write(sqe, fd, at, len, next);
      else io_uring_prep_read(sqe, fd, at, len, next);
      io_uring_sqe_set_data64(sqe, (std::uint64_t{slot} << 32) | len);
      next += len;
      ++inflight;
    };
    for (std::uint32_t slot = 0; next < n && slot < qd_; ++slot) submit_one(slot);
    while (inflight) {
      const int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN) die("uring column: " + io::errno_text(-rc));
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        const auto data = io_uring_cqe_get_data64(cqe);
        if (cqe->res < 0 || static_cast<std::uint64_t>(cqe->res) != (data & 0xFFFFFFFFu))
          die("uring column: short or failed request (" + std::to_string(cqe->res) + ")");
        io_uring_cqe_seen(&ring_, cqe);
        --inflight;
        if (next < n) submit_one(static_cast<std::uint32_t>(data >> 32));
      }
    }
  }

private:
  io_uring ring_{};
  unsigned qd_;
};
#endif

// ---------------------------------------------------------------------------------------------
// The pipe column: a prototype of checksums overlapped with IO (not a strata code path)
// ---------------------------------------------------------------------------------------------

// The engine writes the bytes on another thread while this one checksums the same bytes (a
// write's data does not depend on its checksums, so nothing needs to wait).
void pipelined_write(io::engine& e, const io::file& f, const char* src, std::size_t n,
                     std::size_t block, std::vector<std::uint32_t>& crcs) {
  std::exception_ptr err;
  std::thread io_thread([&] {
    try {
      e.write(f, src, n, 0);
    } catch (...) {
      err = std::current_exception();
    }
  });
  for (std::size_t at = 0, k = 0; at < n; at += block, ++k)
    crcs[k] = io::crc32c(src + at, std::min(block, n - at));
  io_thread.join();
  if (err) std::rethrow_exception(err);
}

// Another thread reads chunk k+1 while this one checks the checksums of chunk k.
void pipelined_read(io::engine& e, const io::file& f, char* dst, std::size_t n, std::size_t block,
                    std::size_t chunk, const std::vector<std::uint32_t>& crcs) {
  std::atomic<std::size_t> landed{0};  // bytes read so far; n + 1 after a failure
  std::exception_ptr err;
  std::thread io_thread([&] {
    try {
      for (std::size_t at = 0; at < n; at += chunk) {
        const std::size_t len = std::min(chunk, n - at);
        e.read(f, dst + at, len, at);
        landed.store(at + len, std::memory_order_release);
        landed.notify_one();
      }
    } catch (...) {
      err = std::current_exception();
      landed.store(n + 1, std::memory_order_release);
      landed.notify_one();
    }
  });
  std::size_t checked = 0, bad = 0;
  while (checked < n) {
    std::size_t have = landed.load(std::memory_order_acquire);
    while (have <= checked) {
      landed.wait(have, std::memory_order_acquire);
      have = landed.load(std::memory_order_acquire);
    }
    if (have > n) break;
    for (; checked < have; checked += block)
      bad += io::crc32c(dst + checked, std::min(block, n - checked)) != crcs[checked / block];
  }
  io_thread.join();
  if (err) std::rethrow_exception(err);
  if (bad) die("pipe read: " + std::to_string(bad) + " checksum blocks differ");
}

// ---------------------------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------------------------

struct op {
  op(std::string n, bool w, std::function<double()> f, bool is_fio = false)
      : name(std::move(n)), write(w), run(std::move(f)), fio(is_fio) {}
  std::string name;
  bool write;
  std::function<double()> run;  // seconds, or bytes/s when fio (see `fio`)
  bool fio;
  std::vector<double> gbs;
};

int run(const options& o) {
  // Directory: a real file system, never tmpfs.
  const std::string dir = bench_support::scratch_dir(o.dir);
  ::mkdir(dir.c_str(), 0700);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    die("scratch directory '" + dir + "' is not a directory (set --dir or STRATA_BENCH_DIR)");
  if (bench_support::is_tmpfs(dir))
    die("scratch directory '" + dir + "' is on tmpfs/ramfs: that measures memory, not a disk; "
        "set --dir or STRATA_BENCH_DIR to a directory on the NVMe file system");
  remove_stale_files(dir);
  const fs_info fs = file_system_of(dir);

  // Room: fio's file, the engine's file, the store's two copy-on-write extents (+ the
  // context's two, + the pipe column's file) and some slack.
  const std::size_t files = 4 + (o.context ? 2 : 0) + (o.pipeline ? 1 : 0);
  const std::size_t need = o.size * files + (o.sweep ? 2 * o.sweep_size : 0) + 256 * MiB;
  if (struct statvfs sv {}; ::statvfs(dir.c_str(), &sv) == 0) {
    const std::size_t avail = static_cast<std::size_t>(sv.f_bavail) * sv.f_frsize;
    if (avail < need)
      die("scratch directory '" + dir + "' has " + strata::format_bytes(avail) + " free; this run "
          "needs about " + strata::format_bytes(need) + " (lower --size)");
  }

  const std::string fio = nvme_fio::fio_version();
  io::engine_config ec;
  ec.kind = o.engine;
  ec.block_bytes = o.block;
  ec.queue_depth = o.qd;

  std::printf("nvme: %s, %u CPUs; directory %s (%s on %s)\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), dir.c_str(), fs.type.c_str(),
              fs.source.c_str());
  std::fflush(stdout);

  if (o.sweep) run_sweep(o, dir);

  const std::size_t n = o.size;
  host_buffer src(n), dst(n);
  fill_pattern(src.data(), n, 1);

  // store
  strata::aligned_host_resource bounce;
  io::nvme_config nc;
  nc.directory = dir;
  nc.engine = ec;
  io::nvme_store store(nc, bounce);
  if (!store.notice().empty()) std::printf("nvme: %s\n", store.notice().c_str());
  const auto h = store.create(n, "bench_nvme");

  // engine alone
  scratch_file engine_path(dir, "engine");
  io::file efile = open_engine_file(engine_path, n);
  std::string notice;
  auto engine = io::make_engine(ec, notice);
  bool fixed = false;
  if (o.fixed) {
    const iovec bufs[2] = {{src.data(), n}, {dst.data(), n}};
    fixed = engine->register_buffers(bufs);
    if (!fixed) std::printf("nvme: --fixed: the engine did not take the buffers (memlock limit?)\n");
  }

  // fio
  scratch_file fio_path(dir, "fio");

  // context
  std::unique_ptr<strata::context> ctx;
  strata::buffer dev;
  strata::io::nvme_store::handle ch = 0;
  if (o.context) {
    try {
      strata::context_config cc;
      cc.device_bytes = n + 64 * MiB;
      cc.trace = false;
      cc.nvme_directory = dir;
      cc.io = ec;
      if (o.staging_slot) cc.staging_slot_bytes = o.staging_slot;
      std::printf("nvme: ctx: staging ring %zu x %s\n", cc.staging_slots,
                  size_text(cc.staging_slot_bytes).c_str());
      ctx = std::make_unique<strata::context>(cc);
      dev = ctx->allocate(tier_id::device, n, "bench_nvme device buffer");
      ctx->copy(dev.data(), tier_id::device, src.data(), tier_id::host, n, "fill").wait();
      ch = ctx->nvme().create(n, "bench_nvme ctx");
    } catch (const std::exception& e) {
      std::printf("nvme: ctx column skipped: %s\n", e.what());
      dev.reset();
      ctx.reset();
    }
  }

  std::vector<op> ops;
  ops.emplace_back("store-w", true, [&] { return seconds([&] { store.write(h, src.data(), n); }); });
  if (!fio.empty())
    ops.emplace_back("fio-w", true, [&] {
                     auto r = nvme_fio::run({dir, fio_path.name, true, n, o.block, o.qd});
                     if (!r.ok) die("fio: " + r.error + "\n  command: " + r.command);
                     return r.bytes_per_s;
                   }, true);
  // The engine column: one call for the whole file, or (--engine-chunk) calls of `ec_chunk`
  // bytes that all use the first `ec_chunk` bytes of the buffer (a small, cache-warm footprint
  // like fio's iodepth x bs buffers).
  const std::size_t ec_chunk = o.engine_chunk ? o.engine_chunk : n;
  ops.emplace_back(fixed ? "engine-w*" : "engine-w", true, [&] {
                   return seconds([&] {
                     for (std::size_t at = 0; at < n; at += ec_chunk)
                       engine->write(efile, src.data(), std::min(ec_chunk, n - at), at);
                   });
                 });
  const std::size_t cb = store.checksum_block();
  std::vector<std::uint32_t> ref_crcs((n + cb - 1) / cb), pipe_crcs(ref_crcs.size());
#if STRATA_HAVE_URING
  std::unique_ptr<bare_uring> bare;
  if (o.raw) {
    bare = std::make_unique<bare_uring>(o.qd);
    ops.emplace_back("uring-w", true, [&] {
                     return seconds([&] { bare->run(true, efile.fd(), src.data(), n, o.block); });
                   });
    ops.emplace_back("uring-r", false, [&] {
                     return seconds([&] { bare->run(false, efile.fd(), dst.data(), n, o.block); });
                   });
    ops.emplace_back("ring-w", true, [&] {
                     return seconds([&] { bare->run(true, efile.fd(), src.data(), n, o.block, true); });
                   });
    ops.emplace_back("ring-r", false, [&] {
                     return seconds([&] { bare->run(false, efile.fd(), dst.data(), n, o.block, true); });
                   });
  }
#else
  if (o.raw) std::printf("nvme: --raw needs liburing (this build has no STRATA_HAVE_URING)\n");
#endif
  // The pipe column has a file of its own: the ring column and --engine-chunk leave copies of
  // one chunk in the engine's file, and the pipe column's reads check every block.
  std::optional<scratch_file> pipe_path;
  io::file pfile;
  if (o.pipeline) {
    pipe_path.emplace(dir, "pipe");
    pfile = open_engine_file(*pipe_path, n);
    for (std::size_t at = 0; at < n; at += cb)
      ref_crcs[at / cb] = io::crc32c(src.data() + at, std::min(cb, n - at));
    ops.emplace_back("pipe-w", true, [&] {
                     return seconds([&] {
                       pipelined_write(*engine, pfile, src.data(), n, cb, pipe_crcs);
                     });
                   });
    ops.emplace_back("pipe-r", false, [&] {
                     return seconds([&] {
                       pipelined_read(*engine, pfile, dst.data(), n, cb, 32 * MiB, ref_crcs);
                     });
                   });
  }
  if (ctx)
    ops.emplace_back("ctx-w", true, [&] {
                     return seconds([&] {
                       ctx->copies().write_nvme(ch, dev.data(), tier_id::device, n, "w").wait();
                     });
                   });
  ops.emplace_back("store-r", false, [&] { return seconds([&] { store.read(h, 0, dst.data(), n); }); });
  if (!fio.empty())
    ops.emplace_back("fio-r", false, [&] {
                     auto r = nvme_fio::run({dir, fio_path.name, false, n, o.block, o.qd});
                     if (!r.ok) die("fio: " + r.error + "\n  command: " + r.command);
                     return r.bytes_per_s;
                   }, true);
  ops.emplace_back(fixed ? "engine-r*" : "engine-r", false, [&] {
                   return seconds([&] {
                     for (std::size_t at = 0; at < n; at += ec_chunk)
                       engine->read(efile, dst.data(), std::min(ec_chunk, n - at), at);
                   });
                 });
  if (ctx)
    ops.emplace_back("ctx-r", false, [&] {
                     return seconds([&] {
                       ctx->copies().read_nvme(dev.data(), tier_id::device, ch, n, "r").wait();
                     });
                   });

  // Columns: writes, then reads, each in the order store, fio, engine, uring, ring, pipe, ctx.
  auto family = [](const op& x) {
    static const char* order[] = {"store", "fio", "engine", "uring", "ring", "pipe", "ctx"};
    for (int k = 0; k < 7; ++k)
      if (x.name.rfind(order[k], 0) == 0) return k;
    return 7;
  };
  std::stable_sort(ops.begin(), ops.end(), [&](const op& a, const op& b) {
    if (a.write != b.write) return a.write;
    return family(a) < family(b);
  });
  std::printf("nvme: file %s, block %s, queue depth %u, engine %s%s, checksum block %s; %s\n",
              size_text(n).c_str(), size_text(o.block).c_str(), o.qd, store.io().name(),
              fixed ? " (engine column: registered buffers)" : "",
              size_text(store.checksum_block()).c_str(),
              fio.empty() ? "fio not found" : fio.c_str());
  std::printf("nvme: warming up (every operation twice, untimed; reads checked)\n");
  std::fflush(stdout);

  auto check = [&](const char* what) {
    if (std::memcmp(src.data(), dst.data(), n) != 0)
      die(std::string(what) + ": the bytes read back differ from the bytes written");
    std::memset(dst.data(), 0, n);
  };
  for (int k = 0; k < 2; ++k)
    for (op& x : ops)
      if (x.write) x.run();
  std::memset(dst.data(), 0, n);
  store.read(h, 0, dst.data(), n);
  check("store read");
  // (--engine-chunk and the ring column write copies of one chunk: put the real data back first)
  engine->write(efile, src.data(), n, 0);
  engine->read(efile, dst.data(), n, 0);
  check("engine read");
  if (ctx) {
    ctx->copies().read_nvme(dev.data(), tier_id::device, ch, n, "r").wait();
    ctx->copy(dst.data(), tier_id::host, dev.data(), tier_id::device, n, "check").wait();
    check("ctx read");
  }
  for (op& x : ops)
    if (!x.write && x.fio) x.run();

  // Timed rounds.
  std::printf("nvme: GB/s per round (writes, then reads; order reversed every other round)\n");
  std::printf("  round");
  for (const op& x : ops) std::printf(" %10s", x.name.c_str());
  std::printf("\n");
  std::fflush(stdout);
  for (int r = 0; r < o.reps; ++r) {
    std::vector<op*> order;
    for (bool write : {true, false}) {
      std::vector<op*> group;
      for (op& x : ops)
        if (x.write == write) group.push_back(&x);
      if (r % 2) std::reverse(group.begin(), group.end());
      order.insert(order.end(), group.begin(), group.end());
    }
    for (op* x : order) {
      settle(o.settle_s);
      const double v = x->run();
      x->gbs.push_back(x->fio ? v / 1e9 : gbs(n, v));
    }
    std::printf("  %5d", r + 1);
    for (const op& x : ops) std::printf(" %10.2f", x.gbs.back());
    std::printf("\n");
    std::fflush(stdout);
  }
  std::printf(" median");
  for (const op& x : ops) std::printf(" %10.2f", median(x.gbs));
  std::printf("\n");

  // Where the store's time goes: its checksums run on the calling thread after (write: after
  // each put; read: after the engine call) the IO, so store ~ 1 / (1/engine + 1/crc).
  std::vector<double> crc;
  volatile std::uint32_t sink = 0;
  for (int k = 0; k < 3; ++k)
    crc.push_back(gbs(n, seconds([&] { sink = sink ^ io::crc32c(src.data(), n); })));
  auto med = [&](const char* name) {
    for (const op& x : ops)
      if (x.name.rfind(name, 0) == 0) return median(x.gbs);
    return 0.0;
  };
  const double crc_gbs = median(crc);
  auto serial = [&](double e) { return e > 0 ? 1.0 / (1.0 / e + 1.0 / crc_gbs) : 0.0; };
  std::printf("nvme: crc32c (%s) %.2f GB/s on one core; engine + crc in series would give "
              "write %.2f read %.2f GB/s\n",
              io::crc32c_hardware() ? "SSE4.2" : "table", crc_gbs,
              serial(med("engine-w")), serial(med("engine-r")));

  const double A = med("store-r"), C = med("store-w");
  if (fio.empty()) {
    std::printf("nvme: fio not found (Debian: apt install fio): no ratio; store read %.2f write "
                "%.2f GB/s\n", A, C);
    return 0;
  }
  const double B = med("fio-r"), D = med("fio-w");
  const double ratio = std::min(A / B, C / D);
  std::printf("nvme ratio=%.2f read=%.2f/%.2f write=%.2f/%.2f GB/s\n", ratio, A, B, C, D);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return run(parse(argc, argv));
  } catch (const bench_error& e) {
    std::fprintf(stderr, "bench_nvme: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_nvme: %s\n", e.what());
    return 1;
  }
}
