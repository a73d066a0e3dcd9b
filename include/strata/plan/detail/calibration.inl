// strata/plan/detail/calibration.inl — bodies of plan/calibration.hpp: where we run (machine,
// directory's device, RAM), the measurements, and calibrate() as a few named steps.
#pragma once

#include <strata/comm/threads.hpp>
#include <strata/core/cpu_features.hpp>
#include <strata/exec/thread_pool.hpp>
#include <strata/io/file.hpp>
#include <strata/io/nvme_store.hpp>
#include <strata/memory/buffer.hpp>
#include <strata/memory/resource.hpp>

#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#  include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

STRATA_NAMESPACE_BEGIN
namespace plan {
namespace detail::calib {

// ---- small helpers ---------------------------------------------------------------------------

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The median of `repetitions` timed calls of `f` after one untimed call (which takes the
/// first-use costs: page faults, lazy allocations, a cold file).
template <class F>
double median_seconds(int repetitions, F&& f) {
  f();
  std::vector<double> t;
  t.reserve(static_cast<std::size_t>(repetitions));
  for (int i = 0; i < repetitions; ++i) t.push_back(seconds(f));
  // A timer tick of 0 would make the rate infinite, which no JSON file can hold.
  return std::max(median(std::move(t)), 1e-9);
}

/// A byte read through a volatile: the copies before it cannot be dropped as dead stores into
/// memory that is freed afterwards.
inline void keep(const void* p) {
  static volatile unsigned char sink;
  sink = *static_cast<const volatile unsigned char*>(p);
  (void)sink;
}

/// The STREAM kernel; restrict lets the compiler vectorise it without an overlap check.
inline void triad(double* __restrict a, const double* __restrict b, const double* __restrict c,
                  double s, std::size_t i0, std::size_t i1) {
  for (std::size_t i = i0; i < i1; ++i) a[i] = b[i] + s * c[i];
}

inline void check_repetitions(int repetitions, const char* who) {
  if (repetitions < 1)
    throw config_error(std::string(who) + ": repetitions is " + std::to_string(repetitions) +
                       "; at least 1 timed run is needed");
}

/// "12.34 GB/s" (10^9 bytes: the unit fio and the benchmarks report).
inline std::string gbps(double bytes_s) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f GB/s", bytes_s / 1e9);
  return buf;
}

inline std::string gflops(double flops) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f GFLOP/s", flops / 1e9);
  return buf;
}

inline std::string shape_text(int m, int n, int k) {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
}

inline std::string trim(std::string s) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && blank(s.back())) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && blank(s[i])) ++i;
  return s.substr(i);
}

// Incompressible, position-dependent bytes (xorshift): a drive that compresses or deduplicates
// zeros must not look faster than it is.
inline void fill_pattern(void* p, std::size_t n, std::uint64_t seed) {
  auto* out = static_cast<unsigned char*>(p);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out + i, &x, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<unsigned char>(x >> (8 * (i % 8)));
}

// ---- where we run ----------------------------------------------------------------------------

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0)
      if (const auto c = line.find(':'); c != std::string::npos) return trim(line.substr(c + 1));
  return "unknown CPU";
}

/// The names optim::simd_level uses, from the same CPUID + XCR0 bits (core/cpu_features.hpp).
/// Where that header compiles no CPUID path (nvcc's host pass, other ISAs) the kernel's flags
/// in /proc/cpuinfo say it instead, so a .cu and a .cpp translation unit of one program
/// describe the machine alike (and agree on its fingerprint).
inline const char* simd_name() {
#if STRATA_X86_SIMD
  const cpu_features& f = cpu();
  return f.has_avx512_path() ? "avx512" : f.has_avx2_path() ? "avx2" : "scalar";
#else
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line) && line.rfind("flags", 0) != 0) continue;
  std::istringstream words(line);
  std::vector<std::string> flags{std::istream_iterator<std::string>(words), {}};
  const auto has = [&](const char* f) {
    return std::find(flags.begin(), flags.end(), f) != flags.end();
  };
  const bool avx2 = has("avx2") && has("fma") && has("f16c");
  if (avx2 && has("avx512f") && has("avx512bw") && has("avx512vl")) return "avx512";
  return avx2 ? "avx2" : "scalar";
#endif
}

/// ", GPU <name> (<n> GiB)" for device 0 in a CUDA build that finds one, else "".
inline std::string gpu_description() {
#if STRATA_ENABLE_CUDA
  if (cuda_discover().devices == 0) return "";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  const double gib = static_cast<double>(p.totalGlobalMem) / double(std::size_t{1} << 30);
  return ", GPU " + std::string(p.name) + " (" + std::to_string(std::lround(gib)) + " GiB)";
#else
  return "";
#endif
}

inline std::string read_line_of(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return trim(s);
}

/// The drive under block device major:minor, as /sys names it (the disk's for a partition);
/// "" for a device /sys does not know (overlay, tmpfs, device-mapper without a model).
inline std::string drive_model(unsigned maj, unsigned min) {
  char link[64];
  std::snprintf(link, sizeof link, "/sys/dev/block/%u:%u", maj, min);
  char real[PATH_MAX];
  if (maj == 0 || !::realpath(link, real)) return "";
  const std::string dev = real;
  std::string model = read_line_of(dev + "/device/model");
  if (model.empty()) model = read_line_of(dev + "/../device/model");  // a partition
  return model;
}

/// "<mount source> (<fs type>[, <drive model>])" for the file system holding `dir`, from
/// /proc/self/mountinfo (the mount with the directory's device number and the longest mount
/// point that prefixes its real path); "none" for an empty or missing directory.
inline std::string directory_device(const std::string& dir) {
  struct stat st {};
  char real[PATH_MAX];
  if (dir.empty() || ::stat(dir.c_str(), &st) != 0 || !::realpath(dir.c_str(), real)) return "none";
  const std::string path = real;
  const std::string devno =
      std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  std::ifstream in("/proc/self/mountinfo");
  std::string line, best = "unknown device", type;
  std::size_t best_len = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, mm, root, mount_point, tok, fs_type, source;
    ls >> id >> parent >> mm >> root >> mount_point;
    if (mm != devno || path.rfind(mount_point, 0) != 0 || mount_point.size() < best_len) continue;
    while (ls >> tok && tok != "-") continue;  // the optional fields end at "-"
    ls >> fs_type >> source;
    best_len = mount_point.size();
    best = source;
    type = fs_type;
  }
  std::string model = drive_model(major(st.st_dev), minor(st.st_dev));
  std::string out = best + " (" + (type.empty() ? "?" : type);
  if (!model.empty()) out += ", " + model;
  return out + ")";
}

/// Total RAM in whole GiB, rounded to the nearest.
inline long long ram_gib() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  const double bytes = static_cast<double>(pages) * static_cast<double>(page);
  return std::llround(bytes / double(std::size_t{1} << 30));
}

inline std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// Refuses a scratch directory that is missing, not a directory, or has less than twice
/// `tensor_bytes` free, naming it (and the bytes) in a config_error; io_error when the system
/// cannot say.
inline void check_scratch_dir(const std::string& dir, std::size_t tensor_bytes, const char* who) {
  const std::size_t need = tensor_bytes > SIZE_MAX / 2 ? SIZE_MAX : 2 * tensor_bytes;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT)
      throw config_error(std::string(who) + ": NVMe directory '" + dir + "' does not exist");
    throw io_error(std::string(who) + ": cannot stat NVMe directory '" + dir +
                   "': " + io::errno_text(err));
  }
  if (!S_ISDIR(st.st_mode))
    throw config_error(std::string(who) + ": NVMe directory '" + dir + "' is not a directory");
  struct statvfs sv {};
  if (::statvfs(dir.c_str(), &sv) != 0)
    throw io_error(std::string(who) + ": cannot read the free space of '" + dir +
                   "': " + io::errno_text(errno));
  const auto avail = static_cast<std::size_t>(sv.f_bavail) * static_cast<std::size_t>(sv.f_frsize);
  if (avail < need)
    throw config_error(std::string(who) + ": NVMe directory '" + dir + "' has " +
                       format_bytes(avail) + " free; the measurement needs " + format_bytes(need) +
                       " (two copies of the tensor: the store's copy-on-write keeps the old "
                       "one until the new one commits); lower the size or free space");
}

// ---- calibrate()'s steps -----------------------------------------------------------------------

/// The one check of calibrate()'s arguments, before anything runs (a bad NVMe directory must
/// not be found after minutes of GEMMs).
inline void check_options(const calibrate_options& o, const std::vector<std::array<int, 3>>& shapes,
                          const gemm_probe& host) {
  const auto refuse = [](const std::string& field, const std::string& why) {
    throw config_error("calibrate: calibrate_options::" + field + " " + why);
  };
  if (o.repetitions < 1)
    refuse("repetitions", "is " + std::to_string(o.repetitions) + "; at least 1 timed run");
  if (o.threads < 0) refuse("threads", "is " + std::to_string(o.threads) + "; 0 (all) or more");
  if (o.triad_bytes < 3 * 4096)
    refuse("triad_bytes", "is " + format_bytes(o.triad_bytes) + "; at least 12 KiB (3 pages)");
  if (o.h2d_bytes == 0) refuse("h2d_bytes", "is 0");
  int widest = 1;
  for (int w : o.allgather_worlds) {
    if (w < 1 || w > 1024) refuse("allgather_worlds", "holds " + std::to_string(w) + "; 1 .. 1024");
    widest = std::max(widest, w);
  }
  if (o.allgather_bytes < std::size_t{64} * static_cast<std::size_t>(widest))
    refuse("allgather_bytes", "is " + format_bytes(o.allgather_bytes) +
                                  "; at least 64 bytes per rank of the widest world");
  if (!host) throw config_error("calibrate: no host GEMM probe given (the library has no BLAS)");
  if (shapes.empty()) throw config_error("calibrate: no GEMM shapes given; pass the model's");
  for (const auto& s : shapes)
    if (s[0] < 1 || s[1] < 1 || s[2] < 1)
      throw config_error("calibrate: GEMM shape " + shape_text(s[0], s[1], s[2]) +
                         " has a dimension below 1");
  if (o.nvme_dir.empty()) return;
  if (o.nvme_bytes < 4096)
    refuse("nvme_bytes", "is " + format_bytes(o.nvme_bytes) + "; at least 4 KiB");
  io::validate(o.nvme_engine, "calibrate_options::nvme_engine");
  check_scratch_dir(o.nvme_dir, o.nvme_bytes, "calibrate");
}

struct gemm_mix {
  std::vector<gemm_point> points;
  double flops_per_s = 0;  // total FLOP / total time
};

/// Calls `probe` once per shape; `say` gets a line per shape when `per_shape`.
template <class Say>
gemm_mix run_gemm_probe(const gemm_probe& probe, const std::vector<std::array<int, 3>>& shapes,
                        const char* which, bool per_shape, Say&& say) {
  gemm_mix mix;
  double flop = 0, time = 0;
  for (const auto& s : shapes) {
    const double rate = probe(s[0], s[1], s[2]);
    if (!std::isfinite(rate) || rate <= 0)
      throw config_error(std::string("calibrate: the ") + which + " GEMM probe returned " +
                         std::to_string(rate) + " for " + shape_text(s[0], s[1], s[2]) +
                         "; it must return the measured FLOP/s (> 0)");
    const double f = 2.0 * s[0] * s[1] * static_cast<double>(s[2]);
    flop += f;
    time += f / rate;
    mix.points.push_back({s[0], s[1], s[2], rate});
    if (per_shape) say("gemm " + shape_text(s[0], s[1], s[2]) + ": " + gflops(rate));
  }
  mix.flops_per_s = flop / time;
  return mix;
}

template <class Say>
void calibrate_nvme(calibration& c, const calibrate_options& o, Say&& say) {
  if (o.nvme_dir.empty()) {
    say("nvme: skipped (calibrate_options::nvme_dir is empty)");
    return;
  }
  nvme_measure_info info;
  const auto [r, w] = measure_nvme(o.nvme_dir, o.nvme_bytes, o.repetitions, o.nvme_engine, &info);
  c.nvme_read_bytes_s = r;
  c.nvme_write_bytes_s = w;
  c.nvme_block = info.block;
  c.nvme_depth = info.depth;
  c.nvme_engine = info.engine;
  c.nvme_dir = o.nvme_dir;
  // Smaller tensors, as the walks move them: a quarter of the size at a time, down to 4 MiB.
  for (std::size_t b = std::size_t{4} << 20; b < o.nvme_bytes; b *= 4) {
    const auto [rs, ws] = measure_nvme(o.nvme_dir, b, o.repetitions, o.nvme_engine);
    c.nvme_by_size.push_back({b, rs, ws});
    say("nvme " + format_bytes(b) + ": read " + gbps(rs) + ", write " + gbps(ws));
  }
  say("nvme: read " + gbps(r) + ", write " + gbps(w) + " (nvme_store, " + info.engine +
      " engine, block " + format_bytes(info.block) + ", depth " + std::to_string(info.depth) +
      ", " + format_bytes(o.nvme_bytes) + " in " + o.nvme_dir +
      (info.direct ? "" : "; NOT O_DIRECT: the page cache was measured, not the drive") +
      (info.notice.empty() ? "" : "; " + info.notice) + ")");
}

template <class Say>
void calibrate_allgather(calibration& c, const calibrate_options& o, Say&& say) {
  std::vector<int> worlds = o.allgather_worlds;
  std::sort(worlds.begin(), worlds.end());
  worlds.erase(std::unique(worlds.begin(), worlds.end()), worlds.end());
  for (int w : worlds) {
    const double rate = measure_allgather(w, o.allgather_bytes, o.repetitions);
    c.allgather_bytes_s.emplace_back(w, rate);
    say("allgather world " + std::to_string(w) + ": " + gbps(rate) + " per rank (comm::threads, " +
        format_bytes(o.allgather_bytes) + " gathered)");
  }
}

template <class Say>
void calibrate_gpu(calibration& c, const calibrate_options& o,
                   const std::vector<std::array<int, 3>>& shapes, const gemm_probe& gpu,
                   Say&& say) {
  std::string why;
  const auto [h2d, d2h] = measure_h2d_d2h(o.h2d_bytes, o.repetitions, &why);
  c.h2d_bytes_s = h2d;
  c.d2h_bytes_s = d2h;
  if (h2d > 0)
    say("h2d/d2h: " + gbps(h2d) + " / " + gbps(d2h) + " (pinned, cudaMemcpyAsync, " +
        format_bytes(o.h2d_bytes) + ")");
  else
    say("h2d/d2h: 0 (" + why + ")");
  if (!gpu) {
    say("gpu gemm: 0 (no GPU GEMM probe given)");
    return;
  }
  c.gpu_gemm_flops = run_gemm_probe(gpu, shapes, "GPU", false, say).flops_per_s;
  say("gpu gemm: " + gflops(c.gpu_gemm_flops) + " over " + std::to_string(shapes.size()) +
      " shapes (bf16, caller's probe)");
}

}  // namespace detail::calib

// ---- calibration -----------------------------------------------------------------------------

inline double calibration::gemm_rate(int m, int n, int k) const {
  if (m < 1 || n < 1 || k < 1)
    throw config_error("calibration::gemm_rate: shape " + detail::calib::shape_text(m, n, k) +
                       " has a dimension below 1");
  if (gemm.empty()) {
    if (gemm_flops > 0) return gemm_flops;
    throw config_error("calibration::gemm_rate(" + detail::calib::shape_text(m, n, k) +
                       "): no host GEMM was measured (no shapes, gemm_flops 0); calibrate with "
                       "the model's GEMM shapes");
  }
  // Nearest by shape, not by size: a (64, 3072, 512) product has the FLOPs of (512, 768, 256)
  // and a third of its rate, so the distance is summed over the dimensions' logs.
  auto ld = [](int a, int b) { return std::abs(std::log(double(a)) - std::log(double(b))); };
  const gemm_point* best = nullptr;
  double best_d = 0;
  for (const gemm_point& p : gemm) {
    const double d = ld(p.m, m) + ld(p.n, n) + ld(p.k, k);
    if (!best || d < best_d) best = &p, best_d = d;
  }
  return best->flops_per_s;
}

inline double calibration::allgather_rate(int world) const {
  if (world < 1)
    throw config_error("calibration::allgather_rate: world size " + std::to_string(world) +
                       "; at least 1");
  if (allgather_bytes_s.empty())
    throw config_error("calibration::allgather_rate(" + std::to_string(world) +
                       "): no all-gather was measured (calibrate_options::allgather_worlds)");
  const std::pair<int, double>* best = nullptr;
  for (const auto& p : allgather_bytes_s) {
    if (p.first == world) return p.second;
    const int d = std::abs(p.first - world);
    const int bd = best ? std::abs(best->first - world) : INT_MAX;
    if (d < bd || (d == bd && p.first > best->first)) best = &p;
  }
  return best->second;
}

// ---- fingerprint -----------------------------------------------------------------------------

inline std::string machine_description() {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return detail::calib::cpu_model() + ", " + std::to_string(cores) + " logical cores, " +
         detail::calib::simd_name() + detail::calib::gpu_description();
}

inline std::string hardware_fingerprint(const std::string& nvme_dir) {
  return machine_description() + "; nvme: " + detail::calib::directory_device(nvme_dir) + "; RAM " +
         std::to_string(detail::calib::ram_gib()) + " GiB";
}

inline bool is_stale(const calibration& c, const std::string& nvme_dir) {
  return c.fingerprint.empty() || c.fingerprint != hardware_fingerprint(nvme_dir);
}

// ---- measurements ----------------------------------------------------------------------------

inline double measure_triad(std::size_t bytes, int threads, int repetitions) {
  detail::calib::check_repetitions(repetitions, "measure_triad");
  if (threads < 1)
    throw config_error("measure_triad: threads is " + std::to_string(threads) + "; at least 1");
  constexpr std::size_t page = 4096 / sizeof(double);  // chunk boundaries: whole pages
  const std::size_t n = bytes / 3 / sizeof(double) / page * page;
  if (n == 0)
    throw config_error("measure_triad: " + format_bytes(bytes) +
                       " is too small for three arrays of a page each (12 KiB)");
  aligned_host_resource host;
  const std::size_t array_bytes = n * sizeof(double);
  buffer ba(host, array_bytes, 4096, "triad a"), bb(host, array_bytes, 4096, "triad b"),
      bc(host, array_bytes, 4096, "triad c");
  auto* a = static_cast<double*>(ba.data());
  auto* b = static_cast<double*>(bb.data());
  auto* c = static_cast<double*>(bc.data());
  thread_pool pool(static_cast<unsigned>(threads));
  const parallel_for_options split{static_cast<std::size_t>(threads), page};
  // The same split first-touches each thread's part (its pages land on its NUMA node) and
  // then times it.
  pool.parallel_for(n, page, split, [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) a[i] = 0.0, b[i] = 1.0, c[i] = 2.0;
  });
  const double t = detail::calib::median_seconds(repetitions, [&] {
    pool.parallel_for(n, page, split, [&](std::size_t i0, std::size_t i1) {
      detail::calib::triad(a, b, c, 3.0, i0, i1);
    });
  });
  detail::calib::keep(a + n / 2);
  return 3.0 * static_cast<double>(n * sizeof(double)) / t;
}

inline double measure_copy(std::size_t bytes, int repetitions) {
  detail::calib::check_repetitions(repetitions, "measure_copy");
  if (bytes == 0) throw config_error("measure_copy: 0 bytes to copy");
  aligned_host_resource host;
  buffer src(host, bytes, 4096, "copy source"), dst(host, bytes, 4096, "copy destination");
  std::memset(src.data(), 0x5a, bytes);  // commit the pages of both sides
  std::memset(dst.data(), 0, bytes);
  const double t = detail::calib::median_seconds(repetitions, [&] {
    std::memcpy(dst.data(), src.data(), bytes);
    detail::calib::keep(static_cast<const char*>(dst.data()) + bytes - 1);
  });
  return 2.0 * static_cast<double>(bytes) / t;
}

inline std::pair<double, double> measure_nvme(const std::string& dir, std::size_t bytes,
                                              int repetitions, const io::engine_config& engine,
                                              nvme_measure_info* info) {
  detail::calib::check_repetitions(repetitions, "measure_nvme");
  if (bytes == 0) throw config_error("measure_nvme: 0 bytes to measure in '" + dir + "'");
  detail::calib::check_scratch_dir(dir, bytes, "measure_nvme");
  aligned_host_resource host;
  io::nvme_config nc;
  nc.directory = dir;
  nc.engine = engine;
  // After `host` (its bounce buffers come from there), before the data buffers.
  io::nvme_store store(nc, host);
  buffer src(host, bytes, 4096, "nvme source"), dst(host, bytes, 4096, "nvme destination");
  detail::calib::fill_pattern(src.data(), bytes, 1);
  std::memset(dst.data(), 0, bytes);
  const io::nvme_store::handle h = store.create(bytes, "calibration");
  // The store's copy-on-write alternates between two extents: write both once, untimed, so
  // every timed write overwrites allocated blocks (like fio's second pass over its file).
  store.write(h, src.data(), bytes);
  const double w =
      detail::calib::median_seconds(repetitions, [&] { store.write(h, src.data(), bytes); });
  const double r =
      detail::calib::median_seconds(repetitions, [&] { store.read(h, 0, dst.data(), bytes); });
  if (std::memcmp(src.data(), dst.data(), bytes) != 0)
    throw io_error("measure_nvme: the " + format_bytes(bytes) + " read back from '" + store.path() +
                   "' differ from the bytes written");
  if (info) {
    info->engine = store.io().name();
    info->block = engine.block_bytes;
    info->depth = static_cast<int>(engine.queue_depth);
    info->direct = store.direct();
    info->notice = store.notice();
  }
  store.destroy(h);
  return {static_cast<double>(bytes) / r, static_cast<double>(bytes) / w};
}

inline double measure_allgather(int world, std::size_t bytes, int repetitions) {
  detail::calib::check_repetitions(repetitions, "measure_allgather");
  if (world < 1)
    throw config_error("measure_allgather: world size " + std::to_string(world) + "; at least 1");
  const auto ranks = static_cast<std::size_t>(world);
  const std::size_t shard = std::max<std::size_t>(64, bytes / ranks / 64 * 64);
  aligned_host_resource host;
  std::vector<buffer> send, recv;
  for (std::size_t r = 0; r < ranks; ++r) {
    send.emplace_back(host, shard, 64, "allgather send");
    recv.emplace_back(host, shard * ranks, 64, "allgather receive");
    std::memset(send.back().data(), static_cast<int>(0x10 + r), shard);
    std::memset(recv.back().data(), 0, shard * ranks);
  }
  comm::thread_world w(world, std::chrono::minutes(5));
  double t = 0;  // written by rank 0 only, read after run() has joined every rank
  w.run([&](comm::threads& c) {
    const auto r = static_cast<std::size_t>(c.rank());
    // Barrier, then the gather and a barrier timed: it ends when every rank holds it all.
    const auto gather = [&] {
      c.all_gather(send[r].data(), recv[r].data(), shard).wait();
      c.barrier().wait();
    };
    const auto timed = [&] {
      c.barrier().wait();
      if (r == 0) return detail::calib::seconds(gather);
      gather();
      return 0.0;
    };
    timed();  // untimed: the first collective of a world sets up its slots
    std::vector<double> times;
    for (int i = 0; i < repetitions; ++i) times.push_back(timed());
    if (r == 0) t = std::max(detail::calib::median(std::move(times)), 1e-9);
  });
  return static_cast<double>(shard * ranks) / t;
}

inline std::pair<double, double> measure_h2d_d2h(std::size_t bytes, int repetitions,
                                                 std::string* why) {
  detail::calib::check_repetitions(repetitions, "measure_h2d_d2h");
  if (bytes == 0) throw config_error("measure_h2d_d2h: 0 bytes to copy");
#if STRATA_ENABLE_CUDA
  if (const cuda_discovery d = cuda_discover(); d.devices == 0) {
    if (why) *why = "no GPU: " + d.why_none();
    return {0.0, 0.0};
  }
  pinned_resource pinned;
  cuda_device_resource device(0);
  buffer hbuf(pinned, bytes, 4096, "h2d/d2h host"), dbuf(device, bytes, 256, "h2d/d2h device");
  std::memset(hbuf.data(), 0x5a, bytes);
  struct stream_guard {
    cudaStream_t s = nullptr;
    ~stream_guard() {
      if (s) cudaStreamDestroy(s);
    }
  } st;
  check_cuda(cudaStreamCreateWithFlags(&st.s, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cuda(cudaMemsetAsync(dbuf.data(), 0, bytes, st.s), "cudaMemsetAsync");
  const auto copy = [&](cudaMemcpyKind kind) {
    void* to = kind == cudaMemcpyHostToDevice ? dbuf.data() : hbuf.data();
    const void* from = kind == cudaMemcpyHostToDevice ? hbuf.data() : dbuf.data();
    check_cuda(cudaMemcpyAsync(to, from, bytes, kind, st.s), "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(st.s), "cudaStreamSynchronize");
  };
  const double h2d =
      detail::calib::median_seconds(repetitions, [&] { copy(cudaMemcpyHostToDevice); });
  const double d2h =
      detail::calib::median_seconds(repetitions, [&] { copy(cudaMemcpyDeviceToHost); });
  if (why) why->clear();
  return {static_cast<double>(bytes) / h2d, static_cast<double>(bytes) / d2h};
#else
  if (why) *why = "host build: STRATA_ENABLE_CUDA is 0, no GPU to measure";
  return {0.0, 0.0};
#endif
}

// ---- calibrate -------------------------------------------------------------------------------

inline calibration calibrate(const calibrate_options& o,
                             const std::vector<std::array<int, 3>>& shapes,
                             const gemm_probe& host_gemm, const gemm_probe& gpu_gemm) {
  detail::calib::check_options(o, shapes, host_gemm);
  const auto say = [&](const std::string& line) {
    if (o.progress) o.progress(line);
  };
  calibration c;
  c.machine = machine_description();
  c.fingerprint = hardware_fingerprint(o.nvme_dir);
  c.measured_at = detail::calib::utc_now();
  c.threads = o.threads > 0 ? o.threads
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  detail::calib::gemm_mix host =
      detail::calib::run_gemm_probe(host_gemm, shapes, "host", true, say);
  c.gemm = std::move(host.points);
  c.gemm_flops = host.flops_per_s;
  say("gemm mix: " + detail::calib::gflops(c.gemm_flops) + " over " +
      std::to_string(shapes.size()) + " shapes (total FLOP / total time)");

  c.triad_bytes_s = measure_triad(o.triad_bytes, c.threads, o.repetitions);
  say("triad: " + detail::calib::gbps(c.triad_bytes_s) + " on " + std::to_string(c.threads) +
      " threads (" + format_bytes(o.triad_bytes) + " in 3 arrays)");
  const std::size_t copy_bytes = std::max<std::size_t>(4096, o.triad_bytes / 3 / 4096 * 4096);
  c.copy_bytes_s = measure_copy(copy_bytes, o.repetitions);
  say("copy: " + detail::calib::gbps(c.copy_bytes_s) + " (memcpy on one thread, " +
      format_bytes(copy_bytes) + " each way, both sides counted)");

  detail::calib::calibrate_nvme(c, o, say);
  detail::calib::calibrate_allgather(c, o, say);
  detail::calib::calibrate_gpu(c, o, shapes, gpu_gemm, say);
  for (const auto& [name, probe] : o.kernels) {
    const double rate = probe();
    if (!std::isfinite(rate) || rate <= 0)
      throw config_error("plan::calibrate: the probe of kernel '" + name + "' returned " +
                         std::to_string(rate) + "; a rate is > 0");
    c.kernels[name] = rate;
    char line[160];
    std::snprintf(line, sizeof line, "kernel %s: %.4g", name.c_str(), rate);
    say(line);
  }
  return c;
}

inline double calibration::nvme_rate(std::size_t bytes, bool write) const {
  const double large = write ? nvme_write_bytes_s : nvme_read_bytes_s;
  if (nvme_by_size.empty() || bytes == 0) return large;
  std::vector<std::pair<double, double>> pts;  // (log bytes, rate), by size
  for (const nvme_point& p : nvme_by_size)
    pts.push_back({std::log(double(p.bytes)), write ? p.write_bytes_s : p.read_bytes_s});
  const double x = std::log(double(bytes));
  if (x <= pts.front().first) return pts.front().second;
  for (std::size_t i = 1; i < pts.size(); ++i)
    if (x <= pts[i].first) {
      const double f = (x - pts[i - 1].first) / (pts[i].first - pts[i - 1].first);
      return pts[i - 1].second + f * (pts[i].second - pts[i - 1].second);
    }
  // Beyond the last small size: towards the large measurement's rate (its size is not kept:
  // the rate of the largest small size holds up to 4x it, then the large one).
  return x <= pts.back().first + std::log(4.0) ? pts.back().second : large;
}

inline double calibration::kernel(const std::string& name) const {
  const auto it = kernels.find(name);
  if (it == kernels.end())
    throw config_error("calibration::kernel('" + name + "'): not measured (" +
                       std::to_string(kernels.size()) + " kernels in this calibration); "
                       "calibrate with the model's probes (strata-plan calibrate)");
  return it->second;
}

}  // namespace plan
STRATA_NAMESPACE_END
